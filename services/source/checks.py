"""Did the content come from the configured source, by allowed paths?

Checked against the fetcher's recorded provenance and the manifest's
descriptors (THREATS T-06, T-07, S-01, S-02):

- every exchange went to the upstream's own origin (scheme host and port),
  to a host its ``redirect_hosts`` allow, or, for token requests, to the
  plan's token realm hosts: otherwise ``source.unexpected_host`` (an ERROR
  for content, a WARNING for an anonymous token from another realm, which
  carries no content);
- every redirect (``location``) targets the upstream's origin or an allowed
  redirect host (``source.redirect_host_not_allowed``) and never leaves
  https (``source.insecure_redirect``); plain http anywhere is refused
  unless the upstream is configured ``insecure`` (``source.insecure_transport``).
  Correct bytes from a host that is not allowed are still refused: policy
  pins the source, so the digest alone never vouches for a foreign host;
- when the upstream's TLS identity is pinned (``tls.spki_sha256``), every
  exchange with the upstream's host (any port: a token endpoint there too)
  must have presented one of the pinned keys (``source.tls_identity_mismatch``;
  ``source.tls_identity_unknown`` when the fetcher recorded none), and plain
  http is refused even for an ``insecure`` upstream. Redirect targets (CDNs)
  are not pinned: the fetcher checks their chains against the CA store;
- descriptors with ``urls`` (foreign layers) are refused unless every URL is
  https on a host the rule allows and the descriptor has a digest to verify
  the content by (``source.foreign_layer``);
- at the manifest stage, the source annotation and signed provenance are
  judged by :mod:`pullguard.services.source.provenance`.

Hosts are compared exactly after URL parsing; nothing is case-folded beyond
what URL syntax does to host names, and URLs with user info, whitespace or
control characters are refused rather than cleaned (``source.invalid_url``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pullguard.services.runtime.digests import is_digest
from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.patterns import host_matches, redirect_allowed
from pullguard.services.source.provenance import (
    ManifestEvidence,
    SourceRule,
    annotation_findings,
    provenance_findings,
)

LAYER = "source"
#: Exchanges examined per request; a pull of 1 000 layers needs a few thousand.
MAX_EXCHANGES = 20_000
#: Findings kept per verdict (the first ones).
MAX_FINDINGS = 50
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Origin:
    """Scheme, host (as URL parsing gives it) and port with defaults filled in."""

    scheme: str
    host: str
    port: int | None


@dataclass(frozen=True)
class UpstreamSource:
    """Where content may come from for one upstream."""

    url: str
    insecure: bool = False
    redirect_hosts: tuple[str, ...] = ()
    realm_hosts: tuple[str, ...] = ()
    #: Pinned SHA-256 (hex) of the upstream host's SubjectPublicKeyInfo.
    spki_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange as the fetcher recorded it."""

    url: str
    purpose: str = ""
    location: str = ""
    status: int = 0
    digest: str = ""
    #: SHA-256 (hex) of the SubjectPublicKeyInfo the peer presented, if https.
    tls_spki_sha256: str = ""


@dataclass(frozen=True)
class DescriptorUrls:
    """A descriptor's digest and the foreign URLs it names."""

    digest: str
    media_type: str
    urls: tuple[str, ...]


def parse_origin(url: str) -> Origin | None:
    """Scheme, host and port of an absolute URL; ``None`` if it is not one cleanly."""
    if not url or not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.username is not None:
        return None
    return Origin(parts.scheme, parts.hostname, port or _DEFAULT_PORTS.get(parts.scheme))


def upstream_origin(upstream: UpstreamSource) -> Origin:
    """The upstream's own origin; :class:`InvalidRequest` when the plan has none."""
    origin = parse_origin(upstream.url)
    if origin is None or origin.scheme not in _DEFAULT_PORTS:
        # Without an upstream there is nothing to check against.
        raise InvalidRequest(f"plan has no usable upstream URL: {upstream.url[:100]!r}")
    return origin


