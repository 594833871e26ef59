"""Admin tokens and roles (gateway.auth.tokens) and pull logins (gateway.auth.logins)."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from pullguard.gateway.auth import logins
from pullguard.gateway.auth.logins import Htpasswd, basic_credentials
from pullguard.gateway.auth.tokens import (
    LOCAL,
    Authorizer,
    bearer_token,
    challenge,
    entry_line,
    new_token,
    token_sha256,
)
from pullguard.gateway.cli import main
from pullguard.gateway.grpc_api import release_operator
from pullguard.services.runtime.config.access import AdminToken
from pullguard.services.runtime.errors import InvalidRequest, NotPermitted, Unauthenticated

ALICE, VIEWER = new_token(), new_token()
TOKENS = (
    AdminToken("alice", "operator", token_sha256(ALICE)),
    AdminToken("view.bot", "viewer", token_sha256(VIEWER)),
)


@pytest.mark.parametrize("action", ["read", "check"])
def test_a_viewer_reads(action: str) -> None:
    principal = Authorizer(TOKENS).authorize(f"Bearer {VIEWER}", action)
    assert (principal.name, principal.role, principal.verified) == ("view.bot", "viewer", True)


@pytest.mark.parametrize("action", ["admit", "release", "delete", "reevaluate"])
def test_a_viewer_may_not_change_anything(action: str) -> None:
    with pytest.raises(NotPermitted, match=f"view.bot is a viewer and may not {action}"):
        Authorizer(TOKENS).authorize(f"Bearer {VIEWER}", action)


@pytest.mark.parametrize("action", ["read", "check", "admit", "release", "delete", "reevaluate"])
def test_an_operator_may_do_everything(action: str) -> None:
    assert Authorizer(TOKENS).authorize(f"bearer  {ALICE} ", action).name == "alice"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        f"Basic {ALICE}",
        f"Bearer {ALICE}x",
        f"Bearer {ALICE} {ALICE}",
        "Bearer " + "x" * 2000,
    ],
    # The token is made per process: stable ids, so that parallel workers
    # collect the same tests.
    ids=["none", "empty", "no-token", "basic", "one-more-char", "twice", "too-long"],
)
def test_no_or_a_wrong_token_is_unauthenticated(authorization: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        Authorizer(TOKENS).authorize(authorization, "read")
    assert ALICE not in caught.value.message
    assert challenge(caught.value) == {"WWW-Authenticate": 'Bearer realm="pullguard"'}
    assert caught.value.http_status == 401 and caught.value.oci_code == "UNAUTHORIZED"


def test_every_entry_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = __import__("hmac").compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return bool(real(a, b))

    monkeypatch.setattr("pullguard.gateway.auth.tokens.hmac.compare_digest", counting)
    assert Authorizer(TOKENS).authorize(f"Bearer {ALICE}", "read").name == "alice"
    assert len(compared) == len(TOKENS)


def test_without_tokens_every_caller_is_the_unverified_local_operator() -> None:
    assert Authorizer(None).authorize(None, "release") is LOCAL
    assert not Authorizer(None).enabled and not LOCAL.verified


def test_http_helper_reads_the_authorization_header() -> None:
    authorizer = Authorizer(TOKENS)
    assert authorizer.http({"Authorization": f"Bearer {ALICE}"}, "delete").name == "alice"
    with pytest.raises(NotPermitted) as caught:
        authorizer.http({"Authorization": f"Bearer {VIEWER}"}, "delete")
    assert caught.value.http_status == 403 and challenge(caught.value) == {}
    with pytest.raises(Unauthenticated):
        authorizer.http({}, "read")


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("BEARER abc") == "abc"
    assert bearer_token("Bearer a b") is None


def test_the_release_operator_is_the_tokens_name() -> None:
    alice = Authorizer(TOKENS).authorize(f"Bearer {ALICE}", "release")
    assert release_operator(alice, "") == "alice"
    assert release_operator(alice, " alice ") == "alice"
    with pytest.raises(InvalidRequest, match="the operator recorded is the token's name"):
        release_operator(alice, "mallory")
    assert release_operator(LOCAL, "bob") == "bob (unverified: no admin tokens)"


def test_token_create_prints_the_token_once_and_its_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "create", "alice", "--role", "operator"]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert token.startswith("pgt_") and len(token) > 40
    assert line == entry_line("alice", "operator", token)
    assert line == f"- {{name: alice, role: operator, token_sha256: {token_sha256(token)}}}"
    assert main(["token", "create", "a:b", "--role", "viewer"]) == 2


# -- pull logins ---------------------------------------------------------------


@pytest.fixture
def htpasswd() -> Htpasswd:
    # $2y$, as htpasswd -B writes it.
    hashed = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).replace(b"$2b$", b"$2y$")
    return Htpasswd({"alice": hashed})


def test_a_right_password_logs_in(htpasswd: Htpasswd) -> None:
    assert htpasswd.verify("alice", "wonderland")
    assert htpasswd.verify("alice", "wonderland")  # remembered
    assert not htpasswd.verify("alice", "wonderland!")  # only that password is remembered
    assert not htpasswd.verify("alice", "")


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong"), ("alice", ""), ("bob", "wonderland"), ("alice", "x" * 100)],
)
def test_wrong_logins_are_refused(htpasswd: Htpasswd, user: str, password: str) -> None:
    assert not htpasswd.verify(user, password)


def test_an_unknown_user_costs_a_bcrypt_check_too(
    htpasswd: Htpasswd, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return bool(real(password, hashed))

    monkeypatch.setattr(logins.bcrypt, "checkpw", counting)
    assert not htpasswd.verify("nobody", "wonderland")
    assert not htpasswd.verify("alice", "wrong")
    assert len(checked) == 2
    # The dummy hash has the cost of the file's hashes: the same time for both.
    assert checked[0][3:7] == checked[1][3:7] == b"$04$"


def test_a_remembered_login_does_not_outlive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "p.htpasswd"
    path.write_text(f"alice:{bcrypt.hashpw(b'one', bcrypt.gensalt(4)).decode()}\n")
    htpasswd = Htpasswd({"alice": path.read_text().split(":", 1)[1].strip().encode()}, path)
    assert htpasswd.verify("alice", "one")
    path.write_text(f"alice:{bcrypt.hashpw(b'two', bcrypt.gensalt(4)).decode()}\n")
    htpasswd.reload()
    assert not htpasswd.verify("alice", "one")
    assert htpasswd.verify("alice", "two")


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials_parsing() -> None:
    assert basic_credentials(_basic("alice:pa:ss")) == ("alice", "pa:ss")
    assert basic_credentials(_basic("alice:")) == ("alice", "")
    for bad in (None, "", _basic("alice"), _basic(":pw"), "Basic !!!", "Bearer x"):
        assert basic_credentials(bad) is None
