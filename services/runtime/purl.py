"""Package URLs (github.com/package-url/purl-spec), built from untrusted names.

``pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS``: every segment, the version and
each qualifier value are percent-encoded (UTF-8), except ``:`` which the spec
leaves as is; qualifiers are sorted by key and empty ones dropped. So a name
holding ``/``, ``@``, ``?`` or ``#`` cannot change what the purl says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

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
