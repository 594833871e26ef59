"""A small strict JSON loader for the documents the signature layer reads.

The signature layer parses two kinds of JSON: the ``sha256-<hex>.sig``
manifest (untrusted, before any signature is checked) and the simple-signing
payload (only after its signature verified). Python's :mod:`json` is lenient
where a verifier must not be (THREATS G-04): a repeated name keeps the last
value, so ``docker-manifest-digest`` given twice would be read as whichever
came last; ``NaN`` and ``Infinity`` are accepted; a huge integer literal burns
CPU; a lone surrogate ``"\\ud800"`` is an unpaired code point to Python and
U+FFFD to Go. :func:`loads_strict` refuses all of these with :class:`StrictJsonError`,
and no other exception escapes it for any input.

cosign and the runtimes decode these documents with Go's ``encoding/json``,
which matches keys to fields case-insensitively (last match wins):
:func:`key_case_problem` says when a document holds a key that Go reads as a
known field although it is not spelled as that field.

The signature service has its own loader on purpose: a check never imports
another check's modules (STYLE.md, habit 8).
"""

from __future__ import annotations

import json
from typing import Any

from pullguard.services.runtime.gojson import GoStruct, has_lone_surrogate, key_collisions

#: Longest integer literal accepted: int64 has 19 digits, plus a sign.
MAX_INT_CHARS = 20
#: Longest float literal accepted.
MAX_FLOAT_CHARS = 64

_UTF8_BOM = b"\xef\xbb\xbf"


class StrictJsonError(ValueError):
    """The document is not strict JSON; the message says why."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJsonError(f"duplicate key {key[:100]!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise StrictJsonError(f"non-finite number {name} is not JSON")


def _parse_int(text: str) -> int:
    # Checked before int() so a 100 000-digit literal costs nothing.
    if len(text) > MAX_INT_CHARS:
        raise StrictJsonError(f"integer of {len(text)} characters is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise StrictJsonError(f"number of {len(text)} characters is out of range")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictJsonError(f"number {text[:40]} overflows a double")
    return value


def loads_strict(data: bytes) -> Any:
    """Parse UTF-8 ``data`` as JSON with unique object keys, or raise StrictJsonError.

    The caller bounds ``len(data)`` before calling: this function reads all of it.
    """
    if data.startswith(_UTF8_BOM):
        raise StrictJsonError("document starts with a UTF-8 byte order mark")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise StrictJsonError(f"not UTF-8: invalid byte at offset {exc.start}") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except StrictJsonError:
        raise
    except RecursionError:
        # json's C scanner raises this on deep nesting; a hostile manifest
        # must end as a finding, never as an internal error.
        raise StrictJsonError("nesting too deep") from None
    except ValueError as exc:  # JSONDecodeError and int-conversion limits
        raise StrictJsonError(f"not JSON: {exc}") from None
    if has_lone_surrogate(value):
        raise StrictJsonError("string contains a lone surrogate")
    return value


def key_case_problem(document: Any, struct: GoStruct, where: str = "") -> str | None:
    """Why a Go client would read ``document`` (shaped as ``struct``) otherwise
    than pullguard does, or ``None`` when no key folds onto a field."""
    collisions = key_collisions(document, struct, where)
    if not collisions:
        return None
    more = f" (and {len(collisions) - 1} more)" if len(collisions) > 1 else ""
    return f"{collisions[0].describe()}, not to pullguard{more}"
