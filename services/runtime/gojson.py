"""Where Go's ``encoding/json`` reads a document differently from Python's.

containerd, docker, CRI-O, distribution and cosign decode manifests, configs
and signature payloads with Go's ``encoding/json``. When it fills a struct it
matches each object key to a field name case-insensitively, and when several
keys match one field the last one wins. Python reads ``obj["layers"]``
exactly. So ``{"layers": [A], "Layers": [B]}`` is layer A to pullguard and
layer B to the runtime, and ``{"URLs": [...]}`` is no URL to pullguard and a
foreign-layer URL to containerd. The strict loaders already refuse exact
duplicates, NaN, huge integers, BOMs, invalid UTF-8 and lone surrogates (on
which Go substitutes U+FFFD); this module adds what they cannot see alone:

- :func:`go_fold` is Go's key folding. For a field name in ASCII, a key
  matches when it equals the name ignoring ASCII case, where the Kelvin sign
  K (U+212A) also counts as ``k`` and the long s ſ (U+017F) as ``s``: they
  are the only non-ASCII runes whose simple case folding reaches ASCII
  (checked against Go's decoder itself, for every rune; see the unit test).
- :class:`GoStruct` is the shape a Go client decodes into: its JSON field
  names (``json`` tags of the image-spec, docker, cosign, DSSE and in-toto Go
  structs) and which fields hold nested structs.
- :func:`key_collisions` walks a parsed document along a :class:`GoStruct`
  and lists every key that a Go client would read as a known field although
  it is not spelled as that field. Map-valued fields (annotations, labels,
  digest sets) are maps in Go too, compared exactly, and are not walked.

The walk is iterative and visits each object of the document at most once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

#: ASCII letters lowered, plus the two non-ASCII runes Go folds into ASCII.
_FOLD_TABLE = {
    **{code: code + 32 for code in range(ord("A"), ord("Z") + 1)},
    0x212A: ord("k"),  # KELVIN SIGN
    0x017F: ord("s"),  # LATIN SMALL LETTER LONG S
}
#: Collisions listed per document; one is enough to refuse it.
MAX_COLLISIONS = 16

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def go_fold(name: str) -> str:
    """``name`` folded as Go's ``encoding/json`` folds it for an ASCII field name.

    Two keys match the same ASCII field exactly when their folds are equal.
    Other non-ASCII characters are kept, so they never equal an ASCII fold.
    """
    return name.translate(_FOLD_TABLE)


@dataclass(frozen=True)
class GoStruct:
    """The JSON field names of one Go struct, and the structs nested in it."""

    name: str
    fields: frozenset[str]
    #: Field -> struct of its object value.
    objects: Mapping[str, GoStruct] = field(default_factory=dict)
    #: Field -> struct of each element of its array value.
    lists: Mapping[str, GoStruct] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nested = set(self.objects) | set(self.lists)
        if not nested <= self.fields or not all(name.isascii() for name in self.fields):
            raise ValueError(f"{self.name}: nested fields must be known ASCII fields")
        if len({go_fold(name) for name in self.fields}) != len(self.fields):
            raise ValueError(f"{self.name}: two fields fold to one name")

    @cached_property
    def _by_fold(self) -> dict[str, str]:
        return {go_fold(name): name for name in self.fields}

    def field_for(self, key: str) -> str | None:
        """The field a Go client stores ``key`` in, or ``None``."""
        return self._by_fold.get(go_fold(key))


@dataclass(frozen=True)
class Collision:
    """A key that a Go client reads as ``field`` although it is spelled ``key``."""

    where: str
    key: str
    field: str

    def describe(self) -> str:
        place = self.where or "top level"
        return f"{place}: key {self.key[:60]!r} is {self.field!r} to a Go client"


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def key_collisions(document: Any, struct: GoStruct, where: str = "") -> list[Collision]:
    """Keys of ``document`` (at most :data:`MAX_COLLISIONS`) that fold onto a
    field of ``struct`` or of a nested struct without being spelled as it."""
    found: list[Collision] = []
    stack: list[tuple[Any, GoStruct, str]] = [(document, struct, where)]
    while stack and len(found) < MAX_COLLISIONS:
        value, shape, place = stack.pop()
        if not isinstance(value, dict):
            continue
        for key in value:
            if key in shape.fields:
                continue
            known = shape.field_for(key)
            if known is not None:
                found.append(Collision(place, key, known))
        for name, child in shape.objects.items():
            stack.append((value.get(name), child, _join(place, name)))
        for name, child in shape.lists.items():
            items = value.get(name)
            if isinstance(items, list):
                stack.extend(
                    (item, child, f"{_join(place, name)}[{i}]") for i, item in enumerate(items)
                )
    return found[:MAX_COLLISIONS]


def has_lone_surrogate(value: Any) -> bool:
    """True when a string anywhere in ``value`` (keys too) holds a lone surrogate.

    Python's json turns ``"\\ud800"`` into an unpaired surrogate; Go reads
    U+FFFD. The walk is iterative; callers bound the document's size.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
