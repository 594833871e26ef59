"""The exact distribution grammar: names and references (THREATS P-01, P-02)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullguard.services.analysis.reference import (
    INVALID_DIGEST,
    INVALID_NAME,
    INVALID_REFERENCE,
    UNSUPPORTED_DIGEST,
    Reference,
    Rejected,
    check_repository,
    parse_reference,
    split_name,
)
from pullguard.services.runtime.findings import Severity

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "b" * 128
#: The distribution-spec <name> regex, verbatim, as an oracle.
SPEC_NAME_RE = re.compile(
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
)
SPEC_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def rejected_name(name: str) -> Rejected:
    with pytest.raises(Rejected) as info:
        check_repository(name, split_name(name), 0)
    return info.value


def rejected_reference(reference: str) -> Rejected:
    with pytest.raises(Rejected) as info:
        parse_reference(reference)
    return info.value


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "library/nginx",
        "team/sub/app",
        "a.b/c_d/e__f/g-h/i--j",
        "0/9",
        "x" * 255,
        "/".join(["ab"] * 85),  # 254 characters, 85 components
    ],
)
def test_valid_names(name: str) -> None:
    components = split_name(name)
    check_repository(name, components, 0)
    assert "/".join(components) == name


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("library/../../admin", "path component 1 is '..'"),
        ("./x", "path component 0 is '.'"),
        ("library%2F..%2F..%2Fsecret", "percent sign"),
        ("library/nginx%00", "percent sign"),
        ("library/nginx\x00", "NUL character at position 13"),
        ("Library/Nginx", "uppercase 'L'"),
        ("library/Nginx", "uppercase 'N' (names are lowercase only) at position 8"),
        ("a//b", "empty path component 1 ('//')"),
        ("/a", "leading '/'"),
        ("a/", "trailing '/'"),
        ("", "is empty"),
        ("a" * 256, "is 256 characters long, expected at most 255"),
        ("a b", "whitespace ' '"),
        ("a\tb", "whitespace"),
        ("a\nb", "whitespace"),
        ("a\x1b[31mb", "control character"),
        ("a\x7fb", "control character"),
        ("dоcker.io/library/nginx", "U+043E CYRILLIC SMALL LETTER O at position 1"),
        ("library/nginx\u200b", "non-ASCII"),
        ("ﬁle/x", "non-ASCII"),
        ("a@b", "character '@'"),
        ("a\\b", "character '\\\\'"),
        ("a?b", "character '?'"),
        ("a#b", "character '#'"),
        ("a.", "does not match"),
        ("a./b", "path component 0 'a.'"),
        (".a", "does not match"),
        ("a..b", "does not match"),
        ("a___b", "does not match"),
        ("-a", "does not match"),
        ("a-", "does not match"),
        ("a_", "does not match"),
        ("a:5000", "does not match"),
        ("x/a.-b", "path component 1 'a.-b'"),
    ],
)
def test_p02_invalid_names(name: str, where: str) -> None:
    rejected = rejected_name(name)
    assert rejected.finding.code == INVALID_NAME
    assert rejected.finding.severity is Severity.ERROR
    assert where in rejected.finding.message


def test_p02_name_finding_is_sanitised() -> None:
    rejected = rejected_name("a\x1b[2Jb\r\n")
    assert "\x1b" not in rejected.finding.message
    assert "\r" not in rejected.finding.evidence["name"]


def test_check_repository_points_at_the_component_as_sent() -> None:
    with pytest.raises(Rejected) as info:
        check_repository("lab/ok/bad.", ("ok", "bad."), 1)
    assert "path component 2 'bad.'" in info.value.finding.message
    assert info.value.finding.evidence["component"] == "2"


@pytest.mark.parametrize("tag", ["latest", "7.2", "v1.0.0-rc.1", "_x", "A", "a" * 128, "X_y-Z.9"])
def test_valid_tags(tag: str) -> None:
    assert parse_reference(tag) == Reference(tag=tag)


@pytest.mark.parametrize("digest", [SHA256, SHA512])
def test_valid_digests(digest: str) -> None:
    assert parse_reference(digest) == Reference(digest=digest)


@pytest.mark.parametrize(
    ("reference", "where"),
    [
        ("../../x", "character '/' at position 2"),
        (".hidden", "starts with '.'"),
        ("-x", "starts with '-'"),
        ("a" * 129, "129 characters long, expected at most 128"),
        ("a" * 300, "300 characters long"),
        (f"latest@{SHA256}", "contains '@' at position 6; expected exactly one tag or one digest"),
        (f"@{SHA256}", "contains '@'"),
        ("", "reference is empty"),
        ("v1%2f", "percent sign"),
        ("v1 ", "whitespace"),
        ("v1\x00", "NUL"),
        ("vе1", "U+0435 CYRILLIC SMALL LETTER IE"),
        ("a+b", "character '+'"),
    ],
)
def test_p02_invalid_tags(reference: str, where: str) -> None:
    rejected = rejected_reference(reference)
    assert rejected.finding.code == INVALID_REFERENCE
    assert where in rejected.finding.message


@pytest.mark.parametrize(
    ("reference", "where"),
    [
        ("sha256:../../../../etc/passwd", "character '/' at position 9"),
        ("sha256:", "encoded part is empty"),
        (f"{SHA256}/../x", "character '/' at position 71"),
        (
            f"{SHA256}%0d%0aX-Injected:1",
            "percent sign (the path is decoded exactly once) at position 71",
        ),
        (f"{SHA256}\r\nX-Injected:1", "whitespace '\\r' at position 71"),
        ("sha256:" + "A" * 64, "not lowercase hex"),
        ("sha256:" + "a" * 63, "has 63 characters"),
        ("sha256:" + "a" * 65, "has 65 characters"),
        ("sha512:" + "a" * 64, "has 64 characters"),
        ("SHA256:" + "a" * 64, "algorithm part 'SHA256' is malformed"),
        (":" + "a" * 64, "algorithm part '' is malformed"),
        (f"{SHA256}:x", "not lowercase hex"),
    ],
)
def test_p02_invalid_digests(reference: str, where: str) -> None:
    rejected = rejected_reference(reference)
    assert rejected.finding.code == INVALID_DIGEST
    assert where in rejected.finding.message


@pytest.mark.parametrize(
    "reference", ["md5:" + "a" * 32, "sha384:" + "a" * 96, "blake3:" + "a" * 64, "sha256+b64:abc="]
)
def test_p02_unsupported_digest_algorithms(reference: str) -> None:
    rejected = rejected_reference(reference)
    assert rejected.finding.code == UNSUPPORTED_DIGEST
    assert "is not supported" in rejected.finding.message


_NAME_ALPHABET = st.sampled_from(list("ab0._-/:%A@ ") + ["..", "//", "\x00", "о"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_NAME_ALPHABET, min_size=0, max_size=12).map("".join))
def test_p02_accepted_names_match_the_spec_regex(name: str) -> None:
    """Whatever the checks accept is a name in the spec's grammar, unchanged."""
    try:
        components = split_name(name)
        check_repository(name, components, 0)
    except Rejected as rejected:
        assert rejected.finding.code == INVALID_NAME
        return
    assert SPEC_NAME_RE.fullmatch(name)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("aZ9_.-:@%/ ") + ["sha256:"]), max_size=10).map("".join))
def test_p02_accepted_references_are_a_tag_or_a_digest(reference: str) -> None:
    try:
        parsed = parse_reference(reference)
    except Rejected as rejected:
        assert rejected.finding.code.startswith("analysis.")
        return
    assert bool(parsed.tag) != bool(parsed.digest)
    assert SPEC_TAG_RE.fullmatch(parsed.tag)
