"""Keyless signer identities of a rule, and how a certificate's identity matches one.

A keyless signer is named by the pair (OIDC issuer, subject). The subject is
either an exact string or a regular expression that the whole subject must
match (RE2 ``fullmatch``; the configuration also insists on ``^...$``), so
``https://github.com/myorg/.*`` never accepts ``https://github.com/myorg-evil/x``
or a value that merely contains the pattern (THREATS G-11 (d); cosign's
``regexp.MatchString`` is unanchored). Issuer and subject are checked as a
pair: the right subject from another issuer is another signer (G-11 (b)).

The certificate side (:class:`CertIdentity`) is what ``certs`` read from a
verified certificate: its subject alternative names and its issuer. A
certificate with several SANs matches when any one of them matches
(containers/image does the same for its ``subjectEmail``); Fulcio issues
exactly one.

Each policy entry is ONE signer for the threshold, however many different
certificates (or subjects matching a regex) it accepts: a threshold of two
needs two entries to match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pullguard.services.runtime.patterns import Pattern, PatternError, compile_anchored


class IdentityConfigError(ValueError):
    """A keyless identity from the policy cannot be used."""


@dataclass(frozen=True)
class CertIdentity:
    """The identity a verified certificate states."""

    #: OIDC issuer (Fulcio extension 1.3.6.1.4.1.57264.1.8, else .1.1), or,
    #: for a certificate without one (own PKI), the ``uri`` of the trusted
    #: root's certificate authority that the chain ends in.
    issuer: str
    #: E-mail, URI and Fulcio username SANs, in certificate order.
    subjects: tuple[str, ...]

    def describe(self) -> str:
        shown = ", ".join(s[:200] for s in self.subjects[:4]) or "no subject"
        return f"{shown} from {self.issuer[:200] or 'no issuer'}"


@dataclass(frozen=True)
class KeylessSigner:
    """One ``keyless`` entry of a rule."""

    issuer: str
    subject: str = ""
    subject_regex: str = ""
    _pattern: Pattern | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, issuer: str, subject: str = "", subject_regex: str = "") -> KeylessSigner:
        """Validate one entry; raise IdentityConfigError when it cannot be used."""
        if not issuer:
            raise IdentityConfigError("a keyless identity needs an issuer")
        if bool(subject) == bool(subject_regex):
            raise IdentityConfigError("a keyless identity needs exactly one of subject or regex")
        pattern = None
        if subject_regex:
            try:
                pattern = compile_anchored(subject_regex)
            except PatternError as exc:
                raise IdentityConfigError(f"subject_regex {exc}") from None
        return cls(issuer, subject, subject_regex, pattern)

    @property
    def name(self) -> str:
        """The signer's name in reports and for the threshold."""
        wanted = self.subject or f"~{self.subject_regex}"
        return f"{wanted} ({self.issuer})"

    def matches(self, identity: CertIdentity) -> bool:
        """True when the issuer is exactly ours and one subject matches."""
        if identity.issuer != self.issuer:
            return False
        if self._pattern is not None:
            return any(self._pattern.fullmatch(s) is not None for s in identity.subjects)
        return self.subject in identity.subjects


def first_match(signers: Sequence[KeylessSigner], identity: CertIdentity) -> KeylessSigner | None:
    """The first policy entry ``identity`` satisfies, or None."""
    for signer in signers:
        if signer.matches(identity):
            return signer
    return None


def load_signers(entries: Iterable[tuple[str, str, str]]) -> tuple[KeylessSigner, ...]:
    """(issuer, subject, subject_regex) triples; an entry listed twice is one signer."""
    out: list[KeylessSigner] = []
    for issuer, subject, regex in entries:
        signer = KeylessSigner.create(issuer, subject, regex)
        if signer not in out:
            out.append(signer)
    return tuple(out)
