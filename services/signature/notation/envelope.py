"""Notary Project signature envelopes, JWS and COSE, read into one shape.

Two envelope media types reach here (``signature-envelope-jws.md``,
``signature-envelope-cose.md``):

- ``application/jose+json``: JWS JSON flattened serialization: ``payload``,
  ``protected`` (base64url JSON), ``header`` (``x5c``, signing agent,
  timestamp) and ``signature``; the signed bytes are
  ``protected "." payload`` as they appear in the document;
- ``application/cose``: a tagged COSE_Sign1 (tag 18) whose protected header
  map is its own byte string, the certificates under label 33 (x5chain);
  the signed bytes are the ``Sig_structure``
  ``["Signature1", protected, h'', payload]``.

Everything the signature covers is the protected header and the payload.
Its rules are checked here, before any key is touched: ``cty`` is the
Notary payload type, ``crit`` lists the signing scheme (and the expiry and
authentic signing time when present), every critical header is one this
verifier understands (an unknown one, a verification plugin included,
makes the signature invalid: we cannot honour what we do not know), the
signing scheme is ``notary.x509`` (with ``signingTime``) or
``notary.x509.signingAuthority`` (with ``authenticSigningTime``), and the
expiry is after the signing time. Unprotected headers are limited to the
three the specification names. :class:`EnvelopeError` carries the finding
code and the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pullguard.services.signature.notation import cbor
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict

JWS = "application/jose+json"
COSE = "application/cose"
ENVELOPE_TYPES = (JWS, COSE)
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"

SCHEME = "io.cncf.notary.signingScheme"
SIGNING_TIME = "io.cncf.notary.signingTime"
EXPIRY = "io.cncf.notary.expiry"
AUTHENTIC_SIGNING_TIME = "io.cncf.notary.authenticSigningTime"
SIGNING_AGENT = "io.cncf.notary.signingAgent"
TIMESTAMP = "io.cncf.notary.timestampSignature"
X509 = "notary.x509"
SIGNING_AUTHORITY = "notary.x509.signingAuthority"
#: The critical headers this verifier knows how to honour.
UNDERSTOOD_CRITICAL = frozenset({SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME})
#: Certificates in an x5c / x5chain; a real chain has three or four.
MAX_CERTIFICATES = 10

#: alg (JWS name, COSE number) -> hash name and key family.
ALGORITHMS: dict[str | int, tuple[str, str]] = {
    "PS256": ("sha256", "rsa"),
    "PS384": ("sha384", "rsa"),
    "PS512": ("sha512", "rsa"),
    "ES256": ("sha256", "ec"),
    "ES384": ("sha384", "ec"),
    "ES512": ("sha512", "ec"),
    -37: ("sha256", "rsa"),
    -38: ("sha384", "rsa"),
    -39: ("sha512", "rsa"),
    -7: ("sha256", "ec"),
    -35: ("sha384", "ec"),
    -36: ("sha512", "ec"),
}
_COSE_ALG, _COSE_CRIT, _COSE_CTY, _COSE_X5CHAIN = 1, 2, 3, 33

INVALID = "signature.invalid"
UNKNOWN_CRITICAL = "signature.notation_unknown_critical"


class EnvelopeError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Envelope:
    """What a Notation signature states, its signed headers checked."""

    media_type: str
    #: The algorithm as written (a JWS name or a COSE number).
    algorithm: str | int
    scheme: str
    #: signingTime (notary.x509) or authenticSigningTime (signingAuthority).
    signing_time: datetime
    expiry: datetime | None
    payload: bytes
    signed_bytes: bytes
    signature: bytes
    #: DER certificates, leaf first.
    certificates: tuple[bytes, ...]
    #: The RFC 3161 TimeStampToken countersigning ``signature``, if any.
    timestamp: bytes | None

    @property
    def hash_name(self) -> str:
        return ALGORITHMS[self.algorithm][0]

    @property
    def key_family(self) -> str:
        return ALGORITHMS[self.algorithm][1]


def parse_envelope(media_type: str, data: bytes) -> Envelope:
    """The envelope in ``data``; EnvelopeError naming the problem."""
    if media_type == JWS:
        return _jws(data)
    if media_type == COSE:
        return _cose(data)
    raise EnvelopeError(INVALID, f"got envelope type {media_type[:80]!r}, expected {JWS} or {COSE}")


def _b64url(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or not text.isascii() or "=" in text:
        raise EnvelopeError(INVALID, f"{what} is not unpadded base64url text")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EnvelopeError(INVALID, f"{what} is not base64url") from None
    # One spelling per value: no stray bits in the last character.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise EnvelopeError(INVALID, f"{what} is not canonical base64url")
    return raw


def _b64std(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or not text.isascii():
        raise EnvelopeError(INVALID, f"{what} is not base64 text")
    try:
        return binascii.a2b_base64(text.encode(), strict_mode=True)
    except binascii.Error:
        raise EnvelopeError(INVALID, f"{what} is not base64") from None


def _jws(data: bytes) -> Envelope:
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise EnvelopeError(INVALID, f"JWS envelope: {exc}") from None
    if not isinstance(document, dict):
        raise EnvelopeError(INVALID, "JWS envelope is not a JSON object")
    unknown = set(document) - {"payload", "protected", "header", "signature"}
    if unknown:
        raise EnvelopeError(
            INVALID,
            f"JWS envelope has member {sorted(unknown)[0][:60]!r}, expected the flattened form",
        )
    protected_text = document.get("protected")
    payload_text = document.get("payload")
    protected_raw = _b64url(protected_text, "protected")
    payload = _b64url(payload_text, "payload")
    signature = _b64url(document.get("signature"), "signature")
    try:
        protected = loads_strict(protected_raw)
    except StrictJsonError as exc:
        raise EnvelopeError(INVALID, f"protected header: {exc}") from None
    if not isinstance(protected, dict):
        raise EnvelopeError(INVALID, "protected header is not a JSON object")
    header = document.get("header")
    if not isinstance(header, dict):
        raise EnvelopeError(INVALID, "JWS envelope has no unprotected header object")
    _only(header, {"x5c", SIGNING_AGENT, TIMESTAMP}, "unprotected header")
    chain = header.get("x5c")
    if not isinstance(chain, list):
        raise EnvelopeError(INVALID, "unprotected header has no x5c list")
    certificates = tuple(
        _b64std(c, f"x5c[{i}]") for i, c in enumerate(chain[: MAX_CERTIFICATES + 1])
    )
    timestamp = _b64std(header[TIMESTAMP], TIMESTAMP) if TIMESTAMP in header else None
    algorithm = protected.get("alg")
    if not isinstance(algorithm, str):
        raise EnvelopeError(INVALID, "protected header alg is not a string")
    fields = _signed_fields(
        protected, protected.get("crit"), protected.get("cty"), algorithm, _rfc3339
    )
    return Envelope(
        media_type=JWS,
        algorithm=algorithm,
        scheme=fields[0],
        signing_time=fields[1],
        expiry=fields[2],
        payload=payload,
        signed_bytes=f"{protected_text}.{payload_text}".encode("ascii"),
        signature=signature,
        certificates=_chain(certificates),
        timestamp=timestamp,
    )


def _cose(data: bytes) -> Envelope:
    try:
        message = cbor.decode(data)
    except cbor.CborError as exc:
        raise EnvelopeError(INVALID, f"COSE envelope: {exc}") from None
    if not isinstance(message, cbor.Tag) or message.number != 18:
        raise EnvelopeError(INVALID, "COSE envelope is not a tagged COSE_Sign1 (tag 18)")
    body = message.value
    if not isinstance(body, list) or len(body) != 4:
        raise EnvelopeError(INVALID, "COSE_Sign1 is not an array of four")
    protected_raw, unprotected, payload, signature = body
    if not isinstance(protected_raw, bytes) or not isinstance(unprotected, dict):
        raise EnvelopeError(INVALID, "COSE_Sign1 headers are not a byte string and a map")
    if not isinstance(payload, bytes):
        raise EnvelopeError(INVALID, "COSE_Sign1 payload is detached or not a byte string")
    if not isinstance(signature, bytes):
        raise EnvelopeError(INVALID, "COSE_Sign1 signature is not a byte string")
    try:
        protected = cbor.decode(protected_raw)
    except cbor.CborError as exc:
        raise EnvelopeError(INVALID, f"COSE protected header: {exc}") from None
    if not isinstance(protected, dict):
        raise EnvelopeError(INVALID, "COSE protected header is not a map")
    _only(unprotected, {_COSE_X5CHAIN, SIGNING_AGENT, TIMESTAMP}, "unprotected header")
    chain = unprotected.get(_COSE_X5CHAIN)
    if isinstance(chain, bytes):
        chain = [chain]
    if not isinstance(chain, list) or not all(isinstance(c, bytes) for c in chain):
        raise EnvelopeError(INVALID, "unprotected header has no x5chain of byte strings")
    timestamp = unprotected.get(TIMESTAMP)
    if timestamp is not None and not isinstance(timestamp, bytes):
        raise EnvelopeError(INVALID, f"{TIMESTAMP} is not a byte string")
    algorithm = protected.get(_COSE_ALG)
    if not isinstance(algorithm, int) or isinstance(algorithm, bool):
        raise EnvelopeError(INVALID, "COSE protected header alg is not an integer")
    fields = _signed_fields(
        protected, protected.get(_COSE_CRIT), protected.get(_COSE_CTY), algorithm, _epoch
    )
    signed = cbor.encode(["Signature1", protected_raw, b"", payload])
    return Envelope(
        media_type=COSE,
        algorithm=algorithm,
        scheme=fields[0],
        signing_time=fields[1],
        expiry=fields[2],
        payload=payload,
        signed_bytes=signed,
        signature=signature,
        certificates=_chain(tuple(chain[: MAX_CERTIFICATES + 1])),
        timestamp=timestamp,
    )


def _only(header: dict[Any, Any], allowed: set[Any], what: str) -> None:
    for key in header:
        if key not in allowed:
            raise EnvelopeError(
                INVALID, f"{what} has {str(key)[:60]!r}, which the specification does not name"
            )


def _chain(certificates: tuple[bytes, ...]) -> tuple[bytes, ...]:
    if not certificates:
        raise EnvelopeError(INVALID, "the envelope carries no certificate")
    if len(certificates) > MAX_CERTIFICATES:
        raise EnvelopeError(INVALID, f"more than {MAX_CERTIFICATES} certificates in the envelope")
    return certificates


def _signed_fields(
    protected: dict[Any, Any], crit: Any, cty: Any, algorithm: str | int, read_time: Any
) -> tuple[str, datetime, datetime | None]:
    """(scheme, signing time, expiry) from a protected header, its rules checked."""
    if algorithm not in ALGORITHMS:
        raise EnvelopeError(
            INVALID, f"got alg {str(algorithm)[:40]!r}, expected one of PS/ES 256/384/512"
        )
    if cty != PAYLOAD_TYPE:
        raise EnvelopeError(INVALID, f"got content type {str(cty)[:80]!r}, expected {PAYLOAD_TYPE}")
    if not isinstance(crit, list) or not crit:
        raise EnvelopeError(INVALID, "protected header has no crit list")
    if len(set(map(repr, crit))) != len(crit):
        raise EnvelopeError(INVALID, "crit names a header twice")
    for name in crit:
        if name not in UNDERSTOOD_CRITICAL:
            raise EnvelopeError(
                UNKNOWN_CRITICAL,
                f"critical header {str(name)[:80]!r} is not understood; the signature is invalid",
            )
        if name not in protected:
            raise EnvelopeError(INVALID, f"critical header {name} is listed in crit but absent")
    for name in (SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME):
        if name in protected and name not in crit:
            raise EnvelopeError(INVALID, f"{name} is present but not marked critical")
    scheme = protected.get(SCHEME)
    if scheme == X509:
        if SIGNING_TIME not in protected or AUTHENTIC_SIGNING_TIME in protected:
            raise EnvelopeError(
                INVALID, f"{X509} needs {SIGNING_TIME} and no {AUTHENTIC_SIGNING_TIME}"
            )
        signing_time = read_time(protected[SIGNING_TIME], SIGNING_TIME)
    elif scheme == SIGNING_AUTHORITY:
        if AUTHENTIC_SIGNING_TIME not in protected:
            raise EnvelopeError(INVALID, f"{SIGNING_AUTHORITY} needs {AUTHENTIC_SIGNING_TIME}")
        signing_time = read_time(protected[AUTHENTIC_SIGNING_TIME], AUTHENTIC_SIGNING_TIME)
    else:
        raise EnvelopeError(
            INVALID,
            f"got signing scheme {str(scheme)[:60]!r}, expected {X509} or {SIGNING_AUTHORITY}",
        )
    expiry = read_time(protected[EXPIRY], EXPIRY) if EXPIRY in protected else None
    if expiry is not None and expiry <= signing_time:
        raise EnvelopeError(INVALID, f"expiry {expiry.isoformat()} is not after the signing time")
    return scheme, signing_time, expiry


def _rfc3339(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40 or "T" not in value:
        raise EnvelopeError(INVALID, f"{what} is not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EnvelopeError(INVALID, f"{what} {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise EnvelopeError(INVALID, f"{what} {value!r} has no time zone")
    return moment.astimezone(UTC)


def _epoch(value: Any, what: str) -> datetime:
    # COSE times are tag 1 (epoch seconds); an integer, as notation writes them.
    if not isinstance(value, cbor.Tag) or value.number != 1 or type(value.value) is not int:
        raise EnvelopeError(INVALID, f"{what} is not a tag-1 epoch time")
    try:
        return datetime.fromtimestamp(value.value, UTC)
    except (OverflowError, OSError, ValueError):
        raise EnvelopeError(INVALID, f"{what} {value.value} is out of range") from None


def parse_payload(data: bytes) -> dict[str, Any]:
    """The payload's ``targetArtifact`` descriptor; EnvelopeError when malformed."""
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise EnvelopeError(INVALID, f"payload: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"targetArtifact"}:
        raise EnvelopeError(INVALID, 'payload is not {"targetArtifact": ...}')
    target = document["targetArtifact"]
    if not isinstance(target, dict):
        raise EnvelopeError(INVALID, "targetArtifact is not a descriptor")
    return target


def dumps(value: Any) -> bytes:
    """Compact JSON, as notation writes headers and payloads (tests build envelopes with it)."""
    return json.dumps(value, separators=(",", ":")).encode()
