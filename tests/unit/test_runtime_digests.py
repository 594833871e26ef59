"""Digest helpers live once, in services/runtime/digests.py."""

from __future__ import annotations

import hashlib

import pytest

from pullguard.services.runtime.digests import DigestSyntaxError, computed_digest


def test_computed_digest_uses_the_digest_s_algorithm() -> None:
    sha512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert computed_digest(b"x", sha512) == sha512
    assert computed_digest(b"y", sha512) != sha512
    assert computed_digest(b"x", "sha256:" + "0" * 64) == (
        "sha256:" + hashlib.sha256(b"x").hexdigest()
    )


def test_computed_digest_refuses_what_it_cannot_recompute() -> None:
    with pytest.raises(DigestSyntaxError):
        computed_digest(b"x", "md5:" + "0" * 32)
