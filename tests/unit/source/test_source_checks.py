"""Source verification of transport and descriptors: THREATS T-06, T-07, S-01, TLS pinning."""

from __future__ import annotations

import pytest

from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.findings import Severity, Verdict
from pullguard.services.source.checks import (
    DescriptorUrls,
    Exchange,
    UpstreamSource,
    check_source,
    parse_origin,
)
from pullguard.services.source.provenance import SourceRule

HUB = UpstreamSource(
    url="https://registry-1.docker.io",
    redirect_hosts=("production.cloudflare.docker.com", "*.cloudflare.docker.com"),
    realm_hosts=("auth.docker.io",),
)
GHCR = UpstreamSource(
    url="https://ghcr.io", redirect_hosts=("pkg-containers.githubusercontent.com",)
)
LAB = UpstreamSource(url="http://127.0.0.1:5001", insecure=True)
BLOB = "sha256:" + "b" * 64
HUB_BLOB = f"https://registry-1.docker.io/v2/library/alpine/blobs/{BLOB}"


def manifest_exchange(upstream: UpstreamSource) -> Exchange:
    return Exchange(url=f"{upstream.url}/v2/library/alpine/manifests/3.20", purpose="manifest")


def check(upstream: UpstreamSource, *exchanges: Exchange, **kwargs: object) -> Verdict:
    return check_source(upstream, [manifest_exchange(upstream), *exchanges], **kwargs)  # type: ignore[arg-type]


def errors(verdict: Verdict) -> list[str]:
    return [f.code for f in verdict.findings if f.severity is Severity.ERROR]


def redirect(url: str, location: str, purpose: str = "blob") -> Exchange:
    return Exchange(url=url, purpose=purpose, location=location, status=307, digest=BLOB)


# ---------------------------------------------------------------- T-06 positive controls


def test_t06_cdn_redirect_allowed_docker_hub() -> None:
    cdn = "https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/x/data?verify=REDACTED"
    verdict = check(
        HUB,
        Exchange(url="https://auth.docker.io/token?scope=REDACTED", purpose="token"),
        redirect(HUB_BLOB, cdn),
        Exchange(url=cdn, purpose="blob", status=200, digest=BLOB),
    )
    assert verdict.allowed and verdict.findings == ()


def test_t06_cdn_redirect_allowed_ghcr() -> None:
    cdn = (
        f"https://pkg-containers.githubusercontent.com/ghcr1/blobs/{BLOB}?se=REDACTED&sig=REDACTED"
    )
    verdict = check(
        GHCR, redirect(f"https://ghcr.io/v2/o/r/blobs/{BLOB}", cdn), Exchange(cdn, "blob")
    )
    assert verdict.allowed and verdict.findings == ()


def test_t06_wildcard_redirect_host() -> None:
    cdn = "https://edge-7.cloudflare.docker.com/x"
    assert check(HUB, redirect(HUB_BLOB, cdn), Exchange(cdn, "blob")).allowed


def test_t06_relative_redirect_to_own_host() -> None:
    assert check(HUB, redirect(HUB_BLOB, "/v2/library/alpine/blobs/other")).allowed


def test_insecure_upstream_may_use_http() -> None:
    verdict = check(LAB, redirect("http://127.0.0.1:5001/v2/a/blobs/x", "http://127.0.0.1:5001/y"))
    assert verdict.allowed and verdict.findings == ()


# ---------------------------------------------------------------- T-07


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example/blob",
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://10.0.0.5/",
        "https://[::1]/",
        "https://registry-1.docker.io.evil.example/x",
        "https://registry-1.docker.io./x",
        "https://cloudflare.docker.com/x",  # "*." needs at least one more label
        "https://registry-1.docker.io:8443/x",  # another port is another origin
    ],
)
def test_t07_redirect_not_allowed(location: str) -> None:
    verdict = check(HUB, redirect(HUB_BLOB, location))
    assert errors(verdict) == ["source.redirect_host_not_allowed"]


def test_t07_redirect_to_metadata_address() -> None:
    location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    verdict = check(HUB, redirect(HUB_BLOB, location))
    assert errors(verdict) == ["source.insecure_redirect", "source.redirect_host_not_allowed"]


