"""Transport-free verdicts and findings that domain code returns.

Domain modules build :class:`Finding` and :class:`Verdict` values; servicers
turn them into protobuf messages with :func:`pullguard.services.runtime.protoconv`.
A verdict whose findings include an ERROR is a DENY: there is no way to build
an ALLOW that carries a denying finding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Longest message or evidence value kept in a finding; attacker-controlled
#: strings end up here, so they are bounded and stripped of control characters.
MAX_TEXT = 512


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3


def sanitize(text: str, limit: int = MAX_TEXT) -> str:
    """Make an untrusted string safe for reports and logs.

    Control characters (ANSI escapes, CR/LF, NUL) are shown escaped, and the
    result is truncated to ``limit`` characters with a marker.
    """
    out: list[str] = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    joined = "".join(out)
    if len(joined) > limit:
        return joined[: limit - 15] + "...[truncated]"
    return joined


@dataclass(frozen=True)
class Finding:
    """One observation, with a stable code such as ``hash.mismatch``."""

    code: str
    severity: Severity
    message: str
    evidence: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, severity: Severity, code: str, message: str, **evidence: object) -> Finding:
        """A finding whose severity the caller's policy chose."""
        return cls(code, severity, sanitize(message), _evidence(evidence))

    @classmethod
    def error(cls, code: str, message: str, **evidence: object) -> Finding:
        return cls.of(Severity.ERROR, code, message, **evidence)

    @classmethod
    def warning(cls, code: str, message: str, **evidence: object) -> Finding:
        return cls.of(Severity.WARNING, code, message, **evidence)

    @classmethod
    def info(cls, code: str, message: str, **evidence: object) -> Finding:
        return cls.of(Severity.INFO, code, message, **evidence)


def _evidence(values: Mapping[str, object]) -> dict[str, str]:
    return {key: sanitize(str(value)) for key, value in values.items()}


@dataclass(frozen=True)
class Verdict:
    """A layer's result. ``allowed`` is derived, never set by hand."""

    layer: str
    findings: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def reason(self) -> str:
        """The first denying finding's message, for the denial's message."""
        for finding in self.findings:
            if finding.severity is Severity.ERROR:
                return finding.message
        return ""

    @classmethod
    def of(cls, layer: str, findings: Iterable[Finding]) -> Verdict:
        return cls(layer, tuple(findings))


#: Severity names as reports spell them, by protobuf enum number (0: unset).
SEVERITY_NAMES: Mapping[int, str] = {0: "UNSPECIFIED", 1: "INFO", 2: "WARNING", 3: "ERROR"}
#: Severity names that refuse: an unset severity counts as an ERROR (fail closed).
BLOCKING = frozenset({"ERROR", "UNSPECIFIED"})


def blocks(severity: int | str) -> bool:
    """Whether a finding of ``severity`` (a protobuf number or a report's name) refuses."""
    name = SEVERITY_NAMES.get(severity, "") if isinstance(severity, int) else severity
    return name in BLOCKING


def severity_number(name: str) -> Severity:
    """A report's severity name as the enum (shared with protobuf); unknown or unset: ERROR."""
    return Severity.__members__.get(name, Severity.ERROR)
