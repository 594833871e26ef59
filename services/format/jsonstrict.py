"""The one strict JSON loader for every document the format layer reads.

Python's :mod:`json` is lenient in ways an attacker can use (THREATS F-03,
F-04): repeated names keep the last value, ``NaN``/``Infinity`` are accepted,
deep nesting ends in ``RecursionError`` and a 5 000-digit integer burns CPU or
raises ``ValueError``. :func:`loads_strict` closes each of these and turns
every problem into a :class:`StrictJsonError` with a stable finding code, so
callers never see any other exception from a hostile document.

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

import json
import math
import re
from typing import Any

from pullguard.services.runtime.findings import Finding
from pullguard.services.runtime.gojson import GoStruct, has_lone_surrogate, key_collisions

#: Deepest nesting of arrays and objects accepted. OCI documents need about 5.
MAX_DEPTH = 64
#: Longest integer literal accepted (int64 has 19 digits, plus a sign).
MAX_INT_CHARS = 20
#: Largest descriptor size: the largest integer every I-JSON peer reads exactly.
MAX_SIZE = 2**53

_UTF8_BOM = b"\xef\xbb\xbf"
# A JSON string token (unrolled so long strings match without backtracking),
# a bracket, or a lone quote that opens an unterminated string.
_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"|[\[\]{}]|"')


class StrictJsonError(ValueError):
    """A document that the strict loader refuses; ``code`` is a finding code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _reject_constant(name: str) -> Any:
    raise StrictJsonError("format.invalid_json", f"non-finite number {name} is not JSON")


def _parse_int(text: str) -> int:
    # Checked before int() so a huge literal costs nothing (CVE-2020-10735).
    if len(text) > MAX_INT_CHARS:
        raise StrictJsonError(
            "format.invalid_json", f"integer of {len(text)} characters is out of range"
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise StrictJsonError("format.invalid_json", f"number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError("format.invalid_json", f"number {text[:40]} overflows a double")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJsonError("format.duplicate_key", f"duplicate key {key[:100]!r}")
        result[key] = value
    return result


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Bracket depth of ``text`` outside strings; stops counting past ``limit``.

    Strings are skipped exactly as JSON lexes them. After an unterminated
    string the count may be too high, never too low, and the parser refuses
    such a document anyway.
    """
    depth = deepest = 0
    for match in _TOKEN_RE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def loads_strict(data: bytes, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as I-JSON (RFC 7493) or raise :class:`StrictJsonError`.

    ``limit`` is the largest document in bytes (``format.too_large`` above it);
    callers read at most ``limit + 1`` bytes so that this check is exact.
    """
    if len(data) > limit:
        raise StrictJsonError("format.too_large", f"got more than {limit} bytes, limit {limit}")
    if data.startswith(_UTF8_BOM):
        raise StrictJsonError("format.invalid_json", "document starts with a UTF-8 byte order mark")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise StrictJsonError(
            "format.invalid_json", f"not UTF-8: invalid byte at offset {exc.start}"
        ) from None
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        raise StrictJsonError("format.too_deep", f"nesting deeper than {max_depth} levels")
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
        # Unreachable after the depth scan; kept so a hostile document can
        # never surface as an internal error.
        raise StrictJsonError("format.too_deep", "nesting too deep") from None
    except ValueError as exc:  # JSONDecodeError and int-conversion limits
        raise StrictJsonError("format.invalid_json", f"not JSON: {exc}") from None
    if has_lone_surrogate(value):
        raise StrictJsonError("format.invalid_json", "string contains a lone surrogate")
    return value


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