def test_t07_correct_bytes_from_a_host_not_allowed() -> None:
    # evil.example serves exactly the bytes the digest names: hashverify would
    # pass them, but the policy pins the source, so the digest alone never
    # vouches for a host the upstream may not send content from.
    evil = f"https://evil.example/blobs/{BLOB}"
    verdict = check(
        HUB, redirect(HUB_BLOB, evil), Exchange(url=evil, purpose="blob", status=200, digest=BLOB)
    )
    assert errors(verdict) == ["source.redirect_host_not_allowed", "source.unexpected_host"]


def test_t07_name_that_resolves_to_loopback() -> None:
    # DNS rebinding: the name is not allowed, whatever it resolves to (the
    # fetcher checks addresses after resolution; here only names count).
    verdict = check(HUB, redirect(HUB_BLOB, "https://127.0.0.1.nip.io/v2/x"))
    assert errors(verdict) == ["source.redirect_host_not_allowed"]


def test_t07_redirect_to_the_private_registry_itself() -> None:
    lab_blob = "http://127.0.0.1:5001/v2/a/blobs/x"
    verdict = check(LAB, redirect(lab_blob, "http://127.0.0.1:5000/v2/a/blobs/x"))
    assert errors(verdict) == ["source.redirect_host_not_allowed"]


def test_t07_downgrade_to_http_on_same_host() -> None:
    verdict = check(HUB, redirect(HUB_BLOB, "http://registry-1.docker.io/v2/x"))
    assert "source.insecure_redirect" in errors(verdict)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://registry-1.docker.io/x"])
def test_t07_non_http_scheme(location: str) -> None:
    assert "source.insecure_redirect" in errors(check(HUB, redirect(HUB_BLOB, location)))


@pytest.mark.parametrize(
    "location",
    [
        "https://production.cloudflare.docker.com/x\r\nX-Injected: 1",
        "https://registry-1.docker.io@evil.example/x",
        "https://production.cloudflare.docker.com:99999/x",
        "https://pr\u043eduction.cloudflare.docker.com/x",
        "https://production.cloudflare.docker.com/ x",
    ],
)
def test_t07_unclean_location(location: str) -> None:
    assert errors(check(HUB, redirect(HUB_BLOB, location))) == ["source.invalid_url"]


def test_t07_every_bad_redirect_is_reported() -> None:
    verdict = check(
        HUB,
        redirect(HUB_BLOB, "https://evil.example/1"),
        redirect(HUB_BLOB, "https://evil.example/2"),
    )
    assert errors(verdict) == ["source.redirect_host_not_allowed"] * 2


# ---------------------------------------------------------------- TLS identity

PIN = "a" * 64
OTHER_PIN = "b" * 64
PINNED_HUB = UpstreamSource(
    url=HUB.url,
    redirect_hosts=HUB.redirect_hosts,
    realm_hosts=HUB.realm_hosts,
    spki_sha256=(OTHER_PIN, PIN),
)


def pinned(url: str, spki: str = PIN, purpose: str = "manifest", **fields: object) -> Exchange:
    return Exchange(url=url, purpose=purpose, tls_spki_sha256=spki, **fields)  # type: ignore[arg-type]


MANIFEST_URL = "https://registry-1.docker.io/v2/library/alpine/manifests/3.20"
CDN = "https://production.cloudflare.docker.com/registry-v2/blobs/x/data?verify=REDACTED"


def test_tls_pinned_upstream_presenting_a_pinned_key() -> None:
    verdict = check_source(
        PINNED_HUB,
        [
            pinned(MANIFEST_URL),
            Exchange(url="https://auth.docker.io/token", purpose="token"),
            pinned(HUB_BLOB, OTHER_PIN, "blob", location=CDN, status=307, digest=BLOB),
            # Redirect targets are CA-checked by the fetcher, not pinned.
            Exchange(url=CDN, purpose="blob", status=200, digest=BLOB, tls_spki_sha256="c" * 64),
        ],
    )
    assert verdict.allowed and verdict.findings == ()


