"""The exact distribution grammar for repository names and references.

Nothing here normalises: a name or reference that is not already in the one
form the distribution spec allows is rejected, with a finding that says what
was wrong and where. Case folding, percent-decoding, trimming or IDN
conversion would let two spellings reach one policy decision by different
paths (THREATS P-01, P-02), so none of them happens.

The front door percent-decodes the request path exactly once; a ``%`` left in
a name or reference is therefore itself an error.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.findings import Finding

#: distribution-spec ``<name>`` component (lowercase only).
COMPONENT_PATTERN = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_COMPONENT_RE = re.compile(COMPONENT_PATTERN)
#: distribution-spec tag.
TAG_PATTERN = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
_TAG_RE = re.compile(TAG_PATTERN)
#: The OCI image-spec grammar for any digest, registered algorithm or not.
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
SUPPORTED_ALGORITHMS = ("sha256", "sha512")
_LOWER_HEX_RE = re.compile(r"[0-9a-f]+")

#: Longest repository name, with or without the registry alias.
NAME_MAX = 255
#: Longest tag the distribution grammar allows.
TAG_MAX = 128
#: Longest reference worth looking at: a sha512 digest is 135 characters and
#: a tag 128; anything much longer is rejected before any pattern runs.
REFERENCE_MAX = 256

INVALID_NAME = "analysis.invalid_name"
INVALID_REFERENCE = "analysis.invalid_reference"
INVALID_DIGEST = "analysis.invalid_digest"
UNSUPPORTED_DIGEST = "analysis.unsupported_digest_algorithm"
INVALID_PARENT_INDEX = "analysis.invalid_parent_index"


class Rejected(ValueError):
    """A request that the grammar or the policy refuses; carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


@dataclass(frozen=True)
class Reference:
    """Exactly one of ``tag`` or ``digest`` is non-empty."""

    tag: str = ""
    digest: str = ""


