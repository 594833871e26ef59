"""A sigstore trusted root (``trusted_root.json``), read for legacy cosign signatures.

The trusted root names what this layer trusts for keyless signatures and
transparency-log promises: certificate authorities (Fulcio, or an own PKI),
transparency logs (Rekor) with their public keys, each with the time window
in which it may be relied on. Sigstore bundles are verified by the sigstore
library from the same text (``sigstore_adapter``); the legacy ``.sig`` path
(certificate and SET in layer annotations) reads it here, so both agree.

An own PKI (containers/image's ``dir-img-cosign-pki-valid``) is a trusted
root whose ``certificateAuthorities`` hold the PKI's root (and, optionally,
intermediates) with a ``uri`` naming it; its certificates carry no OIDC
issuer extension, so a rule names that ``uri`` as their issuer (see
``certs.identity_of``). It needs no ``tlogs`` when the rule's ``rekor`` is
``optional``.

The document is configuration, but it is parsed as strictly as any input:
unknown media type, missing windows, undecodable keys or certificates are
errors (:class:`TrustRootError`), so a typo never widens trust.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pullguard.services.signature.certs import Authority, CertificateError, load_der_certificate
from pullguard.services.signature.keys import TrustMaterialError, VerifyingKey, load_der_key
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict

MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
#: Largest trusted root read (the production one is 8 KiB).
MAX_BYTES = 16 * 1024 * 1024
#: Most entries per list.
MAX_ENTRIES = 64

#: Signature hash per sigstore ``PublicKeyDetails`` (Ed25519 has none).
KEY_HASHES = {
    "PKIX_ECDSA_P256_SHA_256": "sha256",
    "PKIX_ECDSA_P384_SHA_384": "sha384",
    "PKIX_ECDSA_P521_SHA_512": "sha512",
    "PKIX_ED25519": "",
    "PKCS1_RSA_PKCS1V5": "sha256",
    "PKIX_RSA_PKCS1V15_2048_SHA256": "sha256",
    "PKIX_RSA_PKCS1V15_3072_SHA256": "sha256",
    "PKIX_RSA_PKCS1V15_4096_SHA256": "sha256",
}


class TrustRootError(ValueError):
    """The trusted root cannot be used; the message says why."""


@dataclass(frozen=True)
class LogKey:
    """A transparency log's key, its log id (SHA-256 of the key's DER) and window."""

    base_url: str
    log_id: bytes
    key: VerifyingKey
    hash_name: str
    valid_from: datetime
    valid_until: datetime | None

    def valid_at(self, when: datetime) -> bool:
        return self.valid_from <= when and (self.valid_until is None or when <= self.valid_until)


@dataclass(frozen=True)
class TrustRoot:
    """The parts of a trusted root the legacy path uses."""

    #: SHA-256 (hex) of the document, to cache on and to name it in reports.
    sha256: str
    text: bytes
    tlogs: tuple[LogKey, ...]
    authorities: tuple[Authority, ...]
    #: Whether it names certificate transparency logs: then Fulcio
    #: certificates must carry a valid SCT from one of them.
    has_ctlogs: bool = False

    def log(self, log_id: bytes) -> LogKey | None:
        for log in self.tlogs:
            if log.log_id == log_id:
                return log
        return None


def parse_trust_root(data: bytes) -> TrustRoot:
    """Parse ``trusted_root.json`` bytes; raise TrustRootError."""
    if len(data) > MAX_BYTES:
        raise TrustRootError(f"trusted root of {len(data)} bytes is larger than {MAX_BYTES}")
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise TrustRootError(f"trusted root is not strict JSON: {exc}") from None
    if not isinstance(document, dict):
        raise TrustRootError("trusted root is not a JSON object")
    if document.get("mediaType") != MEDIA_TYPE:
        raise TrustRootError(
            f"got trusted root media type {str(document.get('mediaType'))[:80]!r},"
            f" expected {MEDIA_TYPE!r}"
        )
    tlogs = tuple(_log(item, f"tlogs[{i}]") for i, item in enumerate(_list(document, "tlogs")))
    authorities = tuple(
        _authority(item, f"certificateAuthorities[{i}]")
        for i, item in enumerate(_list(document, "certificateAuthorities"))
    )
    # ctlogs and timestampAuthorities are read by the sigstore library (for
    # bundles, and for the SCTs of legacy keyless certificates).
    ctlogs = _list(document, "ctlogs")
    _list(document, "timestampAuthorities")
    return TrustRoot(
        hashlib.sha256(data).hexdigest(), data, tlogs, authorities, has_ctlogs=bool(ctlogs)
    )


def _list(document: dict[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise TrustRootError(f"{name} is not a list of at most {MAX_ENTRIES} entries")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TrustRootError(f"{where} is not an object")
    return value


def _bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise TrustRootError(f"{where} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TrustRootError(f"{where} is not base64") from None


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise TrustRootError(f"{where} is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TrustRootError(f"{where} is not an RFC 3339 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise TrustRootError(f"{where} has no time zone")
    return parsed.astimezone(UTC)


def _window(value: Any, where: str) -> tuple[datetime, datetime | None]:
    window = _object(value, where)
    if "start" not in window:
        raise TrustRootError(f"{where}.start is missing")
    start = _time(window["start"], f"{where}.start")
    end = _time(window["end"], f"{where}.end") if window.get("end") is not None else None
    if end is not None and end < start:
        raise TrustRootError(f"{where} ends before it starts")
    return start, end


def _log(value: Any, where: str) -> LogKey:
    entry = _object(value, where)
    key_info = _object(entry.get("publicKey"), f"{where}.publicKey")
    details = key_info.get("keyDetails")
    if details not in KEY_HASHES:
        raise TrustRootError(f"{where}.publicKey.keyDetails {str(details)[:60]!r} is not supported")
    raw = _bytes(key_info.get("rawBytes"), f"{where}.publicKey.rawBytes")
    try:
        key = load_der_key(where, raw)
    except TrustMaterialError as exc:
        raise TrustRootError(f"{where}.publicKey: {exc.problem}") from None
    log_id = _bytes(_object(entry.get("logId"), f"{where}.logId").get("keyId"), f"{where}.logId")
    start, end = _window(key_info.get("validFor"), f"{where}.publicKey.validFor")
    base_url = entry.get("baseUrl", "")
    if not isinstance(base_url, str):
        raise TrustRootError(f"{where}.baseUrl is not a string")
    return LogKey(base_url, log_id, key, KEY_HASHES[details], start, end)


def _authority(value: Any, where: str) -> Authority:
    entry = _object(value, where)
    uri = entry.get("uri", "")
    if not isinstance(uri, str) or not uri:
        raise TrustRootError(f"{where}.uri must name the authority")
    chain = _object(entry.get("certChain"), f"{where}.certChain").get("certificates")
    if not isinstance(chain, list) or not 1 <= len(chain) <= 10:
        raise TrustRootError(f"{where}.certChain.certificates must hold 1 to 10 certificates")
    certificates = []
    for i, item in enumerate(chain):
        raw = _bytes(_object(item, f"{where}.certChain[{i}]").get("rawBytes"), f"{where}[{i}]")
        try:
            certificates.append(load_der_certificate(raw))
        except CertificateError as exc:
            raise TrustRootError(f"{where}.certChain[{i}]: {exc}") from None
    start, end = _window(entry.get("validFor"), f"{where}.validFor")
    return Authority(uri, tuple(certificates), start, end)