def test_tls_identity_mismatch() -> None:
    verdict = check_source(PINNED_HUB, [pinned(MANIFEST_URL), pinned(HUB_BLOB, "c" * 64, "blob")])
    assert errors(verdict) == ["source.tls_identity_mismatch"]
    assert verdict.findings[0].evidence["spki_sha256"] == "c" * 64


def test_tls_identity_is_not_normalised() -> None:
    verdict = check_source(PINNED_HUB, [pinned(MANIFEST_URL, PIN.upper())])
    assert errors(verdict) == ["source.tls_identity_mismatch"]


def test_tls_identity_unknown_on_https() -> None:
    verdict = check_source(PINNED_HUB, [pinned(MANIFEST_URL), pinned(HUB_BLOB, "", "blob")])
    assert errors(verdict) == ["source.tls_identity_unknown"]


def test_tls_pins_cover_the_upstream_host_on_any_port() -> None:
    token = "https://registry-1.docker.io:8443/token"
    assert errors(check_source(PINNED_HUB, [pinned(token, "", "token")])) == [
        "source.tls_identity_unknown"
    ]
    assert check_source(PINNED_HUB, [pinned(token, PIN, "token")]).findings == ()


def test_tls_pinned_upstream_refuses_plain_http_even_when_insecure() -> None:
    upstream = UpstreamSource(url="https://127.0.0.1:5443", insecure=True, spki_sha256=(PIN,))
    verdict = check_source(
        upstream, [pinned("https://127.0.0.1:5443/v2/"), pinned("http://127.0.0.1:5443/v2/", "")]
    )
    assert "source.insecure_transport" in errors(verdict)
    assert "pinned" in verdict.findings[0].message


def test_tls_without_pins_nothing_is_required() -> None:
    assert check(HUB, Exchange(url=HUB_BLOB, purpose="blob")).findings == ()


# ---------------------------------------------------------------- exchanges


def test_content_from_unexpected_host() -> None:
    verdict = check(HUB, Exchange(url="https://evil.example/v2/x/blobs/y", purpose="blob"))
    assert errors(verdict) == ["source.unexpected_host"]


def test_token_from_configured_realm() -> None:
    verdict = check(HUB, Exchange(url="https://auth.docker.io/token", purpose="token"))
    assert verdict.findings == ()


def test_token_from_own_host_or_realm_host_port() -> None:
    lab = UpstreamSource(
        url="http://127.0.0.1:5001", insecure=True, realm_hosts=("127.0.0.1:5002",)
    )
    own = Exchange(url="https://ghcr.io/token?scope=REDACTED", purpose="token")
    assert check(GHCR, own).findings == ()
    realm = Exchange(url="http://127.0.0.1:5002/token", purpose="token")
    assert check(lab, realm).findings == ()
    assert check(lab, Exchange(url="http://127.0.0.2:5002/token", purpose="token")).findings


def test_token_from_other_realm_is_a_warning() -> None:
    verdict = check(HUB, Exchange(url="https://auth.example.com/token", purpose="token"))
    assert verdict.allowed
    assert [(f.code, f.severity) for f in verdict.findings] == [
        ("source.unexpected_host", Severity.WARNING)
    ]


def test_realm_hosts_do_not_serve_content() -> None:
    verdict = check(HUB, Exchange(url="https://auth.docker.io/v2/x/blobs/y", purpose="blob"))
    assert errors(verdict) == ["source.unexpected_host"]


@pytest.mark.parametrize("purpose", ["token", "blob"])
def test_plain_http_on_secure_upstream(purpose: str) -> None:
    verdict = check(HUB, Exchange(url="http://registry-1.docker.io/v2/x", purpose=purpose))
    # Port 80 is also another origin than the upstream's 443.
    assert "source.insecure_transport" in errors(verdict)


def test_invalid_exchange_url() -> None:
    assert errors(check(HUB, Exchange(url="not a url", purpose="blob"))) == ["source.invalid_url"]


def test_no_provenance_is_denied() -> None:
    assert errors(check_source(HUB, [])) == ["source.no_provenance"]


