"""What a rule trusts, in one object, and who signed a signature under it.

:class:`Trust` gathers a rule's trust material: configured keys, keyless
identities, the trusted root (its own, or the production root) and whether a
transparency-log promise is required. :func:`identify` decides who made a
legacy cosign signature (a ``.sig`` or ``.att`` layer: the signature in an
annotation, with optional ``certificate``/``chain``/``bundle`` annotations),
in three kinds:

1. **key**: a configured key verifies the signature. The certificate and
   chain annotations are then ignored (THREATS G-12: only configured trust
   material counts). A Rekor SET, when present, must verify and bind this
   payload, signature and key; with ``rekor: required`` it must be present.
   With ``rekor: optional`` a bad SET does not reject the key signature, but
   it is reported and no log inclusion is claimed (G-06).
2. **keyless**: no key verifies, the rule has keyless identities and the
   layer carries a certificate. The SET is required for a Fulcio
   certificate (one with an OIDC issuer extension), must verify and bind the
   certificate, and gives the signed time; the certificate must have been
   valid then and chain to a trusted-root CA valid then (G-10); its identity
   must match a rule entry (G-11). When the trusted root lists CT logs, its
   embedded SCT must verify against one of them (cosign's default).
3. **own PKI**: as keyless, for a certificate without an OIDC issuer: the
   issuer is the CA's ``uri`` in the trusted root; without a SET (allowed
   only with ``rekor: optional``) the certificate is checked at the current
   time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pullguard.services.signature import certs, policy, rekor
from pullguard.services.signature.backend import BundleBackend, BundleFailure
from pullguard.services.signature.identity import KeylessSigner, first_match
from pullguard.services.signature.keys import TrustedKey, key_matches, verify_with
from pullguard.services.signature.notation.verify import NotationTrust
from pullguard.services.signature.policy import SignatureCheck
from pullguard.services.signature.trustroot import TrustRoot

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"


@dataclass(frozen=True)
class Trust:
    """A rule's trust material, ready to verify with."""

    keys: tuple[TrustedKey, ...]
    keyless: tuple[KeylessSigner, ...]
    #: The trusted root; None only when the rule could not need one.
    root: TrustRoot | None
    rekor_required: bool
    now: datetime
    #: The sigstore library loaded with the same root, for bundles.
    bundles: BundleBackend | None = field(default=None, compare=False)
    #: The rule's Notation trust policy; None trusts no Notation signature.
    notation: NotationTrust | None = None


@dataclass(frozen=True)
class Signer:
    """Who made a signature, and what the transparency log said about it."""

    name: str
    #: "key", "keyless" or "pki".
    kind: str
    #: "" when no log promise was checked, else where it was found.
    tlog: str
    #: An optional log promise that was rejected (reported, not fatal).
    tlog_problem: str = ""

    def describe(self) -> str:
        """What the report says about the transparency log."""
        if self.tlog:
            return self.tlog
        if self.tlog_problem:
            return f"transparency log entry ignored: {self.tlog_problem}"
        return "transparency log not checked"


def identify(
    location: str,
    signed: bytes,
    signature: bytes,
    payload_sha256: str,
    annotations: Mapping[str, str],
    trust: Trust,
) -> Signer | SignatureCheck:
    """The signer of ``signature`` over ``signed``, or the rejection.

    ``payload_sha256`` is what a log entry must record as the payload hash
    (the payload itself for a simple-signing layer, the statement for DSSE).
    """
    for key in trust.keys:
        if key.verifies(signature, signed):
            return _key_signer(location, key, signature, payload_sha256, annotations, trust)
    certificate = annotations.get(CERTIFICATE_ANNOTATION)
    if certificate is None:
        return SignatureCheck.reject(
            location, policy.UNTRUSTED_KEY, "signature verifies under no trusted key"
        )
    if not trust.keyless:
        return SignatureCheck.reject(
            location,
            policy.UNTRUSTED_KEY,
            "signature verifies under no trusted key; its certificate is not trust material"
            " (the rule names no keyless signer)",
        )
    return _keyless_signer(location, signed, signature, payload_sha256, annotations, trust)


def _key_signer(
    location: str,
    key: TrustedKey,
    signature: bytes,
    payload_sha256: str,
    annotations: Mapping[str, str],
    trust: Trust,
) -> Signer | SignatureCheck:
    text = annotations.get(rekor.BUNDLE_ANNOTATION)
    if text is None:
        if trust.rekor_required:
            return SignatureCheck.reject(
                location,
                policy.TLOG_MISSING,
                f"signed by {key.name} but no transparency log promise ({rekor.BUNDLE_ANNOTATION})"
                " and the rule requires one",
                key.name,
            )
        return Signer(key.name, "key", "")
    binding = rekor.Binding(
        payload_sha256, signature, lambda blob: key_matches(key.fingerprint, blob)
    )
    try:
        where = _checked_promise(text, binding, trust)[1]
    except rekor.TlogError as exc:
        if trust.rekor_required:
            return SignatureCheck.reject(
                location, policy.TLOG_INVALID, f"signed by {key.name}; {exc}", key.name
            )
        return Signer(key.name, "key", "", tlog_problem=str(exc))
    return Signer(key.name, "key", where)


