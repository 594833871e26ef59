"""Trusted keys: what loads, what verifies, what is refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from pullguard.services.signature.keys import (
    TrustMaterialError,
    load_key,
    load_trusted_keys,
)
from pullguard.services.signature.trust import Signer, identify
from tests.support.cosign import LocalSigner, make_trust

PAYLOAD = b'{"critical":{}}'


def pem_of(public_key: object) -> str:
    return public_key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.parametrize(
    ("kind", "label"), [("ecdsa", "ecdsa-secp256r1"), ("rsa", "rsa-2048"), ("ed25519", "ed25519")]
)
def test_each_supported_key_type_verifies_its_own_signature_only(kind: str, label: str) -> None:
    signer = LocalSigner("k.pub", kind)
    key = load_key("k.pub", signer.pem)
    assert key.kind == label
    signature = signer.sign(PAYLOAD)
    assert key.verifies(signature, PAYLOAD)
    assert not key.verifies(signature, PAYLOAD + b" ")
    assert not key.verifies(b"\x00" * len(signature), PAYLOAD)
    assert not key.verifies(b"", PAYLOAD)


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()])
def test_larger_nist_curves_verify_with_sha256_like_cosign(curve: ec.EllipticCurve) -> None:
    private = ec.generate_private_key(curve)
    key = load_key("p.pub", pem_of(private.public_key()))
    assert key.verifies(private.sign(PAYLOAD, ec.ECDSA(hashes.SHA256())), PAYLOAD)


def signer_of(signature: bytes, keys: list[LocalSigner], annotations: dict[str, str]) -> str:
    trust = make_trust(load_trusted_keys([(k.name, k.pem) for k in keys]))
    found = identify("here", PAYLOAD, signature, "00" * 32, annotations, trust)
    return found.name if isinstance(found, Signer) else ""


def test_g12_key_type_mismatch_does_not_verify() -> None:
    ecdsa, rsa_signer = LocalSigner("e.pub"), LocalSigner("r.pub", "rsa")
    assert signer_of(ecdsa.sign(PAYLOAD), [rsa_signer], {}) == ""


def test_identify_names_the_key_that_verifies() -> None:
    alice, bob = LocalSigner("alice.pub"), LocalSigner("bob.pub", "ed25519")
    assert signer_of(bob.sign(PAYLOAD), [alice, bob], {}) == "bob.pub"
    assert signer_of(alice.sign(PAYLOAD), [alice, bob], {}) == "alice.pub"
    assert signer_of(LocalSigner().sign(PAYLOAD), [alice, bob], {}) == ""


def test_g12_annotations_carry_no_trust() -> None:
    stranger = LocalSigner("stranger.pub")
    annotations = {"dev.sigstore.cosign/certificate": stranger.pem, "dev.sigstore.cosign/chain": ""}
    assert signer_of(stranger.sign(PAYLOAD), [LocalSigner("alice.pub")], annotations) == ""


def test_the_same_key_under_two_names_is_loaded_once() -> None:
    signer = LocalSigner()
    keys = load_trusted_keys([("a.pub", signer.pem), ("b.pub", signer.pem + "\n")])
    assert [k.name for k in keys] == ["a.pub"]


@pytest.mark.parametrize(
    "pem",
    [
        "",
        # Truncated: the header is right, the key is not.
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        "-----END PUBLIC KEY-----\n",
        "not a key",
        "-----BEGIN PUBLIC KEY-----\n" + "A" * 70_000 + "\n-----END PUBLIC KEY-----\n",
    ],
)
def test_unusable_pem_is_refused(pem: str) -> None:
    with pytest.raises(TrustMaterialError, match="k.pub"):
        load_key("k.pub", pem)


def test_weak_or_unsupported_keys_are_refused() -> None:
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(TrustMaterialError, match="1024-bit"):
        load_key("weak.pub", pem_of(weak_rsa))
    dsa_key = dsa.generate_private_key(key_size=2048).public_key()
    with pytest.raises(TrustMaterialError, match="expected an ECDSA, RSA or Ed25519"):
        load_key("dsa.pub", pem_of(dsa_key))
    koblitz = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(TrustMaterialError, match="secp256k1"):
        load_key("k1.pub", pem_of(koblitz))
