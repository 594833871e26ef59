"""URL rules of the fetcher: origins, redaction, and which redirects to follow.

Host allowlisting of redirect targets is the source layer's job (it reads
the provenance); the fetcher refuses only what must never be followed at all:
schemes other than http(s), https-to-http downgrades, URLs carrying
credentials, malformed ``Location`` values and hops to loopback, private or
link-local addresses from an upstream that is not itself on one (SSRF).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

import httpx

from pullguard.services.fetcher.models import FetchDenied
from pullguard.services.runtime.config import Upstream

REDACTED = "REDACTED"
#: Longest Location header the fetcher will consider.
MAX_LOCATION = 8192

Origin = tuple[str, str, int]


def origin(url: httpx.URL) -> Origin:
    """(scheme, host, port) with the scheme's default port filled in."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return (url.scheme, url.host, port)


def upstream_origin(upstream: Upstream) -> Origin:
    return (upstream.scheme, upstream.host, upstream.port)


def redact_url(url: str | httpx.URL) -> str:
    """The URL with every query value replaced, and userinfo and fragment dropped.

    Signed CDN URLs carry their credential in the query (``?sig=...``).
    """
    parts = urlsplit(str(url))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        f"{item.split('=', 1)[0]}={REDACTED}" if "=" in item else item
        for item in parts.query.split("&")
        if item
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_non_global_host(host: str) -> bool:
    """True for loopback, private, link-local, unspecified and reserved addresses.

    Only IP literals and ``localhost`` are recognised: names are not resolved
    here (a resolving check belongs with the connection, later).
    """
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def resolve_redirect(current: httpx.URL, location: str | None, upstream: Upstream) -> httpx.URL:
    """The next URL of a redirect, or :class:`FetchDenied` ``fetch.bad_redirect``."""
    shown = redact_url(location or "")
    if not location:
        raise FetchDenied.of("fetch.bad_redirect", "got a redirect without Location")
    if len(location) > MAX_LOCATION or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in location):
        raise FetchDenied.of(
            "fetch.bad_redirect",
            "got a Location with control characters, spaces or over 8 KiB",
            location=shown[:200],
        )
    try:
        target = current.join(location)
    except httpx.InvalidURL:
        raise FetchDenied.of(
            "fetch.bad_redirect", "got an unparsable Location", location=shown
        ) from None
    if target.scheme not in ("http", "https"):
        raise FetchDenied.of(
            "fetch.bad_redirect",
            f"got a redirect to scheme {target.scheme!r}, expected http or https",
            location=shown,
        )
    if current.scheme == "https" and target.scheme != "https":
        raise FetchDenied.of(
            "fetch.bad_redirect",
            "got a redirect from https to http, expected https",
            location=shown,
        )
    if target.userinfo:
        raise FetchDenied.of(
            "fetch.bad_redirect", "got a redirect URL carrying credentials", location=shown
        )
    if not target.host:
        raise FetchDenied.of("fetch.bad_redirect", "got a redirect without a host", location=shown)
    if is_non_global_host(target.host) and not is_non_global_host(upstream.host):
        raise FetchDenied.of(
            "fetch.bad_redirect",
            f"got a redirect to non-public address {target.host}, expected a public host",
            location=shown,
        )
    return target
