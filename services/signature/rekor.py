"""Rekor promises in cosign's legacy annotations, checked offline (THREATS G-05, G-06, G-10).

cosign stores the transparency-log entry of a signature in the layer
annotation ``dev.sigstore.cosign/bundle``::

    {"SignedEntryTimestamp": "<base64 signature>",
     "Payload": {"body": "<base64 entry>", "integratedTime": <unix seconds>,
                 "logIndex": <n>, "logID": "<hex SHA-256 of the log's key>"}}

The SET is the log's signature over the RFC 8785 canonical JSON of
``Payload`` (keys sorted: body, integratedTime, logID, logIndex), checked
with the key the trusted root gives for ``logID``, valid at
``integratedTime`` (:func:`verify_set`). A valid SET only proves that the
log saw *some* entry; :func:`check_body` then proves the entry is about
THIS signature: the payload's hash, the signature bytes and the key or
certificate must all be the ones being verified. Skipping that second step
is CVE-2022-36056 (any valid entry accepted) and CVE-2022-23649 (an
unrelated bundle pasted into the annotation).

Entry kinds understood: ``hashedrekord`` 0.0.1 (signatures), ``intoto``
0.0.1/0.0.2 and ``dsse`` 0.0.1 (attestations). Others are rejected.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pullguard.services.signature.keys import verify_with
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict
from pullguard.services.signature.trustroot import LogKey, TrustRoot

BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
#: Longest annotation read: an entry embeds a certificate, a few KiB.
MAX_ANNOTATION_CHARS = 256 * 1024
#: How far in the future an integrated time may lie (clock skew).
FUTURE_SKEW = timedelta(seconds=60)

_HEX64 = re.compile(r"[0-9a-f]{64}")

#: Is this PEM (from the entry) the verifier being checked?
SameVerifier = Callable[[bytes], bool]


class TlogError(ValueError):
    """The log promise is missing, invalid, or about something else."""


@dataclass(frozen=True)
class RekorPromise:
    """A parsed ``dev.sigstore.cosign/bundle`` annotation (not yet verified)."""

    signed_entry_timestamp: bytes
    body_text: str
    body: bytes
    integrated_time: int
    log_index: int
    log_id: bytes

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.integrated_time, UTC)

    def canonical(self) -> bytes:
        """RFC 8785 form of the signed payload (ASCII strings and integers only)."""
        return json.dumps(
            {
                "body": self.body_text,
                "integratedTime": self.integrated_time,
                "logID": self.log_id.hex(),
                "logIndex": self.log_index,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("ascii")


def parse_promise(text: str) -> RekorPromise:
    """Parse the annotation strictly; raise TlogError."""
    if len(text) > MAX_ANNOTATION_CHARS:
        raise TlogError(f"{BUNDLE_ANNOTATION} of {len(text)} characters is too long")
    try:
        document = loads_strict(text.encode("utf-8"))
    except (StrictJsonError, UnicodeEncodeError) as exc:
        raise TlogError(f"{BUNDLE_ANNOTATION} is not strict JSON: {exc}") from None
    top = _exact(document, "bundle", ("SignedEntryTimestamp", "Payload"))
    payload = _exact(top["Payload"], "Payload", ("body", "integratedTime", "logIndex", "logID"))
    body_text = payload["body"]
    if not isinstance(body_text, str):
        raise TlogError("Payload.body is not a string")
    integrated, index, log_id = (
        payload["integratedTime"],
        payload["logIndex"],
        payload["logID"],
    )
    if type(integrated) is not int or integrated < 0:
        raise TlogError(f"Payload.integratedTime is not a time, got {integrated!r}")
    if type(index) is not int or index < 0:
        raise TlogError(f"Payload.logIndex is not an index, got {index!r}")
    if not isinstance(log_id, str) or not _HEX64.fullmatch(log_id):
        raise TlogError("Payload.logID is not 64 lowercase hex digits")
    return RekorPromise(
        signed_entry_timestamp=_b64(top["SignedEntryTimestamp"], "SignedEntryTimestamp"),
        body_text=body_text,
        body=_b64(body_text, "Payload.body"),
        integrated_time=integrated,
        log_index=index,
        log_id=bytes.fromhex(log_id),
    )


def verify_set(promise: RekorPromise, root: TrustRoot, now: datetime) -> LogKey:
    """Check the SET against the trusted root's log key; returns the log."""
    log = root.log(promise.log_id)
    if log is None:
        raise TlogError(f"log {promise.log_id.hex()[:16]}... is not in the trusted root")
    when = promise.time
    if when > now + FUTURE_SKEW:
        raise TlogError(f"integrated time {when:%Y-%m-%dT%H:%M:%SZ} is in the future")
    if not log.valid_at(when):
        raise TlogError(
            f"log key of {log.base_url or 'the log'} is not valid at {when:%Y-%m-%dT%H:%M:%SZ}"
        )
    if not verify_with(
        log.key, promise.signed_entry_timestamp, promise.canonical(), log.hash_name or "sha256"
    ):
        raise TlogError("signed entry timestamp does not verify under the log's key")
    return log


