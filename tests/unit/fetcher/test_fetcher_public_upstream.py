"""Rules that only apply to a public https upstream, played by an in-process
transport (no real registry would serve these attacks, and the hostile
server only listens on loopback): downgrades, SSRF through redirects and
token realms, and credentials confined to the configured realm (T-07, T-08)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pullguard.services.fetcher.models import Descriptor
from pullguard.services.fetcher.operations import Fetcher
from pullguard.services.runtime.errors import UpstreamError
from tests.support.configs import make_config

REPO = "library/alpine"
MANIFEST = b'{"schemaVersion":2}'
HUB = "registry.example"
PATH = f"/v2/{REPO}/manifests/3.20"
BASIC = "Basic " + base64.b64encode(b"puller:s3cret").decode()

Route = Callable[[httpx.Request], httpx.Response]


def ok(data: bytes, **extra: object) -> httpx.Response:
    """A 200 whose body streams, as from a real connection (bytes would be pre-read)."""

    def body() -> Iterator[bytes]:
        yield data

    return httpx.Response(200, content=body(), **extra)  # type: ignore[arg-type]


class FakeInternet:
    """Answers by (host, path); records every request with its headers."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.url.host, request.url.path))
        return route(request) if route else httpx.Response(404)

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]


@pytest.fixture
def internet() -> FakeInternet:
    return FakeInternet()


@pytest.fixture
def fetcher(tmp_path: Path, internet: FakeInternet) -> Fetcher:
    config = make_config(
        tmp_path,
        upstreams={
            "hub": {
                "url": f"https://{HUB}",
                "username": "puller",
                "password": "s3cret",
                "realm_hosts": ["auth.example"],
                "redirect_hosts": ["cdn.example"],
            }
        },
        default_upstream="hub",
    )
    return Fetcher(
        config,
        client_options={"transport": httpx.MockTransport(internet.handler), "retry_backoff": 0.01},
    )


def challenge(realm: str) -> Route:
    def route(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == "Bearer tok":
            return ok(MANIFEST)
        header = f'Bearer realm="{realm}",service="{HUB}",scope="repository:{REPO}:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": header})

    return route


def token(request: httpx.Request) -> httpx.Response:
    return ok(b'{"token": "tok", "expires_in": 300}')


async def test_t08_credentials_go_to_the_configured_https_realm(
    fetcher: Fetcher, internet: FakeInternet
) -> None:
    internet.routes[(HUB, PATH)] = challenge("https://auth.example/token")
    internet.routes[("auth.example", "/token")] = token
    result = await fetcher.fetch_manifest("s1", "hub", REPO, "3.20")
    assert result.verdict.allowed
    [realm_request] = internet.to("auth.example")
    assert realm_request.headers["authorization"] == BASIC
    assert internet.to(HUB)[-1].headers["authorization"] == "Bearer tok"


@pytest.mark.parametrize(
    "realm",
    ["https://attacker.example/token", "https://auth.example.attacker.example/token"],
)
async def test_t08_unlisted_realm_gets_no_credentials(
    fetcher: Fetcher, internet: FakeInternet, realm: str
) -> None:
    host = httpx.URL(realm).host
    internet.routes[(HUB, PATH)] = challenge(realm)
    internet.routes[(host, "/token")] = token
    result = await fetcher.fetch_manifest("s1", "hub", REPO, "3.20")
    assert result.verdict.allowed
    [realm_request] = internet.to(host)
    assert "authorization" not in realm_request.headers


@pytest.mark.parametrize(
    "realm",
    [
        "https://169.254.169.254/token",
        "https://127.0.0.1:8080/token",
        "http://auth.example/token",
        "https://auth.example@attacker.example/token",
    ],
)
async def test_t08_dangerous_realm_is_never_asked(
    fetcher: Fetcher, internet: FakeInternet, realm: str
) -> None:
    internet.routes[(HUB, PATH)] = challenge(realm)
    with pytest.raises(UpstreamError, match="refused access: token realm"):
        await fetcher.fetch_manifest("s1", "hub", REPO, "3.20")
    assert [r.url.host for r in internet.requests] == [HUB]


@pytest.mark.parametrize(
    "location",
    [
        f"http://{HUB}/v2/{REPO}/blobs/x",  # downgrade
        "https://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
    ],
)
async def test_t07_downgrade_and_ssrf_redirects_are_denied(
    fetcher: Fetcher, internet: FakeInternet, location: str
) -> None:
    internet.routes[(HUB, PATH)] = lambda _: httpx.Response(302, headers={"Location": location})
    result = await fetcher.fetch_manifest("s1", "hub", REPO, "3.20")
    assert [f.code for f in result.verdict.findings] == ["fetch.bad_redirect"]
    assert len(internet.requests) == 1


async def test_t06_cdn_redirect_carries_no_authorization(
    fetcher: Fetcher, internet: FakeInternet
) -> None:
    blob = b"layer"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    blob_path = f"/v2/{REPO}/blobs/{digest}"

    def registry(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != BASIC:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="hub"'})
        return httpx.Response(307, headers={"Location": "https://cdn.example/data?sig=s"})

    internet.routes[(HUB, blob_path)] = registry
    internet.routes[("cdn.example", "/data")] = lambda _: ok(blob)
    result = await fetcher.fetch_blobs("s1", "hub", REPO, [Descriptor("x", digest, len(blob))])
    assert result.verdict.allowed
    [cdn_request] = internet.to("cdn.example")
    assert "authorization" not in cdn_request.headers
    assert internet.to(HUB)[-1].headers["authorization"] == BASIC


async def test_i05_basic_credentials_never_over_plain_http(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="lan"'})

    config = make_config(
        tmp_path,
        upstreams={
            "lan": {
                "url": "http://registry.lan:5000",
                "insecure": True,
                "username": "u",
                "password": "p",
            }
        },
        default_upstream="lan",
    )
    fetcher = Fetcher(config, client_options={"transport": httpx.MockTransport(handler)})
    with pytest.raises(UpstreamError, match="refused access"):
        await fetcher.fetch_manifest("s1", "lan", REPO, "3.20")
    assert all("authorization" not in r.headers for r in seen)
