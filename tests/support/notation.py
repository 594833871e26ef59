"""Notation signatures made in-process with ``cryptography``: a CA, a signer, envelopes.

Every knob a negative test needs is a keyword: the chain, the signing
time, the expiry, the protected headers (replace, add, drop), the payload
after signing. Envelopes are JWS (flattened JSON) or COSE_Sign1, written
as notation writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pullguard.services.signature.notation import cbor
from pullguard.services.signature.notation.envelope import COSE, JWS, PAYLOAD_TYPE

ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
NOW = datetime.now(UTC).replace(microsecond=0)


def _name(common_name: str, organization: str = "Acme") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment"
        " key_agreement key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


@dataclass
class CA:
    """A self-signed root CA (P-256)."""

    common_name: str = "Acme Root"
    not_before: datetime = NOW - timedelta(days=30)
    not_after: datetime = NOW + timedelta(days=3650)
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        name = _name(self.common_name)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str = "Acme Signer",
        key: Any = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        ca: bool = False,
        usage: x509.KeyUsage | None = None,
        eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CODE_SIGNING,),
        crl: str = "",
    ) -> tuple[Any, x509.Certificate]:
        """A leaf (key, certificate) signed by this CA."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - timedelta(days=1))
            .not_valid_after(not_after or NOW + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage or _usage(digital_signature=True), critical=True)
        )
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if crl:
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl)], None, None, None)
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def target(digest: str, media_type: str = OCI_MANIFEST, size: int = 100) -> dict[str, Any]:
    return {"targetArtifact": {"digest": digest, "mediaType": media_type, "size": size}}


def _alg(key: Any) -> tuple[str, int, hashes.HashAlgorithm]:
    if isinstance(key, rsa.RSAPrivateKey):
        table = {2048: ("PS256", -37, hashes.SHA256()), 3072: ("PS384", -38, hashes.SHA384())}
        return table[key.key_size]
    table_ec = {
        "secp256r1": ("ES256", -7, hashes.SHA256()),
        "secp384r1": ("ES384", -35, hashes.SHA384()),
    }
    return table_ec[key.curve.name]


def _sign(key: Any, data: bytes, digest: hashes.HashAlgorithm) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(
            data, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest
        )
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    width = (key.curve.key_size + 7) // 8
    return r.to_bytes(width, "big") + s.to_bytes(width, "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Signing:
    """What to sign and how; the defaults make a valid notary.x509 signature."""

    payload: dict[str, Any]
    scheme: str = "notary.x509"
    signing_time: datetime = NOW - timedelta(minutes=5)
    expiry: datetime | None = None
    #: Protected headers replaced (a value) or dropped (None), by JWS name.
    headers: dict[str, Any] = field(default_factory=dict)
    #: Extra names in crit.
    crit_extra: tuple[str, ...] = ()
    #: Payload bytes put in the envelope after signing (tampering).
    swap_payload: bytes | None = None
    alg: str | None = None


def _protected(signing: Signing, alg: str) -> dict[str, Any]:
    crit = ["io.cncf.notary.signingScheme"]
    header: dict[str, Any] = {"alg": alg, "cty": PAYLOAD_TYPE}
    header["io.cncf.notary.signingScheme"] = signing.scheme
    time_key = (
        "io.cncf.notary.authenticSigningTime"
        if signing.scheme == "notary.x509.signingAuthority"
        else "io.cncf.notary.signingTime"
    )
    if time_key.endswith("authenticSigningTime"):
        crit.append(time_key)
    header[time_key] = signing.signing_time
    if signing.expiry is not None:
        header["io.cncf.notary.expiry"] = signing.expiry
        crit.append("io.cncf.notary.expiry")
    crit.extend(signing.crit_extra)
    header["crit"] = crit
    for name, value in signing.headers.items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def jws(key: Any, chain: list[x509.Certificate], signing: Signing) -> bytes:
    """A JWS envelope (flattened JSON serialization)."""
    alg, _, digest = _alg(key)
    header = _protected(signing, signing.alg or alg)
    header = {
        k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v)
        for k, v in header.items()
    }
    protected = _b64url(json.dumps(header, separators=(",", ":")).encode())
    payload_raw = json.dumps(signing.payload, separators=(",", ":")).encode()
    payload = _b64url(payload_raw)
    signature = _sign(key, f"{protected}.{payload}".encode(), digest)
    if signing.swap_payload is not None:
        payload = _b64url(signing.swap_payload)
    document = {
        "payload": payload,
        "protected": protected,
        "header": {"x5c": [base64.b64encode(der(c)).decode() for c in chain]},
        "signature": _b64url(signature),
    }
    return json.dumps(document).encode()


def cose(key: Any, chain: list[x509.Certificate], signing: Signing) -> bytes:
    """A tagged COSE_Sign1 envelope."""
    _, number, digest = _alg(key)
    header = _protected(signing, "")
    labels = {"alg": 1, "crit": 2, "cty": 3}
    protected: dict[Any, Any] = {}
    for name, value in header.items():
        if name == "alg":
            value = number if not signing.alg else signing.alg
        if isinstance(value, datetime):
            value = cbor.Tag(1, int(value.timestamp()))
        protected[labels.get(name, name)] = value
    protected_raw = cbor.encode(protected)
    payload = json.dumps(signing.payload, separators=(",", ":")).encode()
    to_sign = cbor.encode(["Signature1", protected_raw, b"", payload])
    signature = _sign(key, to_sign, digest)
    if signing.swap_payload is not None:
        payload = signing.swap_payload
    unprotected = {33: [der(c) for c in chain]}
    return cbor.encode(cbor.Tag(18, [protected_raw, unprotected, payload, signature]))


def envelope(media_type: str, key: Any, chain: list[x509.Certificate], signing: Signing) -> bytes:
    return (jws if media_type == JWS else cose)(key, chain, signing)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_manifest(
    subject_digest: str, subject_size: int, envelope_bytes: bytes, media_type: str = JWS
) -> tuple[bytes, dict[str, bytes]]:
    """The referrer manifest notation pushes, and its blobs by digest."""
    empty = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY, "digest": sha256(empty), "size": len(empty)},
        "layers": [
            {
                "mediaType": media_type,
                "digest": sha256(envelope_bytes),
                "size": len(envelope_bytes),
            }
        ],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
        "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
    }
    return json.dumps(manifest).encode(), {
        sha256(empty): empty,
        sha256(envelope_bytes): envelope_bytes,
    }


__all__ = ["CA", "COSE", "JWS", "NOW", "Signing", "envelope", "signature_manifest", "target"]
