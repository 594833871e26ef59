"""Regular expressions that operators write in policy, matched in linear time.

Tag patterns (``tags.allow``) and keyless identities (``subject_regex``) are
written by operators but matched against strings an attacker chooses (a tag,
a certificate's subject). Python's ``re`` backtracks, so a pattern such as
``^(a+)+$`` takes exponential time on a crafted input. These patterns are
compiled with RE2 instead, whose matching is linear in the input. RE2 has no
backreferences or lookaround; a pattern that uses them is a configuration
error, never a silent fallback to ``re``.
"""

from __future__ import annotations

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
