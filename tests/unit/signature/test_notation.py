"""Notation (Notary Project) signatures: the Notary Project's own envelopes pass,
and each check has an envelope made here that only that check refuses.

Levels are the trust policy's: integrity always enforced; authenticity,
authentic timestamp, expiry and revocation enforced or logged per level.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from pullguard.services.signature import policy
from pullguard.services.signature.notation import cbor
from pullguard.services.signature.notation import verify as notation
from pullguard.services.signature.notation.envelope import COSE, JWS, UNKNOWN_CRITICAL
from pullguard.services.signature.notation.verify import NotationTrust, Target, verify_notation
from tests.support.notation import CA, NOW, Signing, der, envelope, target

DATA = Path(__file__).resolve().parents[2] / "data" / "notation"
DIGEST = "sha256:" + "ab" * 32
TARGET = Target(DIGEST, "application/vnd.oci.image.manifest.v1+json", 100)
IDENTITY = "x509.subject: C=US, ST=WA, O=Acme, CN=Acme Signer"
BOTH = pytest.mark.parametrize("media_type", [JWS, COSE])

# The Notary Project's fixtures: what each envelope signs.
ALPINE = Target(
    "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0",
    "application/vnd.oci.image.manifest.v1+json",
    481,
)
STAMPED = Target(
    "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda",
    "application/vnd.docker.distribution.manifest.v2+json",
    528,
)


def trust(
    ca: CA,
    level: str = "strict",
    identities: tuple[str, ...] = (IDENTITY,),
    overrides: dict[str, str] | None = None,
    store: str = "ca",
    tsa: tuple[bytes, ...] = (),
) -> NotationTrust:
    stores = [(store, [der(ca.certificate)])]
    if tsa:
        stores.append(("tsa", list(tsa)))
    return NotationTrust.of(stores, identities, level, overrides or {})


def check(
    data: bytes, media_type: str, rule: NotationTrust, subject: Target = TARGET
) -> list[policy.SignatureCheck]:
    return verify_notation("referrer/layers[0]", media_type, data, subject, rule, NOW)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def signer(ca: CA) -> tuple[object, x509.Certificate]:
    return ca.issue()


def sign(
    media_type: str, ca: CA, signer: tuple[object, x509.Certificate], **changes: object
) -> bytes:
    key, leaf = signer
    chain = changes.pop("chain", [leaf, ca.certificate])
    signing = Signing(payload=changes.pop("payload", target(DIGEST)), **changes)  # type: ignore[arg-type]
    return envelope(media_type, key, chain, signing)  # type: ignore[arg-type]


# -- the Notary Project's own signatures ---------------------------------------------------


def _leaf_of(name: str) -> bytes:
    data = (DATA / name).read_bytes()
    return base64.b64decode(json.loads(data)["header"]["x5c"][0])


def _cert(name: str) -> bytes:
    raw = (DATA / name).read_bytes()
    if b"BEGIN" in raw:
        return x509.load_pem_x509_certificate(raw).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(raw).public_bytes(Encoding.DER)


@pytest.mark.parametrize(
    ("name", "media_type"), [("jws_signature.sig", JWS), ("cose_signature.sig", COSE)]
)
def test_notary_project_signatures_verify(name: str, media_type: str) -> None:
    rule = NotationTrust.of(
        [("ca", [_leaf_of("jws_signature.sig")])],
        ["x509.subject: C=US, ST=WA, O=Notary, CN=alpine"],
        "strict",
        {},
    )
    (result,) = check((DATA / name).read_bytes(), media_type, rule, ALPINE)
    assert result.accepted, result.reason
    assert result.signer == "notation:x509.subject: C=US, ST=WA, O=Notary, CN=alpine"


@pytest.mark.parametrize(
    ("name", "media_type"), [("jws_signature.sig", JWS), ("cose_signature.sig", COSE)]
)
def test_notary_project_signature_for_another_manifest_is_refused(
    name: str, media_type: str
) -> None:
    rule = NotationTrust.of([("ca", [_leaf_of("jws_signature.sig")])], ["*"], "audit", {})
    (result,) = check((DATA / name).read_bytes(), media_type, rule, TARGET)
    assert (result.accepted, result.code) == (False, policy.WRONG_DIGEST)


@pytest.mark.parametrize(
    ("name", "media_type"), [("jwsWithTimestamp.sig", JWS), ("coseWithTimestamp.sig", COSE)]
)
def test_notary_project_timestamps_verify_against_their_tsa(name: str, media_type: str) -> None:
    ca_store = [("ca", [_leaf_of("jwsWithTimestamp.sig")])]
    good = NotationTrust.of(
        [*ca_store, ("tsa", [_cert("globalsignRoot.cer")])], ["*"], "strict", {}
    )
    (result,) = check((DATA / name).read_bytes(), media_type, good, STAMPED)
    assert result.accepted, result.reason
    other = NotationTrust.of(
        [*ca_store, ("tsa", [_cert("DigiCertTSARootSHA384.cer")])], ["*"], "strict", {}
    )
    (result,) = check((DATA / name).read_bytes(), media_type, other, STAMPED)
    assert (result.accepted, result.code) == (False, notation.TIMESTAMP_INVALID)
    assert "does not verify" in result.reason


@pytest.mark.parametrize(
    ("name", "media_type", "words"),
    [
        ("timestampAfterNotAfter.sig", COSE, "expired at"),
        ("timestampBeforeNotBefore.sig", JWS, "valid only from"),
    ],
)
def test_a_chain_invalid_at_the_timestamp_is_refused(
    name: str, media_type: str, words: str
) -> None:
    """notation-go's fixtures: a good timestamp outside the certificate's validity."""
    data = (DATA / name).read_bytes()
    from pullguard.services.signature.notation.envelope import parse_envelope, parse_payload

    stated = parse_payload(parse_envelope(media_type, data).payload)
    subject = Target(stated["digest"], stated["mediaType"], stated["size"])
    leaf = parse_envelope(media_type, data).certificates[0]
    # authenticity logged, so that the timestamp is what decides
    rule = NotationTrust.of(
        [("ca", [leaf]), ("tsa", [_cert("globalsignRoot.cer")])],
        ["*"],
        "strict",
        {"authenticity": "log"},
    )
    (result,) = check(data, media_type, rule, subject)
    assert (result.accepted, result.code) == (False, policy.CERTIFICATE_EXPIRED), result
    assert "at the timestamp" in result.reason and words in result.reason


def test_a_timestamp_over_another_signature_is_refused() -> None:
    """The token's imprint must be the hash of this envelope's signature."""
    stamped = json.loads((DATA / "jwsWithTimestamp.sig").read_bytes())
    plain = json.loads((DATA / "jws_signature.sig").read_bytes())
    plain["header"]["io.cncf.notary.timestampSignature"] = stamped["header"][
        "io.cncf.notary.timestampSignature"
    ]
    rule = NotationTrust.of(
        [("ca", [_leaf_of("jws_signature.sig")]), ("tsa", [_cert("globalsignRoot.cer")])],
        ["*"],
        "strict",
        {},
    )
    (result,) = check(json.dumps(plain).encode(), JWS, rule, ALPINE)
    assert (result.accepted, result.code) == (False, notation.TIMESTAMP_INVALID)


# -- envelopes made here: integrity ------------------------------------------------------


@BOTH
def test_a_good_signature_is_accepted(media_type: str, ca: CA, signer: tuple) -> None:
    results = check(sign(media_type, ca, signer), media_type, trust(ca))
    assert [r.accepted for r in results] == [True], results
    assert results[0].signer == f"notation:{IDENTITY}"


@BOTH
@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_a_tampered_payload_is_invalid(media_type: str, key_type: str, ca: CA) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_type == "rsa"
        else None
    )
    pair = ca.issue(key=key)
    swapped = json.dumps(target("sha256:" + "ab" * 32, size=101)).encode()
    data = sign(media_type, ca, pair, swap_payload=swapped)
    (result,) = check(data, media_type, trust(ca, level="audit"))
    assert (result.accepted, result.code) == (False, policy.INVALID)
    assert "does not verify" in result.reason


@BOTH
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (target("sha256:" + "cd" * 32), policy.WRONG_DIGEST),
        (
            target(DIGEST, media_type="application/vnd.oci.image.index.v1+json"),
            notation.WRONG_TARGET,
        ),
        (target(DIGEST, size=99), notation.WRONG_TARGET),
    ],
    ids=["digest", "media-type", "size"],
)
def test_the_payload_must_name_this_manifest(
    media_type: str, payload: dict, code: str, ca: CA, signer: tuple
) -> None:
    data = sign(media_type, ca, signer, payload=payload)
    (result,) = check(data, media_type, trust(ca, level="audit"))
    assert (result.accepted, result.code) == (False, code)


@BOTH
def test_an_unknown_critical_header_is_invalid(media_type: str, ca: CA, signer: tuple) -> None:
    data = sign(
        media_type,
        ca,
        signer,
        headers={"io.cncf.notary.verificationPlugin": "com.example.plugin"},
        crit_extra=("io.cncf.notary.verificationPlugin",),
    )
    (result,) = check(data, media_type, trust(ca, level="audit"))
    assert (result.accepted, result.code) == (False, UNKNOWN_CRITICAL)


@BOTH
@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"headers": {"crit": ["io.cncf.notary.expiry"]}}, "crit"),
        (
            {"headers": {"crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"]}},
            "listed in crit but absent",
        ),
        (
            {
                "expiry": NOW + timedelta(days=1),
                "headers": {"crit": ["io.cncf.notary.signingScheme"]},
            },
            "not marked critical",
        ),
        ({"headers": {"cty": "application/json"}}, "content type"),
        ({"headers": {"io.cncf.notary.signingScheme": "notary.default.x509"}}, "signing scheme"),
        ({"headers": {"io.cncf.notary.signingTime": None}}, "signingTime"),
        ({"expiry": NOW - timedelta(days=1)}, "not after the signing time"),
    ],
    ids=[
        "crit-without-scheme",
        "crit-names-absent-header",
        "expiry-not-critical",
        "cty",
        "scheme",
        "no-signing-time",
        "expiry-before-signing",
    ],
)
def test_wrong_signed_headers_are_invalid(
    media_type: str, changes: dict, words: str, ca: CA, signer: tuple
) -> None:
    (result,) = check(sign(media_type, ca, signer, **changes), media_type, trust(ca, level="audit"))
    assert (result.accepted, result.code) == (False, policy.INVALID), result
    assert words in result.reason


def test_the_algorithm_must_be_the_one_the_key_calls_for(ca: CA) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pair = ca.issue(key=key)
    good = sign(JWS, ca, pair)
    assert check(good, JWS, trust(ca))[0].accepted
    (result,) = check(sign(JWS, ca, pair, alg="PS384"), JWS, trust(ca))
    assert (result.accepted, result.code) == (False, policy.INVALID)
    assert "does not match the signing key" in result.reason


@pytest.mark.parametrize(
    ("issue", "words"),
    [
        ({"ca": True}, "is a CA"),
        (
            {"usage": x509.KeyUsage(True, False, True, False, False, False, False, False, False)},
            "beyond signing",
        ),
        ({"eku": (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,)}, "clientAuth"),
    ],
    ids=["leaf-is-ca", "key-encipherment", "client-auth"],
)
def test_the_signing_certificate_must_be_fit_to_sign_code(issue: dict, words: str, ca: CA) -> None:
    pair = ca.issue(**issue)
    (result,) = check(sign(JWS, ca, pair), JWS, trust(ca, level="audit"))
    assert (result.accepted, result.code) == (False, policy.INVALID)
    assert words in result.reason


def test_the_chain_must_be_ordered_and_end_in_its_root(ca: CA, signer: tuple) -> None:
    _key, leaf = signer
    for chain, words in (
        ([ca.certificate, leaf], "self-signed but not last"),
        ([leaf], "not a self-signed root"),
        ([leaf, CA().certificate], "is not issued by"),
    ):
        (result,) = check(sign(JWS, ca, signer, chain=chain), JWS, trust(ca, level="audit"))
        assert (result.accepted, result.code) == (False, policy.INVALID), chain
        assert words in result.reason


# -- authenticity -----------------------------------------------------------------------


@BOTH
def test_a_chain_to_another_root_is_untrusted(media_type: str, ca: CA) -> None:
    other = CA("Other Root")
    data = sign(media_type, other, other.issue())
    (result,) = check(data, media_type, trust(ca))
    assert (result.accepted, result.code) == (False, policy.UNTRUSTED_CERTIFICATE)
    # audit logs authenticity: accepted, and the report says why it is doubtful.
    accepted, logged = check(data, media_type, trust(ca, level="audit"))
    assert accepted.accepted and not logged.accepted
    assert logged.code == policy.UNTRUSTED_CERTIFICATE and "logged" in logged.reason


def test_the_store_must_be_of_the_schemes_type(ca: CA, signer: tuple) -> None:
    data = sign(JWS, ca, signer, scheme="notary.x509.signingAuthority")
    (result,) = check(data, JWS, trust(ca))
    assert (result.accepted, result.code) == (False, policy.UNTRUSTED_CERTIFICATE)
    assert check(data, JWS, trust(ca, store="signingAuthority"))[0].accepted


@BOTH
def test_the_signer_must_be_a_trusted_identity(media_type: str, ca: CA, signer: tuple) -> None:
    data = sign(media_type, ca, signer)
    rule = trust(ca, identities=("x509.subject: O=Acme, CN=Someone Else",))
    (result,) = check(data, media_type, rule)
    assert (result.accepted, result.code) == (False, policy.WRONG_IDENTITY)
    assert check(data, media_type, trust(ca, identities=("x509.subject: CN=Acme Signer",)))[
        0
    ].accepted
    assert check(data, media_type, trust(ca, identities=("*",)))[0].accepted


@BOTH
def test_a_signing_time_outside_the_certificate_validity_is_refused(
    media_type: str, ca: CA, signer: tuple
) -> None:
    data = sign(media_type, ca, signer, signing_time=NOW - timedelta(days=10))
    (result,) = check(data, media_type, trust(ca))
    assert (result.accepted, result.code) == (False, policy.CERTIFICATE_EXPIRED)
    assert "at the signing time" in result.reason


# -- authentic timestamp, expiry, revocation ------------------------------------------------


@BOTH
def test_an_expired_certificate_without_timestamp_fails_strict_and_is_logged_permissive(
    media_type: str,
) -> None:
    ca = CA(not_before=NOW - timedelta(days=400))
    pair = ca.issue(not_before=NOW - timedelta(days=300), not_after=NOW - timedelta(days=30))
    data = sign(media_type, ca, pair, signing_time=NOW - timedelta(days=100))
    (result,) = check(data, media_type, trust(ca))
    assert (result.accepted, result.code) == (False, policy.CERTIFICATE_EXPIRED)
    assert "must be valid now" in result.reason
    accepted, logged = check(data, media_type, trust(ca, level="permissive"))
    assert accepted.accepted and logged.code == policy.CERTIFICATE_EXPIRED


def test_a_tsa_store_requires_a_timestamp(ca: CA, signer: tuple) -> None:
    rule = trust(ca, tsa=(_cert("globalsignRoot.cer"),))
    (result,) = check(sign(JWS, ca, signer), JWS, rule)
    assert (result.accepted, result.code) == (False, notation.TIMESTAMP_INVALID)
    assert "no timestamp" in result.reason


@BOTH
def test_an_expired_signature_fails_strict_and_is_logged_permissive(
    media_type: str, ca: CA, signer: tuple
) -> None:
    """THREATS G-13: an old signature replayed for a rolled-back image."""
    data = sign(
        media_type,
        ca,
        signer,
        signing_time=NOW - timedelta(hours=20),
        expiry=NOW - timedelta(hours=1),
    )
    (result,) = check(data, media_type, trust(ca))
    assert (result.accepted, result.code) == (False, notation.EXPIRED)
    accepted, logged = check(data, media_type, trust(ca, level="permissive"))
    assert accepted.accepted and logged.code == notation.EXPIRED
    overridden = trust(ca, level="permissive", overrides={"expiry": "enforce"})
    assert check(data, media_type, overridden)[0].code == notation.EXPIRED
    future = sign(media_type, ca, signer, expiry=NOW + timedelta(days=1))
    assert [r.accepted for r in check(future, media_type, trust(ca))] == [True]


def test_revocation_endpoints_are_unknown_offline(ca: CA) -> None:
    pair = ca.issue(crl="http://crl.example/acme.crl")
    data = sign(JWS, ca, pair)
    (result,) = check(data, JWS, trust(ca))
    assert (result.accepted, result.code) == (False, notation.REVOCATION_UNKNOWN)
    accepted, logged = check(data, JWS, trust(ca, overrides={"revocation": "log"}))
    assert accepted.accepted and logged.code == notation.REVOCATION_UNKNOWN
    assert [r.accepted for r in check(data, JWS, trust(ca, overrides={"revocation": "skip"}))] == [
        True
    ]


# -- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xd2\x9f\xff",  # indefinite-length array
        b"\xd2\x84\x40\xa0\x40\x40\x00",  # trailing byte
        b"\xd2\x9b" + b"\xff" * 8,  # 2^64-1 items announced
        b"\x81" * 20 + b"\x00",  # nested too deep
        b"\xd2\x84\x40\xa2\x01\x01\x01\x01\x40\x40",  # duplicate map key
    ],
    ids=["indefinite", "trailing", "huge-count", "deep", "duplicate-key"],
)
def test_malformed_cose_is_invalid(data: bytes, ca: CA) -> None:
    (result,) = check(data, COSE, trust(ca))
    assert (result.accepted, result.code) == (False, policy.INVALID)


def test_too_many_certificates_are_refused(ca: CA, signer: tuple) -> None:
    _key, leaf = signer
    data = sign(JWS, ca, signer, chain=[leaf] * 11 + [ca.certificate])
    (result,) = check(data, JWS, trust(ca))
    assert (result.accepted, result.code) == (False, policy.INVALID)
    assert "more than 10 certificates" in result.reason


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x9f\x01\xff", "indefinite"),
        (b"\x01\x00", "after the item"),
        (b"\x9b" + b"\xff" * 8, "items announced"),
        (b"\x81" * 20 + b"\x00", "nested deeper"),
        (b"\xa2\x01\x01\x01\x01", "given twice"),
        (b"\xf9\x3c\x00", "floats"),
    ],
    ids=["indefinite", "trailing", "huge-count", "deep", "duplicate-key", "float"],
)
def test_the_cbor_reader_names_each_refusal(data: bytes, words: str) -> None:
    with pytest.raises(cbor.CborError, match=words):
        cbor.decode(data)
