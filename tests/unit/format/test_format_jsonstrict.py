"""The strict JSON loader: THREATS F-03 (duplicate keys) and F-04 (Python parsing hazards)."""

from __future__ import annotations

import pytest

from pullguard.services.format.jsonstrict import (
    MAX_DEPTH,
    StrictJsonError,
    is_int,
    is_size,
    loads_strict,
    nesting_depth,
)

LIMIT = 4 * 1024 * 1024


def code_of(data: bytes, limit: int = LIMIT) -> str:
    with pytest.raises(StrictJsonError) as caught:
        loads_strict(data, limit)
    return caught.value.code


def test_plain_document_loads() -> None:
    assert loads_strict(b' {"a": [1, 2.5, "x", true, null]} ', LIMIT) == {
        "a": [1, 2.5, "x", True, None]
    }


@pytest.mark.parametrize(
    "data",
    [
        b'{"layers":[1],"layers":[2]}',
        b'{"config":{"digest":"sha256:a","size":1,"digest":"sha256:b"}}',
        b'{"mediaType":"m","x":{},"mediaType":"i"}',
        b'[{"User":"1000","User":"0"}]',
    ],
)
def test_f03_duplicate_keys(data: bytes) -> None:
    assert code_of(data) == "format.duplicate_key"


@pytest.mark.parametrize(
    "data",
    [
        b'{"size": NaN}',
        b'{"size": Infinity}',
        b'{"size": -Infinity}',
        b'{"size": 1e999}',
        b'{"size": ' + b"9" * 5000 + b"}",
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b'["x", "\\ud800\\u0041"]',
        b'{"a": "\xff"}',
        b"\xef\xbb\xbf{}",
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-16-le"),
        b'{"a": "tab\there"}',
        b'{"a": 1,}',
        b"",
        b'{"a": "unterminated',
    ],
)
def test_f04_invalid_json(data: bytes) -> None:
    assert code_of(data) == "format.invalid_json"


def test_f04_surrogate_pair_is_fine() -> None:
    assert loads_strict(b'"\\ud83d\\ude00"', LIMIT) == "\U0001f600"


def test_f04_floats_and_bools_stay_what_they_are() -> None:
    value = loads_strict(b'{"a": 1000.0, "b": 1e3, "c": true, "d": 1000}', LIMIT)
    assert [type(value[k]) for k in "abcd"] == [float, float, bool, int]
    assert not is_int(value["a"]) and not is_int(value["b"]) and not is_int(value["c"])
    assert is_int(value["d"])


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (2**53, True), (2**53 + 1, False), (-1, False), (True, False), (1.0, False)],
)
def test_f04_size_type(value: object, ok: bool) -> None:
    assert is_size(value) is ok


def test_f04_deep_nesting_is_refused_without_recursion() -> None:
    assert code_of(b"[" * 100_000 + b"]" * 100_000) == "format.too_deep"
    assert code_of(b'{"a":' * 100_000 + b"1" + b"}" * 100_000) == "format.too_deep"


def test_f04_depth_limit_boundary() -> None:
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert loads_strict(at_limit, LIMIT) is not None
    over = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert code_of(over) == "format.too_deep"


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"a": "[[[[{{{{\\"[[[[", "b": ["]"]}'
    assert nesting_depth(text) == 2
    assert loads_strict(('["' + "[" * 1000 + '"]').encode(), LIMIT) == ["[" * 1000]


def test_f11_size_limit_is_exact() -> None:
    body = b'{"a":"' + b"x" * 94 + b'"}'
    assert len(body) == 102
    assert loads_strict(body, 102) == {"a": "x" * 94}
    assert code_of(body, 101) == "format.too_large"
