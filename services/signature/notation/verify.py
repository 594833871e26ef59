"""One Notation signature, verified as the Notary Project trust policy says.

The validations, in notation's order (``trust-store-trust-policy.md``):

1. **integrity**, always enforced: the envelope and its signed headers
   (:mod:`.envelope`), the chain's shape and fitness (:mod:`.chain`), the
   signature under the leaf's key, and the payload's ``targetArtifact``
   naming this manifest: digest, media type and size, all three;
2. **authenticity**: a certificate of the chain is in one of the rule's
   trust stores of the scheme's type (``ca`` for ``notary.x509``,
   ``signingAuthority`` for ``notary.x509.signingAuthority``), the leaf's
   subject holds every attribute of a trusted identity, and the chain was
   valid at the signing time the envelope states;
3. **authentic timestamp**: for ``notary.x509``, with a ``tsa`` store in
   the rule the RFC 3161 countersignature must be present and verify, and
   the chain be valid over its whole time range; without one, the chain
   must be valid now. For ``signingAuthority``, the chain must have been
   valid at the authentic signing time;
4. **expiry**: ``io.cncf.notary.expiry`` is not past;
5. **revocation**: pullguard is offline and fetches no CRL or OCSP
   answer. A chain none of whose certificates names a CRL or OCSP endpoint
   is "non-revocable" and passes, as in notation; one that names an
   endpoint has an unknown status, which fails where revocation is
   enforced (``strict``) and is logged otherwise, or with
   ``override: {revocation: log}``.

Each of 2-5 is enforced, logged or skipped per the rule's level and
overrides. An enforced failure rejects the signature; a logged one leaves
it accepted and adds a second, non-accepted check saying what was logged,
so the report shows it (an INFO finding once the requirement is met).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from pullguard.services.runtime.config.notation import (
    DistinguishedNameError,
    actions,
    parse_identity,
)
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.signature import policy
from pullguard.services.signature.notation import chain as chains
from pullguard.services.signature.notation.envelope import (
    SIGNING_AUTHORITY,
    Envelope,
    EnvelopeError,
    parse_envelope,
    parse_payload,
)
from pullguard.services.signature.notation.timestamp import TimestampError, verify_timestamp
from pullguard.services.signature.policy import SignatureCheck

#: The payload names another media type or size than the manifest's.
WRONG_TARGET = "signature.notation_wrong_target"
#: io.cncf.notary.expiry is past.
EXPIRED = "signature.notation_expired"
#: The timestamp countersignature is missing where required, or does not verify.
TIMESTAMP_INVALID = "signature.notation_timestamp_invalid"
#: A certificate names a CRL/OCSP endpoint; offline, its status is unknown.
REVOCATION_UNKNOWN = "signature.notation_revocation_unknown"

_STORE_FOR_SCHEME = {"notary.x509": "ca", SIGNING_AUTHORITY: "signingAuthority"}


@dataclass(frozen=True)
class Target:
    """The manifest a signature must name: its digest, media type and size."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class NotationTrust:
    """A rule's Notation trust policy, ready to verify with."""

    #: type -> DER certificates of every store of that type the rule names.
    stores: dict[str, tuple[bytes, ...]]
    #: The identities as written; "*" trusts any subject.
    identities: tuple[str, ...]
    level: str
    #: validation -> "enforce" | "log" | "skip".
    actions: dict[str, str]

    @classmethod
    def of(
        cls,
        stores: Sequence[tuple[str, Sequence[bytes]]],
        identities: Sequence[str],
        level: str,
        overrides: dict[str, str],
    ) -> NotationTrust:
        """ValueError (KeyError) when the level, an override or an identity is not known."""
        merged: dict[str, tuple[bytes, ...]] = {}
        for store_type, certificates in stores:
            merged[store_type] = merged.get(store_type, ()) + tuple(certificates)
        for identity in identities:
            parse_identity(identity)
        return cls(merged, tuple(identities), level, actions(level, overrides))


class _Failure(Exception):
    def __init__(self, validation: str, code: str, reason: str) -> None:
        super().__init__(reason)
        self.validation = validation
        self.code = code
        self.reason = reason


def verify_notation(
    location: str,
    media_type: str,
    data: bytes,
    target: Target,
    trust: NotationTrust,
    now: datetime,
) -> list[SignatureCheck]:
    """The checks for one envelope: one accepted or rejected, plus what was logged."""
    try:
        envelope = parse_envelope(media_type, data)
        chain = chains.load_chain(envelope.certificates)
        chains.check_structure(chain)
        chains.verify_signature(envelope, chain[0])
        _check_target(envelope, target)
    except EnvelopeError as exc:
        return [SignatureCheck.reject(location, exc.code, exc.message)]
    except chains.ChainError as exc:
        return [SignatureCheck.reject(location, policy.INVALID, str(exc))]
    except _Failure as failure:
        return [SignatureCheck.reject(location, failure.code, failure.reason)]
    leaf = chains.name(chain[0])
    identity = _identity(chain[0], trust.identities)
    signer = f"notation:{identity or leaf}"
    logged: list[SignatureCheck] = []
    steps: tuple[tuple[str, Callable[[], None]], ...] = (
        ("authenticity", lambda: _authenticity(envelope, chain, identity, trust)),
        ("authenticTimestamp", lambda: _authentic_timestamp(envelope, chain, trust, now)),
        ("expiry", lambda: _expiry(envelope, now)),
        ("revocation", lambda: _revocation(chain)),
    )
    for validation, step in steps:
        action = trust.actions[validation]
        if action == "skip":
            continue
        try:
            step()
        except _Failure as failure:
            if action == "enforce":
                return [SignatureCheck.reject(location, failure.code, failure.reason, signer)]
            logged.append(
                SignatureCheck.reject(
                    location,
                    failure.code,
                    f"logged, not enforced ({trust.level} level): {failure.reason}",
                    signer,
                )
            )
    accepted = SignatureCheck.accept(
        location,
        signer,
        f"Notation signature by {leaf} for {target.digest} ({envelope.scheme},"
        f" {trust.level} level, signed {envelope.signing_time:%Y-%m-%dT%H:%M:%SZ})",
    )
    return [accepted, *logged]