@pytest.mark.parametrize("url", ["", "registry-1.docker.io", "ftp://x", "https://"])
def test_unusable_upstream_cannot_be_checked(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_source(UpstreamSource(url=url), [Exchange(url="https://x/")])


# ---------------------------------------------------------------- S-01


MCR = SourceRule(foreign_url_hosts=("mcr.microsoft.com",))


def foreign(*urls: str) -> DescriptorUrls:
    return DescriptorUrls(
        BLOB, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", urls
    )


def test_s01_foreign_layer_denied_by_default() -> None:
    verdict = check(HUB, descriptors=[foreign("https://attacker.example/l.tgz")])
    assert errors(verdict) == ["source.foreign_layer"]


def test_s01_foreign_layer_on_allowed_host() -> None:
    verdict = check(
        HUB,
        descriptors=[foreign("https://mcr.microsoft.com/l.tgz")],
        rule=MCR,
    )
    assert verdict.allowed
    assert [f.code for f in verdict.findings] == ["source.foreign_layer_allowed"]


@pytest.mark.parametrize(
    "urls",
    [
        ("http://mcr.microsoft.com/l.tgz",),
        ("file:///etc/passwd",),
        ("https://mcr.microsoft.com/l.tgz", "https://attacker.example/l.tgz"),
        ("https://mcr.microsoft.com@attacker.example/l.tgz",),
        ("https://mcr.microsoft.com.attacker.example/l.tgz",),
    ],
)
def test_s01_foreign_layer_urls_must_all_be_https_on_allowed_hosts(urls: tuple[str, ...]) -> None:
    verdict = check(HUB, descriptors=[foreign(*urls)], rule=MCR)
    assert errors(verdict) == ["source.foreign_layer"]


def test_s01_urls_on_a_distributable_layer() -> None:
    layer = DescriptorUrls(
        BLOB, "application/vnd.oci.image.layer.v1.tar+gzip", ("https://attacker.example/l",)
    )
    assert errors(check(HUB, descriptors=[layer])) == ["source.foreign_layer"]


def test_s01_docker_foreign_layer_type() -> None:
    layer = DescriptorUrls(
        BLOB,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ("https://attacker.example/l",),
    )
    assert errors(check(HUB, descriptors=[layer])) == ["source.foreign_layer"]


@pytest.mark.parametrize("digest", ["", "sha256:" + "B" * 64, "sha384:" + "b" * 96])
def test_s01_urls_without_a_digest(digest: str) -> None:
    # Even on an allowed host: content named by a URL alone can be anything.
    layer = DescriptorUrls(digest, "", ("https://mcr.microsoft.com/l.tgz",))
    assert errors(check(HUB, descriptors=[layer], rule=MCR)) == ["source.foreign_layer"]


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "file://mcr.microsoft.com/l.tgz", "FILE:///etc/shadow"]
)
def test_s01_file_urls(url: str) -> None:
    assert errors(check(HUB, descriptors=[foreign(url)], rule=MCR)) == ["source.foreign_layer"]


def test_s01_content_fetched_from_a_foreign_url_host() -> None:
    # Were a fetch ever made to a foreign URL, the provenance gives it away.
    fetched = Exchange(url="https://attacker.example/l.tgz", purpose="blob", digest=BLOB)
    verdict = check(HUB, fetched, descriptors=[foreign("https://attacker.example/l.tgz")])
    assert errors(verdict) == ["source.unexpected_host", "source.foreign_layer"]


def test_s01_descriptors_without_urls_are_fine() -> None:
    assert check(HUB, descriptors=[foreign()]).findings == ()


def test_long_reports_keep_the_denial() -> None:
    allowed = [foreign(f"https://mcr.microsoft.com/{i}") for i in range(80)]
    verdict = check(
        HUB,
        redirect(HUB_BLOB, "https://evil.example/x"),
        descriptors=allowed,
        rule=MCR,
    )
    assert not verdict.allowed
    assert len(verdict.findings) == 51
    assert verdict.findings[0].code == "source.redirect_host_not_allowed"


def test_parse_origin_defaults_ports() -> None:
    origin = parse_origin("https://Registry.Example.com/v2/")
    assert origin is not None and (origin.host, origin.port) == ("registry.example.com", 443)
