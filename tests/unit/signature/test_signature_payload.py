"""The simple-signing payload parser, repository matching and the strict JSON loader."""

from __future__ import annotations

import pytest

from pullguard.services.signature.simplesigning import (
    PayloadError,
    expected_repositories,
    names_repository,
    parse_payload,
    repository_of,
)
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict
from tests.support.cosign import simple_signing_payload

DIGEST = "sha256:" + "12" * 32


def test_parses_cosign_payload_and_optional_fields() -> None:
    claims = parse_payload(
        simple_signing_payload("r.example/a/b:v1", DIGEST, {"creator": "c", "timestamp": 7, "x": 1})
    )
    assert (claims.docker_reference, claims.manifest_digest) == ("r.example/a/b:v1", DIGEST)
    assert (claims.creator, claims.timestamp) == ("c", 7)


@pytest.mark.parametrize(
    "optional", [{"creator": 1}, {"timestamp": "now"}, {"timestamp": 1.5}, {"timestamp": True}]
)
def test_typed_optional_fields_are_checked(optional: dict[str, object]) -> None:
    with pytest.raises(PayloadError):
        parse_payload(simple_signing_payload("r/a", DIGEST, optional))


def test_missing_optional_member_is_refused() -> None:
    data = simple_signing_payload("r/a", DIGEST).replace(b',"optional":null', b"")
    with pytest.raises(PayloadError, match="optional"):
        parse_payload(data)


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("h:5000/a/b", "h:5000/a/b"),
        ("h:5000/a/b:tag", "h:5000/a/b"),
        (f"h:5000/a/b@{DIGEST}", "h:5000/a/b"),
        (f"h:5000/a/b:t@{DIGEST}", "h:5000/a/b"),
        ("h:5000", "h"),
        ("h/a/b:", "h/a/b:"),
        ("h/a/b:-x", "h/a/b:-x"),
        ("h/a/b@sha256:XYZ", "h/a/b@sha256:XYZ"),
    ],
)
def test_repository_of_strips_only_well_formed_suffixes(reference: str, repository: str) -> None:
    assert repository_of(reference) == repository


def test_docker_hub_spellings_are_exact_equivalents() -> None:
    expected = expected_repositories("docker.io", "library/alpine")
    assert expected == ("docker.io/library/alpine", "index.docker.io/library/alpine")
    assert names_repository("index.docker.io/library/alpine:3.20", expected)
    assert names_repository("docker.io/library/alpine", expected)
    for other in (
        "docker.io/alpine",
        "alpine",
        "library/alpine",
        "registry-1.docker.io/library/alpine",
        "DOCKER.IO/library/alpine",
        "docker.io/library/alpine/x",
    ):
        assert not names_repository(other, expected), other


def test_other_registries_have_one_spelling() -> None:
    expected = expected_repositories("ghcr.io", "org/app")
    assert expected == ("ghcr.io/org/app",)
    assert not names_repository("index.docker.io/org/app", expected)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":1e999}',
        b'{"a":' + b"9" * 30 + b"}",
        b'{"a":1.' + b"0" * 100 + b"}",
        b"\xff",
        b"\xef\xbb\xbf{}",
        b"[" * 100_000 + b"]" * 100_000,
        b"",
        b"{} x",
    ],
)
def test_f03_strict_loader_refuses(data: bytes) -> None:
    with pytest.raises(StrictJsonError):
        loads_strict(data)


def test_strict_loader_keeps_types() -> None:
    assert loads_strict(b'{"a":[1,1.5,true,null,"s"]}') == {"a": [1, 1.5, True, None, "s"]}
