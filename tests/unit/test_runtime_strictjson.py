"""The one strict JSON loader: each refusal has a code that a layer maps to its finding."""

from __future__ import annotations

import pytest

from pullguard.services.format import jsonstrict
from pullguard.services.runtime.strictjson import StrictJsonError, loads_strict


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b"[NaN]", "invalid_json"),
        (b"[" + b"1" * 21 + b"]", "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
        (b'"\\ud800"', "invalid_json"),
        (b"[" * 65 + b"]" * 65, "too_deep"),
        (b" " * 201, "too_large"),
    ],
)
def test_each_refusal_carries_its_code(data: bytes, code: str) -> None:
    with pytest.raises(StrictJsonError) as caught:
        loads_strict(data, limit=200, max_depth=64)
    assert caught.value.code == code
    with pytest.raises(jsonstrict.StrictJsonError) as mapped:
        jsonstrict.loads_strict(data, 200)
    assert (mapped.value.code, mapped.value.message) == (f"format.{code}", caught.value.message)


def test_without_limits_only_what_the_parser_cannot_take_is_refused() -> None:
    assert isinstance(loads_strict(b"[" * 65 + b"]" * 65), list)
    assert loads_strict(b" " * 101 + b"{}") == {}