@dataclass(frozen=True)
class Binding:
    """What the entry must be about."""

    #: Hex SHA-256 of the signed payload (simple-signing payload or DSSE payload).
    payload_sha256: str
    #: The signature bytes (for DSSE: the envelope signature).
    signature: bytes
    same_verifier: SameVerifier
    #: Hex SHA-256 of exactly the signed bytes when they differ from the
    #: payload (DSSE: the PAE), for Rekor v2 entries, which record that.
    signed_sha256: str = ""


def check_body(body: bytes, binding: Binding) -> str:
    """Raise TlogError unless the entry binds ``binding``; returns "kind/version"."""
    try:
        entry = loads_strict(body)
    except StrictJsonError as exc:
        raise TlogError(f"log entry is not strict JSON: {exc}") from None
    if not isinstance(entry, dict):
        raise TlogError("log entry is not an object")
    kind, version = entry.get("kind"), entry.get("apiVersion")
    spec = entry.get("spec")
    if not isinstance(spec, dict):
        raise TlogError("log entry has no spec")
    label = f"{str(kind)[:30]}/{str(version)[:10]}"
    if (kind, version) == ("hashedrekord", "0.0.1"):
        _hashedrekord(spec, binding)
    elif (kind, version) == ("hashedrekord", "0.0.2"):
        _hashedrekord_v2(spec, binding)
    elif (kind, version) == ("intoto", "0.0.1"):
        _intoto_v1(spec, binding)
    elif (kind, version) == ("intoto", "0.0.2"):
        _intoto_v2(spec, binding)
    elif (kind, version) == ("dsse", "0.0.1"):
        _dsse(spec, binding)
    else:
        raise TlogError(f"log entry kind {label} is not supported")
    return label


def _hashedrekord(spec: dict[str, Any], binding: Binding) -> None:
    data = _get(spec, "data", "hash")
    _same_hash(data, binding.payload_sha256, "hashedrekord data")
    signature = _get(spec, "signature")
    if _b64(signature.get("content"), "signature.content") != binding.signature:
        raise TlogError("log entry signature is not this signature")
    _same_verifier(_get(signature, "publicKey").get("content"), binding)


def _hashedrekord_v2(spec: dict[str, Any], binding: Binding) -> None:
    # Rekor v2 (rekor-v2-spec 6.1): the digest of the signed bytes and a
    # verifier given as a DER key or certificate.
    record = _get(spec, "hashedRekordV002")
    data = _get(record, "data")
    expected = bytes.fromhex(binding.signed_sha256 or binding.payload_sha256)
    if data.get("algorithm") != "SHA2_256" or _b64(data.get("digest"), "data.digest") != expected:
        raise TlogError("hashedrekord data digest is not this payload's")
    signature = _get(record, "signature")
    if _b64(signature.get("content"), "signature.content") != binding.signature:
        raise TlogError("log entry signature is not this signature")
    verifier = _get(signature, "verifier")
    material = verifier.get("publicKey") or verifier.get("x509Certificate")
    if not isinstance(material, dict):
        raise TlogError("log entry has no verifier key or certificate")
    _same_verifier(material.get("rawBytes"), binding)


def _intoto_v1(spec: dict[str, Any], binding: Binding) -> None:
    _same_hash(_get(spec, "content", "payloadHash"), binding.payload_sha256, "intoto payload")
    _same_verifier(spec.get("publicKey"), binding)


def _intoto_v2(spec: dict[str, Any], binding: Binding) -> None:
    content = _get(spec, "content")
    _same_hash(_get(content, "payloadHash"), binding.payload_sha256, "intoto payload")
    signatures = _get(content, "envelope").get("signatures")
    _one_signature(signatures, "sig", "publicKey", binding, double_encoded=True)


def _dsse(spec: dict[str, Any], binding: Binding) -> None:
    _same_hash(_get(spec, "payloadHash"), binding.payload_sha256, "dsse payload")
    _one_signature(spec.get("signatures"), "signature", "verifier", binding, double_encoded=False)


def _one_signature(
    signatures: Any, sig_key: str, key_key: str, binding: Binding, double_encoded: bool
) -> None:
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise TlogError("log entry must record exactly one signature")
    item = signatures[0]
    if not isinstance(item, dict):
        raise TlogError("log entry signature is not an object")
    recorded = _b64(item.get(sig_key), f"signatures[0].{sig_key}")
    if double_encoded:
        recorded = _b64(recorded.decode("ascii", errors="replace"), "signature")
    if recorded != binding.signature:
        raise TlogError("log entry signature is not this signature")
    _same_verifier(item.get(key_key), binding)


def _same_hash(value: dict[str, Any], expected_hex: str, what: str) -> None:
    if value.get("algorithm") != "sha256" or value.get("value") != expected_hex:
        raise TlogError(f"{what} hash {str(value.get('value'))[:70]} is not this payload's")


def _same_verifier(value: Any, binding: Binding) -> None:
    pem = _b64(value, "public key")
    if not binding.same_verifier(pem):
        raise TlogError("log entry key or certificate is not this signature's signer")


def _get(value: dict[str, Any], *path: str) -> dict[str, Any]:
    for name in path:
        value = value.get(name)  # type: ignore[assignment]
        if not isinstance(value, dict):
            raise TlogError(f"log entry has no {'.'.join(path)} object")
    return value


def _exact(value: Any, where: str, members: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(members):
        raise TlogError(f"{where} must have exactly the members {', '.join(members)}")
    return value


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise TlogError(f"{where} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TlogError(f"{where} is not base64") from None
