"""The one strict JSON loader for every untrusted document a layer reads.

Python's :mod:`json` is lenient in ways an attacker can use (THREATS F-03,
F-04, G-04): repeated names keep the last value, ``NaN``/``Infinity`` are
accepted, deep nesting ends in ``RecursionError``, a 5 000-digit integer burns
CPU or raises ``ValueError``, and a lone surrogate ``"\\ud800"`` is an
unpaired code point to Python but U+FFFD to Go. :func:`loads_strict` closes
each of these and turns every problem into a :class:`StrictJsonError`, so
callers never see any other exception from a hostile document.

The error carries a short ``code`` (:data:`INVALID_JSON`, :data:`DUPLICATE_KEY`,
:data:`TOO_DEEP`, :data:`TOO_LARGE`) and a ``message``; each layer maps the
code to its own finding code (the format layer to ``format.<code>``, the
signature layer to ``signature.invalid``).

The loader keeps Python's types as they are: ``1000.0`` stays a float and
``true`` stays a bool.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pullguard.services.runtime.gojson import has_lone_surrogate

#: Deepest nesting of arrays and objects accepted when a depth is asked for.
MAX_DEPTH = 64
#: Longest integer literal accepted (int64 has 19 digits, plus a sign).
MAX_INT_CHARS = 20
#: Longest float literal accepted.
MAX_FLOAT_CHARS = 64

INVALID_JSON = "invalid_json"
DUPLICATE_KEY = "duplicate_key"
TOO_DEEP = "too_deep"
TOO_LARGE = "too_large"

_UTF8_BOM = b"\xef\xbb\xbf"
# A JSON string token (unrolled so long strings match without backtracking),
# a bracket, or a lone quote that opens an unterminated string.
_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"|[\[\]{}]|"')


class StrictJsonError(ValueError):
    """A document the strict loader refuses: ``code`` says what kind, ``message`` why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _reject_constant(name: str) -> Any:
    raise StrictJsonError(INVALID_JSON, f"non-finite number {name} is not JSON")


def _parse_int(text: str) -> int:
    # Checked before int() so a huge literal costs nothing (CVE-2020-10735).
    if len(text) > MAX_INT_CHARS:
        raise StrictJsonError(INVALID_JSON, f"integer of {len(text)} characters is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise StrictJsonError(INVALID_JSON, f"number of {len(text)} characters is out of range")
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(INVALID_JSON, f"number {text[:40]} overflows a double")
    return value


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a repeated name (:data:`DUPLICATE_KEY`)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJsonError(DUPLICATE_KEY, f"duplicate key {key[:100]!r}")
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


def loads_strict(data: bytes, limit: int | None = None, max_depth: int | None = None) -> Any:
    """Parse ``data`` as I-JSON (RFC 7493) or raise :class:`StrictJsonError`.

    ``limit`` is the largest document in bytes (:data:`TOO_LARGE` above it;
    callers read at most ``limit + 1`` bytes so that this check is exact);
    without it the caller bounds ``len(data)``. ``max_depth`` refuses deeper
    nesting before parsing (:data:`TOO_DEEP`); without it, only nesting too
    deep for the parser is refused.
    """
    if limit is not None and len(data) > limit:
        raise StrictJsonError(TOO_LARGE, f"got more than {limit} bytes, limit {limit}")
    if data.startswith(_UTF8_BOM):
        raise StrictJsonError(INVALID_JSON, "document starts with a UTF-8 byte order mark")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise StrictJsonError(
            INVALID_JSON, f"not UTF-8: invalid byte at offset {exc.start}"
        ) from None
    if max_depth is not None and nesting_depth(text, max_depth) > max_depth:
        raise StrictJsonError(TOO_DEEP, f"nesting deeper than {max_depth} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=unique_object,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except StrictJsonError:
        raise
    except RecursionError:
        # json's C scanner raises this on deep nesting; a hostile document
        # must end as a finding, never as an internal error.
        raise StrictJsonError(TOO_DEEP, "nesting too deep") from None
    except ValueError as exc:  # JSONDecodeError and int-conversion limits
        raise StrictJsonError(INVALID_JSON, f"not JSON: {exc}") from None
    if has_lone_surrogate(value):
        raise StrictJsonError(INVALID_JSON, "string contains a lone surrogate")
    return value
