"""Sigstore bundles (v0.1-v0.3) verified against an artifact digest.

A bundle (``application/vnd.dev.sigstore.bundle.v0.3+json`` or
``application/vnd.dev.sigstore.bundle+json;version=0.x``) holds one
signature, either a message signature over the artifact's digest or a DSSE
envelope with an in-toto statement, plus its verification material: a
certificate (keyless) or a key hint (managed key), transparency-log entries
and RFC 3161 timestamps.

Before anything is verified, the JSON is read strictly (no duplicate names,
known media type, one kind of material and one kind of content) and its
counts are bounded: at most 32 log entries and 32 timestamps (sigstore-go,
CVE-2024-45395; THREATS G-08 (d), G-14); the statement's subjects are bounded
in ``dsse``.

- **Certificate bundles** go to the sigstore library (``BundleBackend``),
  with the rule's keyless identities as the policy. The library requires a
  log entry (and a signed time) for these.
- **Key bundles** are verified here with the configured keys (the library
  refuses them). Their log entries, when present, must verify (via the
  library) and record this signature, payload and key; with
  ``rekor: required`` at least one must.

Then the binding: a message signature signs exactly the artifact's digest;
a DSSE statement must list the artifact's digest in a subject (every digest
of that subject must match). Image-specific checks (predicate type,
repository) are the caller's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from pullguard.services.signature import certs, dsse, policy, rekor
from pullguard.services.signature.backend import BundleFailure
from pullguard.services.signature.identity import CertIdentity, first_match
from pullguard.services.signature.keys import key_matches
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict
from pullguard.services.signature.trust import Trust

MEDIA_TYPE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
MEDIA_TYPES = frozenset(
    {
        MEDIA_TYPE_V03,
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
MAX_TLOG_ENTRIES = 32
MAX_TIMESTAMPS = 32


class BundleRejected(Exception):
    """The bundle does not verify; ``code`` is the finding code."""

    def __init__(self, code: str, message: str, signer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.signer = signer


@dataclass(frozen=True)
class ArtifactRef:
    """What the bundle must be about: a digest, and the content when at hand."""

    digest: str
    content: bytes | None = None

    @property
    def sha256(self) -> bytes:
        algorithm, _, hexdigest = self.digest.partition(":")
        if algorithm != "sha256":
            raise BundleRejected(
                policy.WRONG_DIGEST, f"bundles sign sha256 digests, got {algorithm[:10]}"
            )
        return bytes.fromhex(hexdigest)


@dataclass(frozen=True)
class VerifiedBundle:
    signer: str
    #: "message" or "dsse".
    kind: str
    #: "key" or "keyless".
    signer_kind: str
    tlog: str
    statement: dsse.Statement | None = None
    subject: dsse.Subject | None = None


def verify_bundle(data: bytes, artifact: ArtifactRef, trust: Trust) -> VerifiedBundle:
    """Verify ``data`` (bundle JSON) for ``artifact`` under ``trust``; raise BundleRejected."""
    document = _preparse(data)
    material = document["verificationMaterial"]
    if "publicKey" in material:
        verified = _key_bundle(data, document, artifact, trust)
    else:
        verified = _certificate_bundle(data, artifact, trust)
    if verified.kind == "dsse":
        return _bind_statement(verified, artifact)
    return verified


def _preparse(data: bytes) -> dict[str, Any]:
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise BundleRejected(policy.BUNDLE_INVALID, f"bundle is not strict JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BundleRejected(policy.BUNDLE_INVALID, "bundle is not a JSON object")
    media_type = document.get("mediaType")
    if media_type not in MEDIA_TYPES:
        raise BundleRejected(
            policy.BUNDLE_INVALID, f"unknown bundle media type {str(media_type)[:80]!r}"
        )
    material = document.get("verificationMaterial")
    if not isinstance(material, dict):
        raise BundleRejected(policy.BUNDLE_INVALID, "bundle has no verificationMaterial")
    kinds = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in material]
    if len(kinds) != 1:
        raise BundleRejected(
            policy.BUNDLE_INVALID,
            f"bundle must carry exactly one of publicKey, x509CertificateChain or certificate,"
            f" got {', '.join(kinds) or 'none'}",
        )
    entries = material.get("tlogEntries", [])
    if not isinstance(entries, list) or len(entries) > MAX_TLOG_ENTRIES:
        raise BundleRejected(
            policy.BUNDLE_INVALID, f"bundle must list at most {MAX_TLOG_ENTRIES} log entries"
        )
    timestamps = (material.get("timestampVerificationData") or {}).get("rfc3161Timestamps", [])
    if not isinstance(timestamps, list) or len(timestamps) > MAX_TIMESTAMPS:
        raise BundleRejected(
            policy.BUNDLE_INVALID, f"bundle must hold at most {MAX_TIMESTAMPS} timestamps"
        )
    contents = [k for k in ("messageSignature", "dsseEnvelope") if k in document]
    if len(contents) != 1:
        raise BundleRejected(
            policy.BUNDLE_INVALID, "bundle must hold exactly one messageSignature or dsseEnvelope"
        )
    return document


def _key_bundle(
    data: bytes, document: dict[str, Any], artifact: ArtifactRef, trust: Trust
) -> VerifiedBundle:
    if not trust.keys:
        raise BundleRejected(
            policy.UNTRUSTED_KEY, "bundle is signed with a key and the rule names no key"
        )
    if "messageSignature" in document:
        kind = "message"
        content = document["messageSignature"]
        if not isinstance(content, dict):
            raise BundleRejected(policy.BUNDLE_INVALID, "messageSignature is not an object")
        signature = _b64(content.get("signature"), "messageSignature.signature")
        digest = artifact.sha256
        _check_message_digest(content.get("messageDigest"), digest)
        key = next((k for k in trust.keys if k.verifies_digest(signature, digest)), None)
        payload_sha256 = signed_sha256 = digest.hex()
    else:
        kind = "dsse"
        try:
            envelope = dsse.envelope_from(document["dsseEnvelope"])
        except dsse.EnvelopeError as exc:
            raise BundleRejected(exc.code or policy.BUNDLE_INVALID, str(exc)) from None
        signature = envelope.signature
        key = next((k for k in trust.keys if k.verifies(signature, envelope.pae())), None)
        payload_sha256 = hashlib.sha256(envelope.payload).hexdigest()
        signed_sha256 = hashlib.sha256(envelope.pae()).hexdigest()
    if key is None:
        raise BundleRejected(policy.UNTRUSTED_KEY, "bundle signature verifies under no trusted key")
    binding = rekor.Binding(
        payload_sha256,
        signature,
        lambda blob: key_matches(key.fingerprint, blob),
        signed_sha256=signed_sha256,
    )
    tlog = _key_bundle_log(data, document, binding, trust, key.name)
    statement = None
    if kind == "dsse":
        statement = _statement(envelope, key.name)
    return VerifiedBundle(key.name, kind, "key", tlog, statement)


def _key_bundle_log(
    data: bytes, document: dict[str, Any], binding: rekor.Binding, trust: Trust, signer: str
) -> str:
    if not document["verificationMaterial"].get("tlogEntries"):
        if trust.rekor_required:
            raise BundleRejected(
                policy.TLOG_MISSING,
                "bundle has no transparency log entry and the rule requires one",
                signer,
            )
        return ""
    if trust.bundles is None:
        raise BundleRejected(policy.TLOG_INVALID, "no trusted root to check log entries with")
    try:
        entries = trust.bundles.verify_log_entries(data)
    except BundleFailure as exc:
        raise BundleRejected(exc.code, exc.message, signer) from None
    where = []
    for entry in entries:
        try:
            where.append(rekor.check_body(entry.body, binding))
        except rekor.TlogError as exc:
            raise BundleRejected(policy.TLOG_INVALID, str(exc), signer) from None
    return f"in transparency log ({', '.join(where)})"


def _certificate_bundle(data: bytes, artifact: ArtifactRef, trust: Trust) -> VerifiedBundle:
    if not trust.keyless:
        raise BundleRejected(
            policy.UNTRUSTED_KEY,
            "bundle is signed with a certificate and the rule names no keyless signer",
        )
    if trust.bundles is None or trust.root is None:
        raise BundleRejected(policy.UNTRUSTED_CERTIFICATE, "no trusted root for certificates")
    authorities = trust.root.authorities
    seen: list[str] = []

    def accept(certificate: certs.Certificate) -> str | None:
        try:
            issuer = certs.issuer_of(certificate) or _issuing_uri(certificate, authorities)
        except certs.CertificateError:
            return None
        identity = CertIdentity(issuer, certs.subjects_of(certificate))
        seen.append(identity.describe())
        signer = first_match(trust.keyless, identity)
        return signer.name if signer else None

    try:
        verified = trust.bundles.verify_certificate_bundle(data, artifact.sha256, accept)
    except BundleFailure as exc:
        message = exc.message
        if exc.code == policy.WRONG_IDENTITY and seen:
            expected = " or ".join(s.name for s in trust.keyless[:3])
            message = f"got certificate for {seen[-1]}, expected {expected}"
        raise BundleRejected(exc.code, message) from None
    statement = None
    if verified.kind == "dsse":
        envelope = dsse.Envelope(verified.payload_type, verified.payload, b"")
        statement = _statement(envelope, verified.signer)
    return VerifiedBundle(
        verified.signer, verified.kind, "keyless", "in transparency log", statement
    )


def _issuing_uri(certificate: certs.Certificate, authorities: tuple[certs.Authority, ...]) -> str:
    # A certificate without an OIDC issuer (own PKI): name the trusted CA
    # that issued it directly, as the legacy path does.
    for authority in authorities:
        for ca in authority.certificates:
            if certs.issued_by(certificate, ca):
                return authority.uri
    return ""


def _statement(envelope: dsse.Envelope, signer: str) -> dsse.Statement:
    try:
        return dsse.parse_statement(envelope)
    except dsse.EnvelopeError as exc:
        raise BundleRejected(exc.code or policy.INVALID, str(exc), signer) from None


def _bind_statement(verified: VerifiedBundle, artifact: ArtifactRef) -> VerifiedBundle:
    if verified.statement is None:
        raise BundleRejected(policy.INVALID, "DSSE bundle without a statement", verified.signer)
    subject = dsse.binds_digest(verified.statement, artifact.digest, artifact.content)
    if subject is None:
        raise BundleRejected(
            policy.SUBJECT_MISMATCH,
            f"statement names no subject with digest {artifact.digest}",
            verified.signer,
        )
    return VerifiedBundle(
        verified.signer,
        verified.kind,
        verified.signer_kind,
        verified.tlog,
        verified.statement,
        subject,
    )


def _check_message_digest(value: Any, digest: bytes) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or value.get("algorithm") != "SHA2_256":
        raise BundleRejected(policy.BUNDLE_INVALID, "messageDigest is not a SHA2_256 digest")
    if _b64(value.get("digest"), "messageDigest.digest") != digest:
        raise BundleRejected(
            policy.WRONG_DIGEST, "bundle message digest is not the artifact's digest"
        )


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BundleRejected(policy.BUNDLE_INVALID, f"{where} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleRejected(policy.BUNDLE_INVALID, f"{where} is not base64") from None
