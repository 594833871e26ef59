"""The ``sigstore`` library (4.5.1) behind a small interface: the only module that imports it.

What it is used for:

- the embedded SCT of a legacy keyless (Fulcio) certificate, against the
  trusted root's CT logs, as cosign checks by default;
- certificate (keyless) bundles v0.1-v0.3: ``Verifier.verify_artifact`` for a
  message signature over an artifact digest, ``Verifier.verify_dsse`` for a
  DSSE envelope, with the rule's identities as a ``VerificationPolicy``;
- the transparency-log entries of key-based bundles (which the library
  refuses as a whole: "expected certificate in bundle"): inclusion proof,
  signed checkpoint and SET, through its ``TransparencyLogEntry``;
- the production trusted root shipped in the wheel
  (:func:`production_trust_root`), read directly: ``Verifier.production(offline=True)``
  would also write a TUF cache under ``$HOME`` and prefer a cached file over
  the shipped one.

Nothing here opens a connection: the verifier is built from a trusted root
document; the Rekor client object it creates is never called.

Where 4.5.1 disagrees with the sigstore conformance suite, a subclass of
``Verifier`` changes exactly that (private methods, hence the version pin
checked at import):

- a certificate authority counts only inside its ``validFor`` window
  (4.5.1 pools every CA's certificates, so a certificate issued outside its
  CA's window passed: ``intoto-expired-certificate_fail``);
- ``intoto`` 0.0.2 log entries (cosign's attestations before Rekor's dsse
  type) are understood: their integrated time counts, and their body must
  record this envelope's payload hash, signature and certificate
  (``intoto-with-custom-trust-root``);
- a timestamp authority's window includes its end (TimeRange is a closed
  interval: ``trust-root-tsa-validity-end-inclusive``).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib import resources
from typing import cast
from urllib.parse import quote

import sigstore
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import Certificate, ExtendedKeyUsage
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import VerificationError as X509VerificationError
from rfc3161_client import TimeStampResponse, VerifierBuilder
from rfc3161_client import VerificationError as Rfc3161VerificationError
from sigstore import dsse as sigstore_dsse
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import CertificateAuthority, KeyringPurpose
from sigstore.errors import CertValidationError, VerificationError
from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, InvalidBundle, TransparencyLogEntry, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.bundle.v1 import Bundle as RawBundle
from sigstore_models.common.v1 import HashAlgorithm
from sigstore_models.trustroot import v1 as trustroot_v1

from pullguard.services.signature import certs, policy, rekor
from pullguard.services.signature.backend import (
    AcceptCertificate,
    BundleFailure,
    CertificateBundle,
    LogEntry,
)

SUPPORTED_VERSION = "4.5.1"
if sigstore.__version__ != SUPPORTED_VERSION:  # pragma: no cover - packaging guard
    raise ImportError(
        f"sigstore_adapter is written for sigstore {SUPPORTED_VERSION},"
        f" found {sigstore.__version__}"
    )

PRODUCTION_TUF_URL = "https://tuf-repo-cdn.sigstore.dev"

#: Exceptions the library raises for bad input (pydantic's ValidationError
#: is a ValueError). Anything else is a bug and surfaces as an error status.
_INPUT_ERRORS = (SigstoreError, ValueError, TypeError, KeyError)


class IdentityRejected(VerificationError):
    """Raised by the identity policy: the certificate names no accepted signer."""


def production_trust_root() -> bytes:
    """The Sigstore public-good trusted root shipped with sigstore-python."""
    folder = resources.files("sigstore._store").joinpath(quote(PRODUCTION_TUF_URL, safe=""))
    return folder.joinpath("trusted_root.json").read_bytes()


class _Policy:
    """A sigstore VerificationPolicy that asks pullguard's identity matcher."""

    def __init__(self, accept: AcceptCertificate) -> None:
        self._accept = accept
        self.signer = ""

    def verify(self, cert: Certificate) -> None:
        signer = self._accept(cert)
        if signer is None:
            raise IdentityRejected("certificate identity is not an accepted signer")
        self.signer = signer


