"""Strict JSON for every document the format layer reads, with format's finding codes.

The loader is the runtime's (:mod:`pullguard.services.runtime.strictjson`,
THREATS F-03, F-04): here its errors become :class:`StrictJsonError` whose
``code`` is a finding code (``format.invalid_json``, ``format.duplicate_key``,
``format.too_deep``, ``format.too_large``), so callers never see any other
exception from a hostile document.

Go's ``encoding/json`` (containerd, docker, CRI-O) matches object keys to
struct fields case-insensitively, last match winning: :func:`key_case_findings`
refuses keys that a Go client would read as a known field without being
spelled as it (``format.json_key_case_collision``, see
:mod:`pullguard.services.runtime.gojson`).

The loader keeps Python's types as they are: ``1000.0`` stays a float and
``true`` stays a bool. Callers decide which type a field needs with
:func:`is_int` / :func:`is_size`, never by coercion.
"""

from __future__ import annotations

from typing import Any

from pullguard.services.runtime import strictjson
from pullguard.services.runtime.findings import Finding
from pullguard.services.runtime.gojson import GoStruct, key_collisions
from pullguard.services.runtime.strictjson import MAX_DEPTH, StrictJsonError, nesting_depth

__all__ = ["MAX_DEPTH", "MAX_SIZE", "StrictJsonError", "loads_strict", "nesting_depth"]

#: Largest descriptor size: the largest integer every I-JSON peer reads exactly.
MAX_SIZE = 2**53


def loads_strict(data: bytes, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as I-JSON (RFC 7493) or raise :class:`StrictJsonError`.

    ``limit`` is the largest document in bytes (``format.too_large`` above it);
    callers read at most ``limit + 1`` bytes so that this check is exact.
    """
    try:
        return strictjson.loads_strict(data, limit, max_depth)
    except strictjson.StrictJsonError as exc:
        raise StrictJsonError(f"format.{exc.code}", exc.message) from None


def is_int(value: Any) -> bool:
    """True for a JSON integer: not a bool, not a float that equals an int."""
    return type(value) is int


def is_size(value: Any) -> bool:
    """True for a descriptor size: an integer in [0, 2^53]."""
    return is_int(value) and 0 <= value <= MAX_SIZE


def key_case_findings(document: Any, struct: GoStruct, where: str = "") -> list[Finding]:
    """One ``format.json_key_case_collision`` error per key that a Go client
    reads as a field of ``struct`` (or of a struct nested in it) although it
    is not spelled as that field."""
    return [
        Finding.error(
            "format.json_key_case_collision",
            f"{collision.describe()}, not to pullguard",
            key=collision.key,
            field=collision.field,
            where=collision.where,
        )
        for collision in key_collisions(document, struct, where)
    ]
