"""RFC 3161 timestamp countersignatures of Notation signatures, verified offline.

An envelope may carry a TimeStampToken (``io.cncf.notary.timestampSignature``)
whose message imprint is the hash of the envelope's signature bytes. When
the rule names a ``tsa`` trust store, the token must be there and verify:
its CMS signature by a TSA certificate chaining to that store at the
token's time, the TSA certificate's critical timeStamping EKU, and the
imprint equal to the hash of this signature. The time it proves is a range
(genTime ± accuracy); the signing chain must be valid over all of it.

``rfc3161_client`` (already installed with sigstore) reads and checks the
token; it takes a TimeStampResp, so the token is wrapped in one with status
``granted``. The wrapping is DER written here: SEQUENCE { SEQUENCE {
INTEGER 0 }, token }.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import rfc3161_client
from cryptography import x509

#: Largest token accepted; a real one with its chain is 6-8 KiB.
MAX_TOKEN_BYTES = 64 * 1024
_HASH_OIDS = {
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}


class TimestampError(ValueError):
    """The countersignature cannot be relied on; says why."""


@dataclass(frozen=True)
class Timestamp:
    earliest: datetime
    latest: datetime


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER item at ``at``."""
    if at + 2 > len(data):
        raise TimestampError("timestamp token is truncated")
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or at + count > len(data):
            raise TimestampError("timestamp token has a bad length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    if at + length > len(data):
        raise TimestampError("timestamp token is truncated")
    return tag, at, at + length


def _items(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, item start, value start, end) of each item between ``start`` and ``end``."""
    out = []
    while start < end:
        tag, value, stop = _tlv(data, start)
        out.append((tag, start, value, stop))
        start = stop
        if len(out) > 64:
            raise TimestampError("timestamp token has too many items")
    return out


def _sorted_certificates(token: bytes) -> bytes:
    """``token`` with its SignedData certificate SET in DER order.

    TSAs (DigiCert's, GlobalSign's) write the certificates unsorted, which
    Go reads and the DER-strict reader of rfc3161_client refuses. The set is
    outside what the TSA signed (signed attributes and content), so sorting
    it changes no signed byte; every certificate is kept.
    """
    _, info_start, info_end = _tlv(token, 0)  # ContentInfo
    parts = _items(token, info_start, info_end)
    if len(parts) != 2 or parts[1][0] != 0xA0:
        raise TimestampError("timestamp token is not a ContentInfo with content")
    _, sd_start, sd_end = _tlv(token, parts[1][2])  # SignedData SEQUENCE
    fields = _items(token, sd_start, sd_end)
    rebuilt = []
    for tag, start, value, stop in fields:
        if tag == 0xA0:
            members = sorted(token[a:b] for _, a, _, b in _items(token, value, stop))
            body = b"".join(members)
            rebuilt.append(b"\xa0" + _der_length(len(body)) + body)
        else:
            rebuilt.append(token[start:stop])
    signed_data = b"".join(rebuilt)
    signed_data = b"\x30" + _der_length(len(signed_data)) + signed_data
    explicit = b"\xa0" + _der_length(len(signed_data)) + signed_data
    info = token[parts[0][1] : parts[0][3]] + explicit
    return b"\x30" + _der_length(len(info)) + info


def _as_response(token: bytes) -> bytes:
    status = b"\x30\x03\x02\x01\x00"
    body = status + _sorted_certificates(token)
    return b"\x30" + _der_length(len(body)) + body


def verify_timestamp(token: bytes, signature: bytes, roots: Sequence[bytes]) -> Timestamp:
    """The time range ``token`` proves for ``signature``, under TSA ``roots``; TimestampError."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TimestampError(
            f"timestamp token of {len(token)} bytes, expected at most {MAX_TOKEN_BYTES}"
        )
    if not roots:
        raise TimestampError("the rule names no tsa trust store to verify the timestamp with")
    try:
        response = rfc3161_client.decode_timestamp_response(_as_response(token))
        info = response.tst_info
        algorithm = info.message_imprint.hash_algorithm.dotted_string
        gen_time = info.gen_time
    except (ValueError, TypeError) as exc:
        raise TimestampError(f"timestamp token does not parse: {str(exc)[:200]}") from None
    hasher = _HASH_OIDS.get(algorithm)
    if hasher is None:
        raise TimestampError(f"timestamp imprint uses hash {algorithm}, expected SHA-256/384/512")
    anchors = [x509.load_der_x509_certificate(der) for der in roots]
    verifier = rfc3161_client.VerifierBuilder(roots=anchors).build()
    try:
        verifier.verify(response, hasher(signature).digest())
    except (rfc3161_client.VerificationError, ValueError) as exc:
        raise TimestampError(f"timestamp does not verify: {str(exc)[:200]}") from None
    spread = timedelta()
    try:
        accuracy = info.accuracy
        spread = timedelta(
            seconds=accuracy.seconds or 0,
            milliseconds=accuracy.millis or 0,
            microseconds=accuracy.micros or 0,
        )
    except (ValueError, AttributeError):
        pass  # no accuracy stated: genTime is exact
    moment = gen_time if gen_time.tzinfo else gen_time.replace(tzinfo=UTC)
    return Timestamp(moment - spread, moment + spread)