class SigstoreTrust:
    """One trusted root, loaded into the library on first use and reused.

    Loading is lazy: a root the legacy path can use (an own PKI without
    ``tlogs`` or ``ctlogs``) need not satisfy the library until a bundle or
    an SCT needs it; then it fails as BundleFailure.
    """

    def __init__(self, trust_root_json: bytes) -> None:
        self._text = trust_root_json
        self._root: TrustedRoot | None = None
        self._verifier: _OfflineVerifier | None = None

    def _trusted_root(self) -> TrustedRoot:
        if self._root is None:
            try:
                self._root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(self._text))
            except _INPUT_ERRORS as exc:
                raise BundleFailure(policy.BUNDLE_INVALID, f"trusted root: {_short(exc)}") from None
        return self._root

    def _offline_verifier(self) -> _OfflineVerifier:
        if self._verifier is None:
            try:
                self._verifier = _OfflineVerifier(trusted_root=self._trusted_root())
            except _INPUT_ERRORS as exc:
                raise BundleFailure(policy.TLOG_INVALID, f"trusted root: {_short(exc)}") from None
        return self._verifier

    def verify_certificate_bundle(
        self,
        data: bytes,
        artifact_sha256: bytes,
        accept: AcceptCertificate,
    ) -> CertificateBundle:
        """Verify a certificate bundle; a message signature must sign ``artifact_sha256``.

        For a DSSE bundle the caller checks that the statement names the
        artifact; ``artifact_sha256`` is not used by the library then.
        """
        verifier = self._offline_verifier()
        identity = _Policy(accept)
        try:
            bundle = Bundle.from_json(data)
            if bundle._inner.dsse_envelope is not None:
                payload_type, payload = verifier.verify_dsse(bundle, identity)
                return CertificateBundle(
                    "dsse", bundle.signing_certificate, identity.signer, payload_type, payload
                )
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=artifact_sha256)
            verifier.verify_artifact(hashed, bundle, identity)
            return CertificateBundle("message", bundle.signing_certificate, identity.signer)
        except IdentityRejected as exc:
            raise BundleFailure(policy.WRONG_IDENTITY, str(exc)) from None
        except _INPUT_ERRORS as exc:
            raise BundleFailure(_classify(exc), _short(exc)) from None

    def verify_log_entries(self, data: bytes) -> list[LogEntry]:
        """Check every log entry of a (key-based) bundle; raise BundleFailure."""
        try:
            raw = RawBundle.from_json(data)
            entries = raw.verification_material.tlog_entries or []
            if not entries:
                return []
            keyring = self._trusted_root().rekor_keyring(KeyringPurpose.VERIFY)
            out = []
            for inner in entries:
                entry = TransparencyLogEntry(inner)
                entry._verify(keyring)
                out.append(
                    LogEntry(
                        inner.kind_version.kind,
                        inner.kind_version.version,
                        inner.canonicalized_body,
                        inner.integrated_time if inner.inclusion_promise else None,
                    )
                )
            return out
        except _INPUT_ERRORS as exc:
            raise BundleFailure(policy.TLOG_INVALID, _short(exc)) from None

    def verify_embedded_sct(self, certificate: Certificate, chain: list[Certificate]) -> None:
        """The certificate's embedded SCT, from a CT log of the trusted root (cosign's default).

        ``chain`` is the verified path above the certificate, issuer first.
        """
        try:
            keyring = self._trusted_root().ct_keyring(KeyringPurpose.VERIFY)
            verify_sct(certificate, chain, keyring)
        except BundleFailure as exc:
            raise BundleFailure(policy.UNTRUSTED_CERTIFICATE, exc.message) from None
        except _INPUT_ERRORS as exc:
            raise BundleFailure(
                policy.UNTRUSTED_CERTIFICATE, f"certificate transparency: {_short(exc)}"
            ) from None


