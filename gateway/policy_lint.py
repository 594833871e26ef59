"""Warnings about a valid policy that is surely a mistake.

A rule's ``match`` is a glob on ``<alias>/<repository>`` and the first rule
that matches wins (names without a known alias are first given the default
upstream's alias), so:

- a glob whose first segment can match no configured alias never matches;
- a glob with an empty segment (``lab//x``, ``lab/``) never matches;
- a rule every name of which an earlier rule already matches never applies;
- a policy without rules admits nothing.

Each warning is one line naming the key, as configuration errors do.
"""

from __future__ import annotations

import re

from pullguard.services.runtime.config import Config, glob_to_regex

_WILDCARD = re.compile(r"[*?]")


def policy_warnings(config: Config) -> list[str]:
    warnings: list[str] = []
    rules = config.policy.rules
    if not rules:
        warnings.append("policy.rules: no rules: every pull is denied (nothing matches a rule)")
    aliases = tuple(config.upstreams)
    globs = [(f"policy.rules[{rule.index}].match", rule.match) for rule in rules]
    globs += [(f"policy.deny[{i}]", glob) for i, (glob, _) in enumerate(config.policy.deny)]
    for key, glob in globs:
        problem = never_matches(glob, aliases)
        if problem:
            warnings.append(f"{key}: {glob!r} can never match: {problem}")
    for later, rule in enumerate(rules):
        for earlier in rules[:later]:
            if covers(earlier.match, rule.match):
                warnings.append(
                    f"policy.rules[{rule.index}].match: {rule.match!r} is shadowed by"
                    f" policy.rules[{earlier.index}] ({earlier.match!r}), which matches"
                    " every name it does and comes first: this rule never applies"
                )
                break
    return warnings


def never_matches(glob: str, aliases: tuple[str, ...]) -> str:
    """Why ``glob`` matches no ``<alias>/<repository>`` name, or '' when it may match."""
    segments = glob.split("/")
    if "" in segments:
        return "it has an empty path segment"
    if "**" in segments[0]:
        return ""
    if len(segments) < 2 and "**" not in glob:
        return "a name is always <alias>/<repository>, at least two segments"
    first = glob_to_regex(segments[0])
    if not any(first.fullmatch(alias) for alias in aliases):
        return (
            f"its first segment {segments[0]!r} is no configured upstream alias"
            f" ({', '.join(aliases)}); names without an alias go to default_upstream"
            " and are matched as <alias>/<repository>"
        )
    return ""


def covers(earlier: str, later: str) -> bool:
    """True when every name ``later`` matches is matched by ``earlier`` too.

    Decided for the cases that can be decided simply: the same glob, ``**``
    first, a literal name, and a literal prefix ending in ``/**``.
    """
    if earlier == later or earlier == "**":
        return True
    if not _WILDCARD.search(later):
        return glob_to_regex(earlier).fullmatch(later) is not None
    if earlier.endswith("/**"):
        prefix = earlier[: -len("/**")]
        if not _WILDCARD.search(prefix):
            head = later.split("/")[: prefix.count("/") + 1]
            return "/".join(head) == prefix and len(later.split("/")) > len(head)
    return False
