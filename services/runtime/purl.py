"""Package URLs (github.com/package-url/purl-spec), built from untrusted names.

``pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS``: every segment, the version and
each qualifier value are percent-encoded (UTF-8), except ``:`` which the spec
leaves as is; qualifiers are sorted by key and empty ones dropped. So a name
holding ``/``, ``@``, ``?`` or ``#`` cannot change what the purl says.
:func:`parse_purl` reads one back out of an untrusted document (a signed SBOM).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

_PYPI_SEPARATORS = re.compile(r"[-_.]+")


def encode(text: str) -> str:
    """One purl component, percent-encoded."""
    return quote(text.encode("utf-8", "surrogateescape"), safe="").replace("%3A", ":")


def purl(
    kind: str,
    namespace: str,
    name: str,
    version: str = "",
    qualifiers: Mapping[str, str] | None = None,
) -> str:
    """A purl of type ``kind``; ``namespace`` may have ``/``-separated segments."""
    parts = [f"pkg:{kind}"]
    parts += [encode(segment) for segment in namespace.split("/") if segment]
    text = "/".join(parts) + "/" + encode(name)
    if version:
        text += "@" + encode(version)
    pairs = sorted((k, v) for k, v in (qualifiers or {}).items() if v)
    if pairs:
        text += "?" + "&".join(f"{k}={encode(v)}" for k, v in pairs)
    return text


def pypi_name(name: str) -> str:
    """PEP 503 normal form, as purl and OSV compare PyPI names."""
    return _PYPI_SEPARATORS.sub("-", name).lower()


def pypi_purl(name: str, version: str) -> str:
    return purl("pypi", "", pypi_name(name), version)


def npm_purl(name: str, version: str) -> str:
    """``@scope/name`` becomes namespace ``%40scope``."""
    scope, slash, bare = name.rpartition("/")
    return purl("npm", scope if slash else "", bare, version)


def golang_purl(module: str, version: str) -> str:
    namespace, _, last = module.rpartition("/")
    return purl("golang", namespace, last, version)


#: Longest purl parsed; a longer one is refused, never truncated.
MAX_PURL_CHARS = 1024
#: Most qualifiers a parsed purl may carry.
MAX_QUALIFIERS = 16


class PurlError(ValueError):
    """A string that is not a package URL; the message says what is wrong."""


@dataclass(frozen=True)
class ParsedPurl:
    """A package URL read from an untrusted document (an SBOM), decoded."""

    kind: str  # the purl type, lower case: "deb", "pypi", "golang", ...
    namespace: tuple[str, ...]
    name: str
    version: str
    qualifiers: Mapping[str, str]


def parse_purl(text: str) -> ParsedPurl:
    """``pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS#SUBPATH`` as the spec splits it.

    The subpath is dropped; the version is split off at the last ``@`` after
    the last ``/`` (an npm ``@scope`` is a namespace, not a version); every
    part is percent-decoded after the split, so an encoded ``/`` or ``@``
    stays inside its part.
    """
    if not isinstance(text, str) or not text:
        raise PurlError("purl is not a non-empty string")
    if len(text) > MAX_PURL_CHARS:
        raise PurlError(f"purl is {len(text)} characters, expected at most {MAX_PURL_CHARS}")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != "pkg":
        raise PurlError(f"purl {text[:80]!r} does not start with pkg:")
    rest = rest.lstrip("/").partition("#")[0]
    rest, _, query = rest.partition("?")
    path, at, version = rest.rpartition("@")
    if not at or "/" in version:
        path, version = rest, ""
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2:
        raise PurlError(f"purl {text[:80]!r} has no type and name")
    kind = segments[0].lower()
    if not _TYPE_RE.fullmatch(kind):
        raise PurlError(f"purl type {kind[:40]!r} is not a purl type")
    qualifiers: dict[str, str] = {}
    for pair in [p for p in query.split("&") if p][:MAX_QUALIFIERS]:
        key, _, value = pair.partition("=")
        qualifiers[key.lower()] = unquote(value)
    name = unquote(segments[-1])
    if not name:
        raise PurlError(f"purl {text[:80]!r} has an empty name")
    return ParsedPurl(
        kind=kind,
        namespace=tuple(unquote(s) for s in segments[1:-1]),
        name=name,
        version=unquote(version),
        qualifiers=qualifiers,
    )


_TYPE_RE = re.compile(r"[a-z][a-z0-9.+-]{0,31}")
