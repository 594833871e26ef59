"""The signature.notation rule key: read as trustpolicy.json says, every error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from pullguard.services.runtime.config import parse_config
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.protoconv import rule_to_proto
from tests.support.notation import CA, der

KEY = "policy.rules[0].signature.notation"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "truststore" / "x509" / "ca" / "acme"
    folder.mkdir(parents=True)
    (folder / "root.crt").write_bytes(der(CA().certificate))
    tsa = tmp_path / "truststore" / "x509" / "tsa" / "stamps"
    tsa.mkdir(parents=True)
    (tsa / "tsa.pem").write_bytes(CA("TSA Root").certificate.public_bytes(Encoding.PEM))
    return tmp_path


def _config(tmp_path: Path, notation: str, mode: str = "warn") -> str:
    return (
        "upstreams: {lab: {url: 'https://x'}}\n"
        f"policy: {{rules: [{{match: a, signature: {{mode: {mode}, notation: {notation}}}}}]}}"
    )


GOOD = (
    "{trust_store_dir: truststore, trust_stores: ['ca:acme', 'tsa:stamps'],"
    " trusted_identities: ['x509.subject: O=Acme, CN=Acme Signer'],"
    " signature_verification: {level: permissive, override: {expiry: enforce}}}"
)


def test_a_trust_policy_statement_is_read_and_travels_in_the_plan(store: Path) -> None:
    config = parse_config(_config(store, GOOD), "c.yaml", store)
    rule = config.policy.rules[0]
    notation = rule.signature.notation
    assert notation is not None
    assert [(s.type, s.name, len(s.certificates)) for s in notation.trust_stores] == [
        ("ca", "acme", 1),
        ("tsa", "stamps", 1),
    ]
    assert notation.level == "permissive" and notation.overrides == (("expiry", "enforce"),)
    wire = rule_to_proto(rule, 5, 4096).signature.notation
    assert wire.level == "permissive" and dict(wire.overrides) == {"expiry": "enforce"}
    assert list(wire.trusted_identities) == ["x509.subject: O=Acme, CN=Acme Signer"]
    assert wire.trust_stores[0].certificates[0].startswith(b"\x30")


@pytest.mark.parametrize(
    ("notation", "key", "problem"),
    [
        (
            "{trust_stores: ['ca:acme'], trusted_identities: ['*']}",
            f"{KEY}.trust_store_dir",
            "required",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:nope'], trusted_identities: ['*']}",
            f"{KEY}.trust_stores[0]",
            "cannot read",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['x509:acme'], trusted_identities: ['*']}",
            f"{KEY}.trust_stores[0]",
            "<ca|signingAuthority|tsa>:<name>",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['tsa:stamps'],"
            " trusted_identities: ['*']}",
            f"{KEY}.trust_stores",
            "at least one ca:",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme']}",
            f"{KEY}.trusted_identities",
            "at least one",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme'],"
            " trusted_identities: ['CN=x']}",
            f"{KEY}.trusted_identities[0]",
            "x509.subject",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme'],"
            " trusted_identities: ['x509.subject: CN=a, CN=b']}",
            f"{KEY}.trusted_identities[0]",
            "twice",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme'], trusted_identities: ['*'],"
            " signature_verification: skip}",
            f"{KEY}.signature_verification",
            "skip verifies nothing",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme'], trusted_identities: ['*'],"
            " signature_verification: {level: strict, override: {integrity: log}}}",
            f"{KEY}.signature_verification.override.integrity",
            "unknown validation",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme'], trusted_identities: ['*'],"
            " signature_verification: {level: strict, override: {expiry: maybe}}}",
            f"{KEY}.signature_verification.override.expiry",
            "enforce, log, skip",
        ),
        (
            "{trust_store_dir: truststore, trust_stores: ['ca:acme'], trusted_identities: ['*'],"
            " registryScopes: ['*']}",
            f"{KEY}.registryScopes",
            "unknown key",
        ),
    ],
)
def test_errors_name_the_key(store: Path, notation: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(store, notation), "c.yaml", store)
    assert info.value.key == key
    assert problem in str(info.value)


@pytest.mark.parametrize("level", ["permissive", "audit"])
def test_a_weaker_level_is_refused_under_enforce(store: Path, level: str) -> None:
    """THREATS G-15 (e): permissive logs an expired signature (G-13), audit an untrusted one."""
    notation = (
        "{trust_store_dir: truststore, trust_stores: ['ca:acme'], trusted_identities: ['*'],"
        f" signature_verification: {level}}}"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(_config(store, notation, mode="enforce"), "c.yaml", store)
    assert info.value.key == f"{KEY}.signature_verification"
    assert "mode: warn" in str(info.value)
    strict = notation.replace(level, "{level: strict, override: {revocation: log}}")
    assert parse_config(_config(store, strict, mode="enforce"), "c.yaml", store).policy.rules


@pytest.mark.parametrize("validation", ["authenticity", "authenticTimestamp", "expiry"])
def test_only_revocation_may_be_relaxed_under_enforce(store: Path, validation: str) -> None:
    """An override that logs expiry is G-13 by another name."""
    notation = (
        "{trust_store_dir: truststore, trust_stores: ['ca:acme'], trusted_identities: ['*'],"
        f" signature_verification: {{level: strict, override: {{{validation}: log}}}}}}"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(_config(store, notation, mode="enforce"), "c.yaml", store)
    assert info.value.key == f"{KEY}.signature_verification.override.{validation}"
    assert parse_config(_config(store, notation, mode="warn"), "c.yaml", store).policy.rules


def test_a_file_that_is_not_a_certificate_is_named(store: Path) -> None:
    (store / "truststore" / "x509" / "ca" / "acme" / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError) as info:
        parse_config(_config(store, GOOD), "c.yaml", store)
    assert info.value.key == f"{KEY.rsplit('.', 1)[0]}.notation.trust_stores[0]"
    assert "notes.txt is not a PEM or DER certificate" in str(info.value)


def test_provenance_signers_refuse_notation(store: Path) -> None:
    text = (
        "upstreams: {lab: {url: 'https://x'}}\n"
        "policy: {rules: [{match: a, provenance: {required: true,"
        f" signers: {{notation: {GOOD}}}}}}}]}}"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", store)
    assert info.value.key == "policy.rules[0].provenance.signers.notation"


def test_a_plan_with_an_unknown_level_cannot_be_used() -> None:
    """The signature service refuses a NotationPolicy it cannot apply (an error, never ALLOW)."""
    from pullguard.services.signature.notation.wire import notation_trust_from_proto
    from pullguard.v1 import common_pb2

    message = common_pb2.SignaturePolicy(
        notation=common_pb2.NotationPolicy(level="lenient", trusted_identities=["*"])
    )
    with pytest.raises(ConfigError) as info:
        notation_trust_from_proto(message, "signature")
    assert info.value.key == "signature.notation"
    assert notation_trust_from_proto(common_pb2.SignaturePolicy(), "signature") is None
