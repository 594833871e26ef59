"""Every pattern an operator writes in policy, and how it is matched; the one place.

- globs (``policy.rules[].match``, ``policy.deny``, ``sources``,
  ``provenance.source_repositories``): :func:`compile_glob`, one compiler in
  two dialects (below);
- host globs (``redirect_hosts``, ``realm_hosts``, ``foreign_urls``):
  :func:`host_matches`;
- anchored regular expressions (tag ``allow``, keyless ``subject_regex``):
  :func:`compile_anchored`, below.

Tag patterns (``tags.allow``) and keyless identities (``subject_regex``) are
written by operators but matched against strings an attacker chooses (a tag,
a certificate's subject). Python's ``re`` backtracks, so a pattern such as
``^(a+)+$`` takes exponential time on a crafted input. These patterns are
compiled with RE2 instead, whose matching is linear in the input. RE2 has no
backreferences or lookaround; a pattern that uses them is a configuration
error, never a silent fallback to ``re``.

Globs: one compiler, two dialects
---------------------------------

Repository names and source values (URLs) are matched by one compiler,
:func:`compile_glob`; its :class:`GlobKind` names the only differences:

======================  ==========================  ==============================
                        ``REPOSITORY``              ``VALUE``
======================  ==========================  ==============================
``*``                   zero or more, not ``/``     one or more, not ``/``
``**``                  spans segments              two ``*``: two or more
``?``                   one character, not ``/``    itself (URLs hold ``?``)
======================  ==========================  ==============================

Why not one language: within a segment a repository glob's ``*`` may be
empty (``lab/app*`` covers ``lab/app`` and ``lab/app-dev``, as in a shell;
making it one or more would quietly narrow existing rules), while a source's
``*`` must not be: ``https://github.com/trusted/*`` approves the
repositories of ``trusted``, never ``https://github.com/trusted/`` itself (an
empty segment; ``test_s02_pattern_matching`` guards it). And ``?`` is a
wildcard only where the matched text cannot hold one: repository names never
do, URLs do, so in a value it would widen an approval. Host globs
(:func:`host_matches`) follow DNS labels instead and stay apart.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable
from typing import Protocol

import re2  # type: ignore[import-untyped]

#: RE2's memory budget per pattern (its default is 8 MiB).
MAX_MEMORY = 8 << 20
MAX_LENGTH = 1024


class PatternError(ValueError):
    """The pattern is not anchored, too long, or not RE2 syntax."""


class Pattern(Protocol):
    def fullmatch(self, text: str) -> object | None: ...


def compile_anchored(text: str) -> Pattern:
    """Compile an operator's pattern, which must be anchored at both ends (``^...$``)."""
    if len(text) > MAX_LENGTH:
        raise PatternError(f"is {len(text)} characters long; at most {MAX_LENGTH}")
    if not (text.startswith("^") and text.endswith("$")) or text.endswith("\\$"):
        raise PatternError(f"regular expressions must be anchored (^...$), got {text[:100]!r}")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_MEMORY
    try:
        pattern: Pattern = re2.compile(text, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", errors="replace")
        raise PatternError(
            f"does not compile as RE2 (no backreferences or lookaround): {reason}"
        ) from None
    return pattern


class GlobKind(enum.Enum):
    """What a glob matches; see the table in the module docstring."""

    #: A repository name (``lab/app``): ``*``, ``**`` and ``?`` are wildcards.
    REPOSITORY = "repository"
    #: A source value, a URL: only ``*`` is, and it stands for at least one character.
    VALUE = "value"


@functools.lru_cache(maxsize=1024)
def compile_glob(glob: str, kind: GlobKind = GlobKind.REPOSITORY) -> re.Pattern[str]:
    """Compile a glob of ``kind`` for :meth:`re.Pattern.fullmatch`.

    For a repository, ``*`` stays within one path segment and ``**`` spans
    segments (``a/**`` matches ``a/b/c``; ``**/x/**`` matches ``x/y``).
    """
    repository = kind is GlobKind.REPOSITORY
    star = "[^/]*" if repository else "[^/]+"
    out: list[str] = []
    i = 0
    while i < len(glob):
        if repository and glob.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif repository and glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/[^/]+)*")
            i += 3
        elif repository and glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append(star)
            i += 1
        elif repository and glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """A repository glob (:attr:`GlobKind.REPOSITORY`)."""
    return compile_glob(glob, GlobKind.REPOSITORY)


def redirect_allowed(
    host: str, port: int | None, own: tuple[str, int | None], redirect_hosts: tuple[str, ...]
) -> bool:
    """Whether content may come from ``host:port``: the upstream's ``own`` host on its
    own port, or a ``redirect_hosts`` entry naming the host (any port). The fetcher
    asks before it connects and the source layer again afterwards: one rule, two judges."""
    return (host, port) == own or host_matches(host, redirect_hosts)


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Exact, case-sensitive host glob match; ``*`` matches one or more labels' worth
    of characters but never a dot-less empty label."""
    for pattern in patterns:
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif "*" in pattern:
            if re.fullmatch(re.escape(pattern).replace(r"\*", "[a-z0-9-]*"), host):
                return True
        elif host == pattern:
            return True
    return False


def printable_ascii(value: str) -> bool:
    """Non-empty, ASCII, no spaces or control characters."""
    return bool(value) and value.isascii() and all(" " < ch < "\x7f" for ch in value)


def value_matches(value: str, patterns: Iterable[str]) -> bool:
    """Does ``value`` equal a pattern, or match a ``*`` glob of one (:attr:`GlobKind.VALUE`)?

    A value with spaces, controls or non-ASCII characters matches nothing.
    """
    if not printable_ascii(value):
        return False
    return any(compile_glob(pattern, GlobKind.VALUE).fullmatch(value) for pattern in patterns)
