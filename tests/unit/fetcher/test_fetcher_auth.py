"""Challenge parsing, realm rules and token hygiene (T-08)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pullguard.services.fetcher import auth
from tests.support.configs import make_config


def test_parses_docker_hub_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    [challenge] = auth.parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


def test_quoted_values_keep_commas_and_escapes() -> None:
    header = (
        r'Bearer realm="https://r.example/t?a=1,b=2", scope="repository:a/b:pull,push", x="q\"uote"'
    )
    [challenge] = auth.parse_challenges(header)
    assert challenge.params["realm"] == "https://r.example/t?a=1,b=2"
    assert challenge.params["scope"] == "repository:a/b:pull,push"
    assert challenge.params["x"] == 'q"uote'


def test_several_challenges_and_bearer_preferred() -> None:
    header = 'Basic realm="registry", Bearer realm="https://auth.example/token",service=reg'
    challenges = auth.parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    chosen = auth.select_challenge([header])
    assert chosen is not None and chosen.scheme == "bearer"
    assert chosen.params["service"] == "reg"


def test_challenges_across_header_lines() -> None:
    chosen = auth.select_challenge(['Basic realm="x"', 'Bearer realm="https://a/t"'])
    assert chosen is not None and chosen.params["realm"] == "https://a/t"


def test_unknown_scheme_only_gives_no_challenge() -> None:
    assert auth.select_challenge(["Negotiate"]) is None
    assert auth.select_challenge([]) is None


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="https://a/t", realm="https://evil/t"',  # duplicate realm: ambiguous
        'Bearer realm="https://a/t',  # unterminated
        'Bearer realm="https://a/t\r\nX-Evil: 1"',  # control character
        "=foo",
    ],
)
def test_t08_malformed_challenges_are_refused(header: str) -> None:
    with pytest.raises(auth.ChallengeError):
        auth.parse_challenges(header)


def _upstream(tmp_path: Path, url: str, **extra: object) -> object:
    config = make_config(tmp_path, upstreams={"up": {"url": url, **extra}}, default_upstream="up")
    return config.upstreams["up"]


@pytest.mark.parametrize(
    ("realm", "allowed"),
    [
        ("https://auth.docker.io/token", True),  # well-known realm host
        ("https://registry-1.docker.io/token", True),  # the upstream itself
        ("https://attacker.example/token", False),
        ("http://auth.docker.io/token", False),  # downgrade
        ("https://127.0.0.1:8080/token", False),
        ("https://169.254.169.254/", False),
        ("https://auth.docker.io@attacker.example/token", False),  # userinfo trick
        ("https://auth.docker.io.attacker.example/token", False),
        ("ftp://auth.docker.io/token", False),
    ],
)
def test_t08_credentials_only_to_configured_realm(
    tmp_path: Path, realm: str, allowed: bool
) -> None:
    upstream = _upstream(tmp_path, "https://registry-1.docker.io", username="u", password="p")
    assert auth.credentials_allowed(upstream, httpx.URL(realm)) is allowed  # type: ignore[arg-type]


def test_t08_loopback_lab_realm_needs_same_port_or_listing(tmp_path: Path) -> None:
    lab = _upstream(
        tmp_path,
        "http://127.0.0.1:5001",
        insecure=True,
        username="u",
        password="p",
        realm_hosts=["127.0.0.1:6000"],
    )
    assert auth.credentials_allowed(lab, httpx.URL("http://127.0.0.1:5001/token"))  # type: ignore[arg-type]
    assert auth.credentials_allowed(lab, httpx.URL("http://127.0.0.1:6000/token"))  # type: ignore[arg-type]
    assert not auth.credentials_allowed(lab, httpx.URL("http://127.0.0.1:7000/token"))  # type: ignore[arg-type]
    assert not auth.credentials_allowed(lab, httpx.URL("http://localhost:5001/token"))  # type: ignore[arg-type]


def test_plain_http_realm_never_gets_credentials_off_loopback(tmp_path: Path) -> None:
    lab = _upstream(tmp_path, "http://registry.lan:5000", insecure=True, username="u", password="p")
    assert not auth.credentials_allowed(lab, httpx.URL("http://registry.lan:5000/token"))  # type: ignore[arg-type]


def test_token_or_access_token() -> None:
    assert auth.parse_token_response(b'{"token": "abc", "expires_in": 300}') == auth.Token(
        "abc", 300
    )
    assert auth.parse_token_response(b'{"access_token": "xyz"}').value == "xyz"


@pytest.mark.parametrize(
    "body",
    [
        b'{"token": "abc\\r\\nX-Evil: 1"}',  # header injection
        b'{"token": "a b"}',
        b'{"token": ""}',
        b'{"token": 5}',
        b"not json",
        b"[1]",
        b'{"other": "x"}',
    ],
)
def test_t08_unusable_token_bodies(body: bytes) -> None:
    with pytest.raises(auth.TokenError):
        auth.parse_token_response(body)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, 60.0),
        (0, 60.0),
        (None, 60.0),
        ("300", 60.0),
        (True, 60.0),
        (float("nan"), 60.0),
        (1e12, 3600.0),
        (0.2, 1.0),
        (300, 300.0),
    ],
)
def test_t08_expiry_is_clamped(value: object, expected: float) -> None:
    assert auth.clamp_expiry(value) == expected


def test_token_cache_expires_and_drops() -> None:
    now = [1000.0]
    cache = auth.TokenCache(clock=lambda: now[0])
    cache.put("repository:a:pull", "Bearer t", 60)
    assert cache.get("repository:a:pull") == "Bearer t"
    assert cache.get("repository:b:pull") is None
    now[0] += 56  # past expiry minus the safety margin
    assert cache.get("repository:a:pull") is None
    cache.put("s", "Bearer u", 1e12)  # clamped to an hour
    now[0] += 3600
    assert cache.get("s") is None
    cache.put("s", "Bearer v", 60)
    cache.drop("s")
    assert cache.get("s") is None


def test_token_cache_is_bounded() -> None:
    cache = auth.TokenCache(max_entries=3)
    for i in range(10):
        cache.put(f"scope-{i}", "Bearer t", 60)
    assert len(cache._entries) <= 3
    assert cache.get("scope-9") == "Bearer t"


@pytest.mark.parametrize(
    ("realm", "problem"),
    [
        ("https://auth.docker.io/token", None),
        ("https://attacker.example/token", None),  # asked, but anonymously
        ("http://auth.docker.io/token", "plain http"),
        ("https://169.254.169.254/", "non-public"),
        ("https://127.0.0.1:8080/token", "non-public"),
        ("https://[::1]/token", "non-public"),
        ("https://u:p@auth.docker.io/token", "userinfo"),
        ("file:///etc/passwd", "not an http"),
        ("", "not an http"),
    ],
)
def test_t08_realms_never_asked(tmp_path: Path, realm: str, problem: str | None) -> None:
    upstream = _upstream(tmp_path, "https://registry-1.docker.io", username="u", password="p")
    found = auth.realm_problem(upstream, httpx.URL(realm))  # type: ignore[arg-type]
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_loopback_lab_may_use_loopback_realm(tmp_path: Path) -> None:
    lab = _upstream(tmp_path, "http://127.0.0.1:5001", insecure=True)
    assert auth.realm_problem(lab, httpx.URL("http://127.0.0.1:6000/token")) is None  # type: ignore[arg-type]