def shown(text: str, limit: int = 80) -> str:
    """Quote untrusted text for a message, cut to ``limit`` characters."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _describe(ch: str) -> str:
    """Name a character unambiguously, e.g. ``U+043E CYRILLIC SMALL LETTER O``."""
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def _bad_character(text: str, allowed: frozenset[str]) -> tuple[int, str] | None:
    """First character outside ``allowed`` (ASCII characters) and why it is wrong."""
    for position, ch in enumerate(text):
        if ch in allowed:
            continue
        if ord(ch) > 0x7F:
            return position, f"non-ASCII character {_describe(ch)}"
        if ch == "\x00":
            return position, "NUL character"
        if ch.isspace():
            return position, f"whitespace {ch!r}"
        if not ch.isprintable():
            return position, f"control character {ch!r}"
        if ch == "%":
            return position, "percent sign (the path is decoded exactly once)"
        if ch.isupper():
            return position, f"uppercase {ch!r} (names are lowercase only)"
        return position, f"character {ch!r}"
    return None


# Characters a name may contain at all: the component grammar's, the path
# separator, and ":" for aliases with a port such as "127.0.0.1:5001".
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/:")
_TAG_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_DIGEST_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:+._-="
)


def _invalid_name(name: str, problem: str, **evidence: object) -> Rejected:
    return Rejected(
        Finding.error(INVALID_NAME, f"name {shown(name)}: {problem}", name=name, **evidence)
    )


def split_name(name: str) -> tuple[str, ...]:
    """Check a name's characters and shape; return its path components.

    Components are not yet checked against the grammar: the first may be a
    registry alias such as ``127.0.0.1:5001``. See :func:`check_repository`.
    """
    if not name:
        raise _invalid_name(name, "is empty; expected <alias>/<repository> or <repository>")
    if len(name) > NAME_MAX:
        raise _invalid_name(name, f"is {len(name)} characters long, expected at most {NAME_MAX}")
    bad = _bad_character(name, _NAME_CHARACTERS)
    if bad is not None:
        position, what = bad
        raise _invalid_name(name, f"{what} at position {position}", position=position)
    components = tuple(name.split("/"))
    for index, component in enumerate(components):
        if not component:
            where = (
                "leading '/'"
                if index == 0
                else ("trailing '/'" if index == len(components) - 1 else "'//'")
            )
            raise _invalid_name(name, f"empty path component {index} ({where})", component=index)
        if component in (".", ".."):
            raise _invalid_name(name, f"path component {index} is {component!r}", component=index)
    return components


def check_repository(name: str, components: tuple[str, ...], first_index: int) -> None:
    """Check repository components against the distribution grammar.

    ``first_index`` is the position of ``components[0]`` in the name as sent,
    so that a finding points at the component the client wrote.
    """
    for offset, component in enumerate(components):
        if _COMPONENT_RE.fullmatch(component) is None:
            index = first_index + offset
            raise _invalid_name(
                name,
                f"path component {index} {component!r} does not match {COMPONENT_PATTERN}",
                component=index,
            )


def parse_reference(reference: str) -> Reference:
    """Parse a tag or a digest, exactly; raise :class:`Rejected` otherwise."""
    if not reference:
        raise Rejected(
            Finding.error(INVALID_REFERENCE, "reference is empty; expected a tag or a digest")
        )
    if len(reference) > REFERENCE_MAX:
        raise Rejected(
            Finding.error(
                INVALID_REFERENCE,
                f"reference is {len(reference)} characters long; expected a tag of at most"
                " 128 or a digest of at most 135",
                reference=reference,
            )
        )
    if "@" in reference:
        raise Rejected(
            Finding.error(
                INVALID_REFERENCE,
                f"reference {shown(reference)} contains '@' at position {reference.index('@')};"
                " expected exactly one tag or one digest",
                reference=reference,
            )
        )
    if ":" in reference:
        return Reference(digest=_parse_digest(reference))
    bad = _bad_character(reference, _TAG_CHARACTERS)
    if bad is not None:
        position, what = bad
        raise Rejected(
            Finding.error(
                INVALID_REFERENCE,
                f"tag {shown(reference)}: {what} at position {position}",
                reference=reference,
                position=position,
            )
        )
    if _TAG_RE.fullmatch(reference) is None:
        problem = (
            f"is {len(reference)} characters long, expected at most {TAG_MAX}"
            if len(reference) > TAG_MAX
            else f"starts with {reference[0]!r}; expected to match {TAG_PATTERN}"
        )
        raise Rejected(
            Finding.error(
                INVALID_REFERENCE, f"tag {shown(reference)} {problem}", reference=reference
            )
        )
    return Reference(tag=reference)


def parse_parent_index(value: str, digest: str) -> str:
    """Check the parent index the gateway names for a pull of ``digest``.

    It must be a digest in the strict syntax, and not ``digest`` itself: no
    manifest lists its own digest, so that would be a caller's mistake that
    lets a pull vouch for itself.
    """
    if len(value) > REFERENCE_MAX:
        problem = f"is {len(value)} characters long, expected a digest of at most 135"
    elif value == digest:
        problem = "is the digest being pulled; an index cannot list itself"
    else:
        try:
            return _parse_digest(value)
        except Rejected as rejected:
            problem = rejected.finding.message
    raise Rejected(
        Finding.error(
            INVALID_PARENT_INDEX,
            f"parent index {shown(value)}: {problem}",
            parent_index=value,
        )
    )


def _parse_digest(reference: str) -> str:
    bad = _bad_character(reference, _DIGEST_CHARACTERS)
    if bad is not None:
        position, what = bad
        raise Rejected(
            Finding.error(
                INVALID_DIGEST,
                f"digest {shown(reference)}: {what} at position {position}",
                reference=reference,
                position=position,
            )
        )
    try:
        parse_digest(reference)
    except DigestSyntaxError:
        raise Rejected(_digest_problem(reference)) from None
    return reference


def _digest_problem(reference: str) -> Finding:
    """Say precisely why a digest that runtime.digests refused is wrong."""
    algorithm, _, encoded = reference.partition(":")
    expected = "expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>"
    # A well-formed digest of an algorithm pullguard cannot recompute is
    # reported apart from a malformed one: the fix is different.
    if _ANY_DIGEST_RE.fullmatch(reference) and algorithm not in SUPPORTED_ALGORITHMS:
        return Finding.error(
            UNSUPPORTED_DIGEST,
            f"digest {shown(reference)}: algorithm {algorithm!r} is not supported; {expected}",
            reference=reference,
            algorithm=algorithm,
        )
    if algorithm not in SUPPORTED_ALGORITHMS:
        problem = f"algorithm part {shown(algorithm)} is malformed"
    elif not encoded:
        problem = "the encoded part is empty"
    elif _LOWER_HEX_RE.fullmatch(encoded) is None:
        problem = "the encoded part is not lowercase hex"
    else:
        problem = f"the encoded part has {len(encoded)} characters"
    return Finding.error(
        INVALID_DIGEST, f"digest {shown(reference)}: {problem}; {expected}", reference=reference
    )