class _SourceCheck:
    def __init__(self, upstream: UpstreamSource) -> None:
        self.upstream = upstream
        self.origin = upstream_origin(upstream)
        self.findings: list[Finding] = []

    def host_allowed(self, origin: Origin, purpose: str) -> bool:
        own = (self.origin.host, self.origin.port)
        if redirect_allowed(origin.host, origin.port, own, self.upstream.redirect_hosts):
            return True
        if purpose != "token":
            return False
        # As the fetcher decides where credentials may go: the upstream's own
        # host, or a realm_hosts entry naming the host (or host:port).
        return (
            origin.host == self.origin.host
            or host_matches(origin.host, self.upstream.realm_hosts)
            or f"{origin.host}:{origin.port}" in self.upstream.realm_hosts
        )

    def exchange(self, exchange: Exchange) -> None:
        where = f"{exchange.purpose or 'request'} {exchange.url[:200]}"
        origin = parse_origin(exchange.url)
        if origin is None:
            self.findings.append(Finding.error("source.invalid_url", f"{where}: not a clean URL"))
            return
        pinned = bool(self.upstream.spki_sha256)
        plain_ok = self.upstream.insecure and origin.scheme == "http" and not pinned
        if origin.scheme != "https" and not plain_ok:
            reason = " (the upstream's TLS identity is pinned)" if pinned else ""
            self.findings.append(
                Finding.error(
                    "source.insecure_transport",
                    f"{where}: got {origin.scheme}, expected https{reason}",
                    url=exchange.url,
                )
            )
        elif pinned and origin.host == self.origin.host:
            self.tls_identity(exchange, where)
        if not self.host_allowed(origin, exchange.purpose):
            if exchange.purpose == "token":
                self.findings.append(
                    Finding.warning(
                        "source.unexpected_host",
                        f"token from {origin.host}, not a configured realm host",
                        host=origin.host,
                    )
                )
            else:
                self.findings.append(
                    Finding.error(
                        "source.unexpected_host",
                        f"{where}: got host {origin.host}, expected {self.origin.host}"
                        " or an allowed redirect host",
                        host=origin.host,
                        digest=exchange.digest,
                    )
                )
        if exchange.location:
            self.redirect(exchange, origin, where)

    def tls_identity(self, exchange: Exchange, where: str) -> None:
        """An https exchange with the pinned upstream host presented a pinned key."""
        got = exchange.tls_spki_sha256
        if not got:
            self.findings.append(
                Finding.error(
                    "source.tls_identity_unknown",
                    f"{where}: no TLS identity recorded, expected a pinned key",
                    url=exchange.url,
                )
            )
        elif got not in self.upstream.spki_sha256:
            self.findings.append(
                Finding.error(
                    "source.tls_identity_mismatch",
                    f"{where}: got SPKI sha256 {got[:64]},"
                    f" expected one of [{', '.join(self.upstream.spki_sha256)[:300]}]",
                    spki_sha256=got,
                    url=exchange.url,
                )
            )

    def redirect(self, exchange: Exchange, source: Origin, where: str) -> None:
        location = exchange.location
        absolute, scheme = _resolve(exchange.url, location)
        if scheme and scheme not in _DEFAULT_PORTS:
            # file:, ftp:, data: ... never a registry; often not even a host.
            self.findings.append(
                Finding.error(
                    "source.insecure_redirect",
                    f"{where}: redirect to scheme {scheme[:20]}, expected https",
                    location=location,
                )
            )
            return
        target = parse_origin(absolute) if absolute else None
        if target is None:
            self.findings.append(
                Finding.error(
                    "source.invalid_url", f"{where}: redirect to {location[:200]!r} is not clean"
                )
            )
            return
        if source.scheme == "https" and target.scheme != "https":
            self.findings.append(
                Finding.error(
                    "source.insecure_redirect",
                    f"{where}: redirect from {source.scheme} to {target.scheme}",
                    location=location,
                )
            )
        if not self.host_allowed(target, exchange.purpose):
            self.findings.append(
                Finding.error(
                    "source.redirect_host_not_allowed",
                    f"redirect to {target.host}, expected {self.origin.host}"
                    f" or one of [{', '.join(self.upstream.redirect_hosts)[:200]}]",
                    host=target.host,
                    location=location,
                    digest=exchange.digest,
                )
            )

    def foreign(self, descriptor: DescriptorUrls, allowed_hosts: tuple[str, ...]) -> None:
        if not is_digest(descriptor.digest):
            # Content named only by a URL could be anything (S-01 "urls without digest").
            self.findings.append(
                Finding.error(
                    "source.foreign_layer",
                    f"a descriptor names foreign URL {descriptor.urls[0][:200]}"
                    f" with digest {descriptor.digest[:140] or '(none)'!r},"
                    " expected a digest to verify it by",
                    url=descriptor.urls[0],
                )
            )
            return
        bad = []
        for url in descriptor.urls:
            origin = parse_origin(url)
            if origin is None or origin.scheme != "https":
                bad.append(url)
            elif not host_matches(origin.host, allowed_hosts):
                bad.append(url)
        if bad:
            self.findings.append(
                Finding.error(
                    "source.foreign_layer",
                    f"blob {descriptor.digest} names foreign URL {bad[0][:200]},"
                    " expected no URLs or https on an allowed host",
                    digest=descriptor.digest,
                    url=bad[0],
                )
            )
        else:
            self.findings.append(
                Finding.info(
                    "source.foreign_layer_allowed",
                    f"blob {descriptor.digest} may come from {descriptor.urls[0][:200]}",
                    digest=descriptor.digest,
                )
            )


