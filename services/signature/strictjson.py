"""Strict JSON for the documents the signature layer reads.

The signature layer parses the ``sha256-<hex>.sig`` manifest (untrusted,
before any signature is checked), the simple-signing payload (only after its
signature verified), bundles, DSSE envelopes, Rekor entries and trusted roots.
Python's :mod:`json` is lenient where a verifier must not be (THREATS G-04): a
repeated name keeps the last value, so ``docker-manifest-digest`` given twice
would be read as whichever came last. The runtime's loader
(:mod:`pullguard.services.runtime.strictjson`) refuses that and every other
hazard with :class:`StrictJsonError`; this layer reports its message (under
``signature.invalid`` and the like), not its code.

cosign and the runtimes decode these documents with Go's ``encoding/json``,
which matches keys to fields case-insensitively (last match wins):
:func:`key_case_problem` says when a document holds a key that Go reads as a
known field although it is not spelled as that field.
"""

from __future__ import annotations

from typing import Any

from pullguard.services.runtime import strictjson
from pullguard.services.runtime.gojson import GoStruct, key_collisions
from pullguard.services.runtime.strictjson import StrictJsonError

__all__ = ["StrictJsonError", "key_case_problem", "loads_strict"]


def loads_strict(data: bytes) -> Any:
    """Parse UTF-8 ``data`` as JSON with unique object keys, or raise StrictJsonError.

    The caller bounds ``len(data)`` before calling: this function reads all of it.
    """
    return strictjson.loads_strict(data)


def key_case_problem(document: Any, struct: GoStruct, where: str = "") -> str | None:
    """Why a Go client would read ``document`` (shaped as ``struct``) otherwise
    than pullguard does, or ``None`` when no key folds onto a field."""
    collisions = key_collisions(document, struct, where)
    if not collisions:
        return None
    more = f" (and {len(collisions) - 1} more)" if len(collisions) > 1 else ""
    return f"{collisions[0].describe()}, not to pullguard{more}"