def _checked_promise(
    text: str, binding: rekor.Binding, trust: Trust
) -> tuple[rekor.RekorPromise, str]:
    if trust.root is None:
        raise rekor.TlogError("no trusted root to check the log promise with")
    promise = rekor.parse_promise(text)
    log = rekor.verify_set(promise, trust.root, trust.now)
    kind = rekor.check_body(promise.body, binding)
    where = (
        f"in transparency log {log.base_url or log.log_id.hex()[:16]} at index"
        f" {promise.log_index} ({kind}, {promise.time:%Y-%m-%dT%H:%M:%SZ})"
    )
    return promise, where


def _keyless_signer(
    location: str,
    signed: bytes,
    signature: bytes,
    payload_sha256: str,
    annotations: Mapping[str, str],
    trust: Trust,
) -> Signer | SignatureCheck:
    def reject(code: str, reason: str) -> SignatureCheck:
        return SignatureCheck.reject(location, code, reason)

    try:
        leaf_list = certs.load_pem_chain(annotations[CERTIFICATE_ANNOTATION], "certificate")
        chain_text = annotations.get(CHAIN_ANNOTATION)
        offered = certs.load_pem_chain(chain_text, "chain") if chain_text else ()
        if len(leaf_list) != 1:
            raise certs.CertificateError(
                f"certificate annotation holds {len(leaf_list)} certificates"
            )
        leaf = leaf_list[0]
        leaf_key = certs.public_key(leaf)
        issuer_extension = certs.issuer_of(leaf)
    except certs.CertificateError as exc:
        return reject(policy.UNTRUSTED_CERTIFICATE, str(exc))
    if not verify_with(leaf_key, signature, signed):
        return reject(policy.INVALID, "signature does not verify under its certificate's key")
    if trust.root is None:
        return reject(policy.UNTRUSTED_CERTIFICATE, "no trusted root to check the certificate with")
    text = annotations.get(rekor.BUNDLE_ANNOTATION)
    tlog = ""
    if text is None:
        if issuer_extension or trust.rekor_required:
            return reject(
                policy.TLOG_MISSING,
                "keyless signature without a transparency log promise"
                f" ({rekor.BUNDLE_ANNOTATION}): its signing time is unproven",
            )
        when = trust.now
    else:
        leaf_der = certs.der(leaf)
        binding = rekor.Binding(
            payload_sha256, signature, lambda blob: certs.certificate_matches(leaf_der, blob)
        )
        try:
            promise, tlog = _checked_promise(text, binding, trust)
        except rekor.TlogError as exc:
            return reject(policy.TLOG_INVALID, str(exc))
        when = promise.time
    if not certs.valid_at(leaf, when):
        return reject(
            policy.CERTIFICATE_EXPIRED,
            f"certificate valid {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to"
            f" {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, signed at {when:%Y-%m-%dT%H:%M:%SZ}",
        )
    try:
        authority, path = certs.verify_chain(leaf, offered, trust.root.authorities, when)
        certs.check_code_signing(leaf)
        identity = certs.identity_of(leaf, authority)
    except certs.CertificateError as exc:
        return reject(policy.UNTRUSTED_CERTIFICATE, str(exc))
    if issuer_extension and trust.root.has_ctlogs:
        # A Fulcio certificate carries the SCT of the CT log it was logged
        # to; cosign checks it by default (--insecure-ignore-sct to skip).
        if trust.bundles is None:
            return reject(policy.UNTRUSTED_CERTIFICATE, "no verifier for certificate SCTs")
        try:
            trust.bundles.verify_embedded_sct(leaf, path)
        except BundleFailure as exc:
            return reject(exc.code, exc.message)
    signer = first_match(trust.keyless, identity)
    if signer is None:
        return reject(
            policy.WRONG_IDENTITY,
            f"got certificate for {identity.describe()}, expected {_expected(trust.keyless)}",
        )
    return Signer(signer.name, "keyless" if issuer_extension else "pki", tlog)


def _expected(signers: Sequence[KeylessSigner]) -> str:
    names = [s.name for s in signers[:3]]
    more = f" (+{len(signers) - 3})" if len(signers) > 3 else ""
    return " or ".join(names) + more


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
