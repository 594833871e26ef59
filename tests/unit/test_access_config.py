"""``tls``, ``auth.htpasswd`` and ``auth.admin_tokens``: what is accepted, what stops the start."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import bcrypt
import pytest

from pullguard.gateway.auth.exposure import check_exposure, is_loopback
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.config.access import parse_htpasswd
from pullguard.services.runtime.errors import ConfigError
from tests.support.configs import make_config
from tests.support.mtls import make_ca

SHA = "a" * 64


def _bcrypt(password: str, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def _error(tmp_path: Path, **overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, **overrides)
    return caught.value.message


def test_htpasswd_of_bcrypt_lines_loads(tmp_path: Path) -> None:
    # htpasswd -B writes $2y$; Python's bcrypt writes $2b$: both are bcrypt.
    text = f"# pullers\nalice:{_bcrypt('a').replace('$2b$', '$2y$')}\n\nbob:{_bcrypt('b')}\n"
    (tmp_path / "pullers.htpasswd").write_text(text)
    config = make_config(tmp_path, auth={"htpasswd": "pullers.htpasswd"})
    assert set(config.auth.users) == {"alice", "bob"}
    assert config.auth.htpasswd == tmp_path / "pullers.htpasswd"
    assert config.auth.admin_tokens is None


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ("alice:$apr1$xyz$0123456789abcdefghijkl", "MD5 (apr1) hash"),
        ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 hash"),
        ("alice:rl2fHRcEdPl8.", "crypt or plain-text password"),
        ("alice:secret", "crypt or plain-text password"),
        ("alice:$6$salt$hash", "crypt(3) hash"),
        ("alice:$2y$05$short", "malformed bcrypt hash"),
    ],
)
def test_htpasswd_refuses_every_hash_but_bcrypt(tmp_path: Path, entry: str, kind: str) -> None:
    (tmp_path / "pullers.htpasswd").write_text(f"bob:{_bcrypt('b')}\n{entry}\n")
    message = _error(tmp_path, auth={"htpasswd": "pullers.htpasswd"})
    assert "auth.htpasswd" in message
    assert f"pullers.htpasswd line 2: user 'alice' has a {kind}; only bcrypt" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no separator here\n", "line 1: not user:hash"),
        (f"alice:{_bcrypt('a')}\nalice:{_bcrypt('b')}\n", "line 2: user 'alice' again"),
    ],
)
def test_htpasswd_syntax_errors_name_the_line(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "p.htpasswd").write_text(text)
    assert problem in _error(tmp_path, auth={"htpasswd": "p.htpasswd"})


def test_missing_htpasswd_file_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, auth={"htpasswd": "nowhere.htpasswd"})
    assert "auth.htpasswd" in message and "cannot read" in message


def test_parse_htpasswd_is_what_a_reload_reads() -> None:
    assert parse_htpasswd("", "x") == {}
    with pytest.raises(ConfigError, match="only bcrypt"):
        parse_htpasswd("alice:plain\n", "x")


def _tokens(tmp_path: Path, text: str) -> Config:
    (tmp_path / "admins.yaml").write_text(text)
    return make_config(tmp_path, auth={"admin_tokens": "admins.yaml"})


def test_admin_tokens_load(tmp_path: Path) -> None:
    config = _tokens(
        tmp_path,
        f"- {{name: alice, role: operator, token_sha256: {SHA}}}\n"
        f"- {{name: view.bot, role: viewer, token_sha256: {'b' * 64}}}\n",
    )
    assert config.auth.admin_tokens is not None
    assert [(t.name, t.role) for t in config.auth.admin_tokens] == [
        ("alice", "operator"),
        ("view.bot", "viewer"),
    ]
    assert SHA not in repr(config.auth.admin_tokens)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[]", "auth.admin_tokens", "non-empty list"),
        ("{alice: x}", "auth.admin_tokens", "non-empty list"),
        (f"- {{role: viewer, token_sha256: {SHA}}}", "auth.admin_tokens[0].name", "non-empty"),
        (f"- {{name: 'a b', role: viewer, token_sha256: {SHA}}}", "[0].name", "must match"),
        (f"- {{name: a, role: admin, token_sha256: {SHA}}}", "[0].role", "viewer or operator"),
        ("- {name: a, role: viewer, token_sha256: abc}", "[0].token_sha256", "64 lowercase hex"),
        (
            f"- {{name: a, role: viewer, token_sha256: {SHA.upper()}}}",
            "[0].token_sha256",
            "64 lowercase hex",
        ),
        (f"- {{name: a, role: viewer, token: x, token_sha256: {SHA}}}", "[0].token", "unknown"),
        (
            f"- {{name: a, role: viewer, token_sha256: {SHA}}}\n"
            f"- {{name: a, role: operator, token_sha256: {'b' * 64}}}",
            "[1].name",
            "twice",
        ),
        (
            f"- {{name: a, role: viewer, token_sha256: {SHA}}}\n"
            f"- {{name: b, role: operator, token_sha256: {SHA}}}",
            "[1].token_sha256",
            "twice",
        ),
    ],
)
def test_admin_token_errors_name_the_entry(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    (tmp_path / "admins.yaml").write_text(text)
    message = _error(tmp_path, auth={"admin_tokens": "admins.yaml"})
    assert key in message and problem in message


def test_tls_loads_a_matching_pair_and_refuses_a_mismatch(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", "front CA")
    one, two = ca.issue("one"), ca.issue("two")
    config = make_config(tmp_path, tls={"certificate": str(one.certificate), "key": str(one.key)})
    assert config.tls is not None and config.tls.certificate == one.certificate
    message = _error(tmp_path, tls={"certificate": str(one.certificate), "key": str(two.key)})
    assert "tls" in message and "cannot load" in message
    assert "tls.key" in _error(tmp_path, tls={"certificate": str(one.certificate)})
    assert "unknown key" in _error(tmp_path, tls={"cert": "x", "certificate": "y", "key": "z"})


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:5050", True),
        ("127.5.0.1:5050", True),
        ("[::1]:5050", True),
        ("localhost:5050", True),
        ("unix:/run/pullguard/gateway.sock", True),
        ("0.0.0.0:5050", False),
        ("[::]:5050", False),
        ("10.0.0.5:5050", False),
        ("gateway.internal:5050", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_grpc_beyond_loopback_needs_admin_tokens(tmp_path: Path) -> None:
    config = make_config(tmp_path, grpc_listen="0.0.0.0:5050")
    with pytest.raises(ConfigError) as caught:
        check_exposure(config)
    assert "grpc_listen" in caught.value.message
    assert "0.0.0.0:5050 is beyond loopback" in caught.value.message
    assert "auth.admin_tokens" in caught.value.message
    assert check_exposure(replace(config, grpc_listen="127.0.0.1:5050")) == []
    with_tokens = _tokens(tmp_path, f"- {{name: a, role: viewer, token_sha256: {SHA}}}")
    (warning,) = check_exposure(replace(with_tokens, grpc_listen="0.0.0.0:5050"))
    assert "plaintext gRPC beyond loopback: admin tokens cross the network readable" in warning


def test_basic_auth_beyond_loopback_needs_tls(tmp_path: Path) -> None:
    (tmp_path / "p.htpasswd").write_text(f"alice:{_bcrypt('a')}\n")
    config = make_config(tmp_path, auth={"htpasswd": "p.htpasswd"}, listen="0.0.0.0:5000")
    with pytest.raises(ConfigError) as caught:
        check_exposure(config)
    assert "listen" in caught.value.message and "set tls" in caught.value.message
    check_exposure(replace(config, listen="127.0.0.1:5000"))
    ca = make_ca(tmp_path / "ca", "front CA").issue("front")
    tls = {"certificate": str(ca.certificate), "key": str(ca.key)}
    check_exposure(
        make_config(tmp_path, auth={"htpasswd": "p.htpasswd"}, listen="0.0.0.0:5000", tls=tls)
    )