def _check_target(envelope: Envelope, target: Target) -> None:
    descriptor = parse_payload(envelope.payload)
    digest = descriptor.get("digest")
    if not isinstance(digest, str):
        raise _Failure("integrity", policy.INVALID, "targetArtifact has no digest")
    try:
        parse_digest(digest)
    except DigestSyntaxError as exc:
        raise _Failure("integrity", policy.INVALID, f"targetArtifact.digest: {exc}") from None
    if digest != target.digest:
        raise _Failure(
            "integrity",
            policy.WRONG_DIGEST,
            f"got signed digest {digest[:140]}, expected {target.digest}",
        )
    if descriptor.get("mediaType") != target.media_type:
        raise _Failure(
            "integrity",
            WRONG_TARGET,
            f"got signed media type {str(descriptor.get('mediaType'))[:100]!r},"
            f" expected {target.media_type!r}",
        )
    size = descriptor.get("size")
    if type(size) is not int or size != target.size:
        raise _Failure(
            "integrity", WRONG_TARGET, f"got signed size {str(size)[:30]}, expected {target.size}"
        )


def _identity(leaf: x509.Certificate, identities: Sequence[str]) -> str:
    """The first trusted identity the leaf's subject satisfies, or ""."""
    subject = chains.subject_attributes(leaf)
    for identity in identities:
        try:
            wanted = parse_identity(identity)
        except DistinguishedNameError:
            continue
        if wanted is None or all(subject.get(k) == v for k, v in wanted):
            return identity
    return ""


def _authenticity(
    envelope: Envelope, chain: list[x509.Certificate], identity: str, trust: NotationTrust
) -> None:
    store_type = _STORE_FOR_SCHEME[envelope.scheme]
    if not chains.trusted_by(chain, trust.stores.get(store_type, ())):
        raise _Failure(
            "authenticity",
            policy.UNTRUSTED_CERTIFICATE,
            f"no certificate of the chain of {chains.name(chain[0])} is in the rule's"
            f" {store_type} trust stores",
        )
    if not identity:
        raise _Failure(
            "authenticity",
            policy.WRONG_IDENTITY,
            f"got signer {chains.name(chain[0])},"
            f" expected one of {', '.join(trust.identities)[:300]}",
        )
    problem = chains.invalid_at(chain, envelope.signing_time)
    if problem:
        raise _Failure(
            "authenticity",
            policy.CERTIFICATE_EXPIRED,
            f"at the signing time {envelope.signing_time:%Y-%m-%dT%H:%M:%SZ}: {problem}",
        )


def _authentic_timestamp(
    envelope: Envelope, chain: list[x509.Certificate], trust: NotationTrust, now: datetime
) -> None:
    if envelope.scheme == SIGNING_AUTHORITY:
        problem = chains.invalid_at(chain, envelope.signing_time)
        if problem:
            raise _Failure("authenticTimestamp", policy.CERTIFICATE_EXPIRED, problem)
        return
    tsa = trust.stores.get("tsa", ())
    if not tsa:
        problem = chains.invalid_at(chain, now)
        if problem:
            raise _Failure(
                "authenticTimestamp",
                policy.CERTIFICATE_EXPIRED,
                f"no trusted timestamp, so the chain must be valid now: {problem}",
            )
        return
    if envelope.timestamp is None:
        raise _Failure(
            "authenticTimestamp",
            TIMESTAMP_INVALID,
            "the rule names a tsa trust store but the signature has no timestamp countersignature",
        )
    try:
        stamped = verify_timestamp(envelope.timestamp, envelope.signature, tsa)
    except TimestampError as exc:
        raise _Failure("authenticTimestamp", TIMESTAMP_INVALID, str(exc)) from None
    problem = chains.invalid_at(chain, stamped.earliest) or chains.invalid_at(chain, stamped.latest)
    if problem:
        raise _Failure(
            "authenticTimestamp",
            policy.CERTIFICATE_EXPIRED,
            f"at the timestamp {stamped.earliest:%Y-%m-%dT%H:%M:%SZ}: {problem}",
        )


def _expiry(envelope: Envelope, now: datetime) -> None:
    if envelope.expiry is not None and now > envelope.expiry:
        raise _Failure(
            "expiry", EXPIRED, f"the signature expired at {envelope.expiry:%Y-%m-%dT%H:%M:%SZ}"
        )


def _revocation(chain: list[x509.Certificate]) -> None:
    for certificate in chain:
        for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
            try:
                extension = certificate.extensions.get_extension_for_class(kind)
            except x509.ExtensionNotFound:
                continue
            if kind is x509.AuthorityInformationAccess and not any(
                d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
                for d in extension.value  # type: ignore[attr-defined]
            ):
                continue
            raise _Failure(
                "revocation",
                REVOCATION_UNKNOWN,
                f"{chains.name(certificate)} names a revocation endpoint that pullguard,"
                " offline, does not query: status unknown",
            )