def _classify(exc: BaseException) -> str:
    """The finding code for a library failure, from its type and wording."""
    text = str(exc).lower()
    if isinstance(exc, InvalidBundle) or isinstance(exc, ValueError):
        return policy.BUNDLE_INVALID
    if "expired at time of signing" in text:
        return policy.CERTIFICATE_EXPIRED
    if isinstance(exc, CertValidationError) or "sct" in text:
        if "not valid at validation time" in text:
            return policy.CERTIFICATE_EXPIRED
        return policy.UNTRUSTED_CERTIFICATE
    if "digest mismatch" in text:
        return policy.WRONG_DIGEST
    if "signature is invalid" in text or "dsse: invalid signature" in text:
        return policy.INVALID
    if any(
        word in text
        for word in (
            "log entry",
            "inclusion",
            "checkpoint",
            "set:",
            "transparency",
            "verified time",
        )
    ):
        return policy.TLOG_INVALID
    return policy.BUNDLE_INVALID


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class _OfflineVerifier(Verifier):
    """sigstore's Verifier with the three conformance fixes described above."""

    def _verify_signed_timestamp(
        self, timestamp_response: TimeStampResponse, message: bytes
    ) -> TimestampVerificationResult | None:
        for authority in self._trusted_root.get_timestamp_authorities():
            certificates = authority.certificates(allow_expired=True)
            if len(certificates) < 2:
                continue
            builder = (
                VerifierBuilder()
                .tsa_certificate(certificates[0])
                .add_root_certificate(certificates[-1])
            )
            for certificate in certificates[1:-1]:
                builder = builder.add_intermediate_certificate(certificate)
            try:
                builder.build().verify_message(timestamp_response, message)
            except Rfc3161VerificationError:
                continue
            generated = timestamp_response.tst_info.gen_time
            end = authority.validity_period_end
            if authority.validity_period_start <= generated and (end is None or generated <= end):
                return TimestampVerificationResult(
                    source=TimestampSource.TIMESTAMP_AUTHORITY, time=generated
                )
        return None

    def _establish_time(self, bundle: Bundle) -> list[TimestampVerificationResult]:
        verified: list[TimestampVerificationResult] = []
        if bundle.verification_material.timestamp_verification_data:
            if not self._trusted_root.get_timestamp_authorities():
                raise VerificationError(
                    "the bundle has a signed timestamp but the trusted root no timestamp authority"
                )
            verified.extend(self._verify_timestamp_authority(bundle))
        inner = bundle.log_entry._inner
        if inner.integrated_time and inner.inclusion_promise:
            kind = (inner.kind_version.kind, inner.kind_version.version)
            if kind not in (("dsse", "0.0.1"), ("hashedrekord", "0.0.1"), ("intoto", "0.0.2")):
                raise VerificationError(f"integrated time not supported for {kind[0]}/{kind[1]}")
            verified.append(
                TimestampVerificationResult(
                    source=TimestampSource.TRANSPARENCY_SERVICE,
                    time=datetime.fromtimestamp(inner.integrated_time, tz=UTC),
                )
            )
        return verified

    def _verify_chain_at_time(
        self, certificate: Certificate, timestamp_result: TimestampVerificationResult
    ) -> list[Certificate]:
        ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
            ExtendedKeyUsage, Criticality.NON_CRITICAL, None
        )
        ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
            ExtendedKeyUsage, Criticality.NON_CRITICAL, None
        )
        when = timestamp_result.time
        problems = []
        for inner in self._trusted_root._inner.certificate_authorities:
            authority = CertificateAuthority(inner)
            start, end = authority.validity_period_start, authority.validity_period_end
            if when < start or (end is not None and when > end):
                continue
            verifier = (
                PolicyBuilder()
                .store(Store(authority.certificates(allow_expired=True)))
                .time(when)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
                .build_client_verifier()
            )
            try:
                return verifier.verify(certificate, []).chain[1:]
            except X509VerificationError as exc:
                problems.append(str(exc))
        if not self._issued_by_a_trusted_authority(certificate):
            # The X.509 verifier reports the last candidate's failure, and it
            # checks a candidate's validity before its signature: a leaf from
            # another CA with the same issuer name reads as "not valid at
            # validation time". Say what is wrong: nobody we trust issued it.
            raise CertValidationError(
                "certificate is not issued by any certificate authority of the trusted root"
            )
        raise CertValidationError(
            "certificate does not chain to a certificate authority valid at "
            f"{when:%Y-%m-%dT%H:%M:%SZ}: {problems[0] if problems else 'none is valid then'}"
        )

    def _issued_by_a_trusted_authority(self, certificate: Certificate) -> bool:
        """Whether some certificate of the trusted root signed ``certificate``, at any time."""
        for inner in self._trusted_root._inner.certificate_authorities:
            for issuer in CertificateAuthority(inner).certificates(allow_expired=True):
                try:
                    certificate.verify_directly_issued_by(issuer)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return True
        return False

    def verify_dsse(self, bundle: Bundle, policy: object) -> tuple[str, bytes]:  # type: ignore[override]
        inner = bundle.log_entry._inner
        if (inner.kind_version.kind, inner.kind_version.version) != ("intoto", "0.0.2"):
            return super().verify_dsse(bundle, policy)  # type: ignore[arg-type]
        self._verify_common_signing_cert(bundle, policy)  # type: ignore[arg-type]
        envelope = bundle._dsse_envelope
        if envelope is None:
            raise VerificationError("bundle has no DSSE envelope")
        key = cast(ec.EllipticCurvePublicKey, bundle.signing_certificate.public_key())
        sigstore_dsse._verify(key, envelope)
        leaf_der = certs.der(bundle.signing_certificate)
        binding = rekor.Binding(
            payload_sha256=hashlib.sha256(envelope._inner.payload).hexdigest(),
            signature=envelope.signature,
            same_verifier=lambda blob: certs.certificate_matches(leaf_der, blob),
        )
        try:
            rekor.check_body(inner.canonicalized_body, binding)
        except rekor.TlogError as exc:
            raise VerificationError(f"transparency log entry: {exc}") from None
        return (envelope._inner.payload_type, envelope._inner.payload)
