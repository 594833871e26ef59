"""pullguard's signing key (gateway/attest/keys.py) and what it signs, judged by the real cosign.

Keys come from the real ``cosign generate-key-pair``; the signatures pullguard
makes are checked with ``cosign verify-blob`` and ``cosign verify-blob-attestation``
(offline, ``--insecure-ignore-tlog=true``), and a tampered payload must fail both.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.gateway.attest.attester import load_key
from pullguard.gateway.attest.documents import (
    PREDICATE_TYPE,
    attestation_attachment,
    sha256,
    signature_attachment,
)
from pullguard.gateway.attest.keys import AttestKeyError, SigningKey, load_signing_key
from pullguard.services.runtime.config import parse_config
from pullguard.services.runtime.errors import ConfigError
from tests.support.cosign import COSIGN_PASSWORD, cosign_binary, generate_key_pair

DIGEST = "sha256:" + "ab" * 32
UPSTREAMS = "upstreams: {lab: {url: 'http://127.0.0.1:5001', insecure: true}}\n"


@pytest.fixture(scope="module")
def cosign_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    return generate_key_pair(tmp_path_factory.mktemp("cosign-key"))


@pytest.fixture(scope="module")
def signing_key(cosign_pair: tuple[Path, Path]) -> SigningKey:
    return load_signing_key(cosign_pair[0], COSIGN_PASSWORD.encode())


def cosign(*arguments: str) -> subprocess.CompletedProcess[str]:
    binary = cosign_binary()
    assert binary is not None
    closed = "http://127.0.0.1:9"
    with tempfile.TemporaryDirectory(prefix="cosign-home-") as home:
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "HTTP_PROXY": closed,
            "HTTPS_PROXY": closed,
            "TUF_ROOT": str(Path(home) / "tuf"),
        }
        return subprocess.run(
            [str(binary), *arguments],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def test_cosign_key_decrypts_to_the_pair_cosign_made(
    cosign_pair: tuple[Path, Path], signing_key: SigningKey
) -> None:
    _, pub = cosign_pair
    assert signing_key.private.curve.name == "secp256r1"
    published = serialization.load_pem_public_key(pub.read_bytes())
    assert published.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == signing_key.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "PRIVATE" not in repr(signing_key) and str(cosign_pair[0]) in repr(signing_key)


def test_signature_verifies_with_cosign_and_a_tampered_payload_does_not(
    cosign_pair: tuple[Path, Path], signing_key: SigningKey, tmp_path: Path
) -> None:
    _, pub = cosign_pair
    attachment = signature_attachment(
        signing_key, "127.0.0.1:5002/lab/app", DIGEST, {"dev.pullguard.decision": "d1"}
    )
    layer = json.loads(attachment.manifest)["layers"][0]
    payload = attachment.blobs[layer["digest"]]
    signature = tmp_path / "payload.sig"
    signature.write_text(layer["annotations"]["dev.cosignproject.cosign/signature"])
    good = tmp_path / "payload.json"
    good.write_bytes(payload)
    arguments = ["verify-blob", "--key", str(pub), "--signature", str(signature)]
    arguments.append("--insecure-ignore-tlog=true")
    verified = cosign(*arguments, str(good))
    assert verified.returncode == 0, verified.stderr

    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(payload.replace(DIGEST.encode(), b"sha256:" + b"cd" * 32))
    refused = cosign(*arguments, str(tampered))
    assert refused.returncode != 0
    assert "invalid signature" in refused.stderr.lower(), refused.stderr


def test_attestation_verifies_with_cosign_and_a_tampered_statement_does_not(
    cosign_pair: tuple[Path, Path], signing_key: SigningKey, tmp_path: Path
) -> None:
    _, pub = cosign_pair
    # The subject is the manifest's digest: cosign hashes the blob it is given.
    manifest = b'{"schemaVersion":2}'
    subject = tmp_path / "manifest.json"
    subject.write_bytes(manifest)
    attachment = attestation_attachment(
        signing_key, "127.0.0.1:5002/lab/app", sha256(manifest), {"decision": {"id": "d1"}}
    )
    layer = json.loads(attachment.manifest)["layers"][0]
    envelope = json.loads(attachment.blobs[layer["digest"]])
    good = tmp_path / "envelope.json"
    good.write_text(json.dumps(envelope))
    arguments = ["verify-blob-attestation", "--key", str(pub), "--type", PREDICATE_TYPE]
    arguments.append("--insecure-ignore-tlog=true")
    verified = cosign(*arguments, "--signature", str(good), str(subject))
    assert verified.returncode == 0, verified.stderr

    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["decision"]["id"] = "forged"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(envelope))
    refused = cosign(*arguments, "--signature", str(tampered), str(subject))
    assert refused.returncode != 0, refused.stdout


def test_wrong_password_names_the_key_and_never_the_password(
    cosign_pair: tuple[Path, Path],
) -> None:
    key, _ = cosign_pair
    with pytest.raises(AttestKeyError) as raised:
        load_signing_key(key, b"not-the-password")
    assert str(key) in raised.value.message and "wrong password" in raised.value.message
    assert "not-the-password" not in raised.value.message
    with pytest.raises(AttestKeyError, match="no password"):
        load_signing_key(key, None)


def test_cosign1_pem_type_is_read_too(cosign_pair: tuple[Path, Path], tmp_path: Path) -> None:
    old = tmp_path / "cosign1.key"
    old.write_bytes(cosign_pair[0].read_bytes().replace(b"SIGSTORE", b"COSIGN"))
    assert load_signing_key(old, COSIGN_PASSWORD.encode()).private.curve.name == "secp256r1"


def _encrypted(tmp_path: Path, document: dict[str, object]) -> Path:
    body = base64.encodebytes(json.dumps(document).encode()).decode()
    path = tmp_path / "hostile.key"
    path.write_text(
        f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    return path


@pytest.mark.parametrize(
    ("kdf", "problem"),
    [
        ({"name": "scrypt", "params": {"N": 2**30, "r": 8, "p": 1}, "salt": ""}, "kdf.params.N"),
        ({"name": "scrypt", "params": {"N": 1000, "r": 8, "p": 1}, "salt": ""}, "power of two"),
        ({"name": "pbkdf2", "params": {"N": 2, "r": 8, "p": 1}, "salt": ""}, "kdf.name"),
        ({"name": "scrypt", "params": {"N": 2**20, "r": 32, "p": 16}, "salt": ""}, "memory"),
    ],
)
def test_hostile_kdf_parameters_are_refused_before_any_work(
    tmp_path: Path, kdf: dict[str, object], problem: str
) -> None:
    cipher = {"name": "nacl/secretbox", "nonce": base64.b64encode(bytes(24)).decode()}
    path = _encrypted(tmp_path, {"kdf": kdf, "cipher": cipher, "ciphertext": ""})
    with pytest.raises(AttestKeyError, match=problem):
        load_signing_key(path, b"x")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "no PEM block"),
        (b"x" * 70000, "larger than"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a cosign"),
        (b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n"
         b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "not base64 JSON"),
    ],
)  # fmt: skip
def test_files_that_are_no_key_are_refused_by_name(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(AttestKeyError, match=problem) as raised:
        load_signing_key(path, b"x")
    assert str(path) in raised.value.message


def test_only_ecdsa_p256_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "p384.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(AttestKeyError, match="P-256"):
        load_signing_key(path, None)


def test_config_reads_attest_and_start_up_fails_naming_the_key(
    cosign_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    key, _ = cosign_pair
    password = tmp_path / "password"
    password.write_text("hunter2-secret\n")
    text = f"{UPSTREAMS}attest: {{key: {key}, password_file: password}}\n"
    config = parse_config(text, "conf.yaml", tmp_path)
    assert config.attest is not None
    assert config.attest.password_file == tmp_path / "password"
    assert config.attest.mode == "tag"
    with pytest.raises(ConfigError) as raised:
        load_key(config)
    assert raised.value.message.startswith("conf.yaml: attest.key: ")
    assert str(key) in raised.value.message and "hunter2" not in raised.value.message
    password.unlink()
    with pytest.raises(ConfigError, match="attest.password_file: .*cannot read"):
        load_key(config)

    password.write_text(COSIGN_PASSWORD + "\n")
    assert load_key(config).private.curve.name == "secp256r1"


@pytest.mark.parametrize(
    ("attest", "problem"),
    [
        ("{}", "attest.key: is required"),
        ("{key: k, mode: sidecar}", "attest.mode"),
        ("{key: k, mode: referrers}", "referrers needs target kind registry"),
        ("{key: k, mode: both}", "both needs target kind registry"),
        ("{key: k, password_env: 'A B'}", "attest.password_env"),
        ("{key: k, password_env: A, password_file: f}", "not both"),
        ("{key: k, colour: blue}", "attest.colour: unknown key"),
    ],
)
def test_attest_config_errors_name_the_key(tmp_path: Path, attest: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(f"{UPSTREAMS}attest: {attest}\n", "conf.yaml", tmp_path)
