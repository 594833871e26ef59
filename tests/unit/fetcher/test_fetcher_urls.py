"""Redirect rules and URL redaction (T-06, T-07)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pullguard.services.fetcher.models import FetchDenied
from pullguard.services.fetcher.urls import origin, redact_url, resolve_redirect
from pullguard.services.runtime.config import Upstream
from tests.support.configs import make_config


def _upstream(tmp_path: Path, url: str, **extra: object) -> Upstream:
    config = make_config(tmp_path, upstreams={"up": {"url": url, **extra}}, default_upstream="up")
    return config.upstreams["up"]


@pytest.fixture
def hub(tmp_path: Path) -> Upstream:
    return _upstream(tmp_path, "https://registry-1.docker.io")


HUB_BLOB = httpx.URL("https://registry-1.docker.io/v2/library/alpine/blobs/sha256:" + "a" * 64)


def test_t06_cdn_redirect_is_followed(hub: Upstream) -> None:
    location = "https://production.cloudflare.docker.com/registry-v2/data?verify=secret"
    target = resolve_redirect(HUB_BLOB, location, hub)
    assert target.host == "production.cloudflare.docker.com"
    assert origin(target) != origin(HUB_BLOB)


def test_relative_redirect_resolves_against_current(hub: Upstream) -> None:
    target = resolve_redirect(HUB_BLOB, "/elsewhere?x=1", hub)
    assert str(target) == "https://registry-1.docker.io/elsewhere?x=1"


@pytest.mark.parametrize(
    "location",
    [
        "http://registry-1.docker.io/v2/x",  # downgrade, same host
        "file:///etc/passwd",
        "ftp://evil.example/blob",
        "https://user:pass@evil.example/blob",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:5000/v2/",
        "https://[::1]/",
        "https://10.0.0.5/",
        "https://localhost/x",
        "https://[::ffff:169.254.169.254]/",
        "https://evil.example/\r\nX-Evil: 1",
        "",
        # Spellings of loopback and link-local that resolvers understand.
        "https://2130706433/",
        "https://0x7f.1/",
        "https://127.1/",
        "https://localhost./x",
        "https://LOCALHOST/x",
        "https://a.localhost/x",
        "https://[::ffff:127.0.0.1]/",
        "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://0.0.0.0/",
        "https://[::]/",
        "https://224.0.0.1/",
        "https://100.64.0.1/",
        # Numeric spellings only libc reads, even of public addresses.
        "https://134744072/",
        "https://0x08080808/",
    ],
)
def test_t07_bad_redirects_are_denied(hub: Upstream, location: str) -> None:
    with pytest.raises(FetchDenied) as caught:
        resolve_redirect(HUB_BLOB, location, hub)
    assert caught.value.finding.code == "fetch.bad_redirect"


def test_t07_lab_upstream_on_loopback_may_redirect_on_loopback(tmp_path: Path) -> None:
    lab = _upstream(tmp_path, "http://127.0.0.1:5001", insecure=True, redirect_hosts=["127.0.0.1"])
    current = httpx.URL("http://127.0.0.1:5001/v2/x/blobs/sha256:" + "a" * 64)
    assert resolve_redirect(current, "http://127.0.0.1:6000/data", lab).port == 6000


def test_t06_query_values_are_redacted() -> None:
    shown = redact_url("https://user:pw@cdn.example/blobs/x?se=2024&sig=SECRET&flag#frag")
    assert shown == "https://cdn.example/blobs/x?se=REDACTED&sig=REDACTED&flag"
    assert "SECRET" not in shown and "pw" not in shown