def _clean(text: str) -> bool:
    return text.isascii() and not any(ch <= " " or ch == "\x7f" for ch in text)


def _resolve(base: str, location: str) -> tuple[str, str]:
    """(absolute URL, scheme) of a possibly relative Location; ("", "") if unusable."""
    if not _clean(location):
        return "", ""
    try:
        absolute = urljoin(base, location)
        return absolute, urlsplit(absolute).scheme
    except ValueError:
        return "", ""


_NO_RULE = SourceRule()


def check_source(
    upstream: UpstreamSource,
    exchanges: Sequence[Exchange],
    descriptors: Iterable[DescriptorUrls] = (),
    rule: SourceRule = _NO_RULE,
    manifest: ManifestEvidence | None = None,
) -> Verdict:
    """The source verdict for one pull's provenance and descriptors.

    ``manifest`` is given at the manifest stage, and brings the source
    annotation and signed provenance under the rule; the blob stage (``None``)
    judges transport and descriptors only.
    """
    check = _SourceCheck(upstream)
    if not exchanges:
        # Content with no recorded origin is content of unknown origin.
        check.findings.append(Finding.error("source.no_provenance", "no exchanges recorded"))
    elif len(exchanges) > MAX_EXCHANGES:
        check.findings.append(
            Finding.error(
                "source.too_many_exchanges",
                f"got {len(exchanges)} exchanges, limit {MAX_EXCHANGES}",
            )
        )
    else:
        for exchange in exchanges:
            check.exchange(exchange)
    for descriptor in descriptors:
        if descriptor.urls:
            check.foreign(descriptor, rule.foreign_url_hosts)
    if manifest is not None:
        # Neither of these relaxes anything above: they can only add findings.
        check.findings.extend(annotation_findings(rule, manifest))
        check.findings.extend(provenance_findings(rule, manifest))
    return Verdict.of(LAYER, _bounded(check.findings))


def _bounded(findings: list[Finding]) -> list[Finding]:
    """At most :data:`MAX_FINDINGS`, the most severe first, so that cutting
    a long report can never drop the finding that denies."""
    if len(findings) <= MAX_FINDINGS:
        return findings
    ranked = sorted(findings, key=lambda f: -int(f.severity))
    dropped = len(findings) - MAX_FINDINGS
    note = Finding.info("source.findings_truncated", f"{dropped} more findings not shown")
    return [*ranked[:MAX_FINDINGS], note]
