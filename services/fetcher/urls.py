"""URL rules of the fetcher: origins, redaction, and which redirects to follow.

A redirect is judged before any connection is made to its target. The
fetcher refuses what must never be followed at all: schemes other than
http(s), https-to-http downgrades, URLs carrying credentials, malformed
``Location`` values, numeric hosts in a spelling only libc understands
(``2130706433``, ``0177.0.0.1``, ``127.1``), and hops to loopback, private,
link-local, multicast or unspecified addresses from an upstream that is not
itself on one (SSRF, T-07). And it refuses a hop to any host the upstream may
not send it to (``fetch.redirect_host_not_allowed``): only the upstream's own
host and port, or a host its ``redirect_hosts`` name, exactly or by glob (see
:func:`redirect_host_allowed`). The source layer judges the recorded
redirects again from the provenance (defence in depth).

The checks here see only the URL. Names are resolved and every resolved
address checked again when the connection is opened (:mod:`network`), so a
name that points at 127.0.0.1 is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

from pullguard.services.fetcher.models import FetchDenied
from pullguard.services.runtime.config import Upstream
from pullguard.services.runtime.patterns import redirect_allowed

REDACTED = "REDACTED"
#: Longest Location header the fetcher will consider.
MAX_LOCATION = 8192
#: NAT64's well-known prefix: its last 32 bits are an IPv4 address (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Origin = tuple[str, str, int]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def normal_host(host: str) -> str:
    """A host name as compared here: brackets and one trailing dot dropped, lower case."""
    name = host.strip("[]").lower()
    return name[:-1] if name.endswith(".") else name


def host_address(host: str) -> Address | None:
    """The address a host names literally, or None for a DNS name.

    Besides canonical IPv4 and IPv6 literals this recognises what libc's
    ``inet_aton`` (and so ``getaddrinfo``) accepts: ``2130706433``,
    ``0177.0.0.1``, ``0x7f.1``, ``127.1``.
    """
    name = normal_host(host)
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    return _libc_ipv4(name)


def is_libc_only_address(host: str) -> bool:
    """True for numeric hosts only libc reads as an address (``2130706433``, ``127.1``)."""
    name = normal_host(host)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return _libc_ipv4(name) is not None
    return False


def _libc_ipv4(name: str) -> ipaddress.IPv4Address | None:
    if not name or any(ch not in "0123456789abcdefx." for ch in name) or not name[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def is_non_global_address(address: Address) -> bool:
    """Loopback, private, link-local, reserved, unspecified or multicast.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, 6to4,
    NAT64) are judged by that IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and is_non_global_address(embedded):
            return True
    return not address.is_global or address.is_multicast


def is_non_global_host(host: str) -> bool:
    """True for ``localhost`` names and literal non-global addresses (see above).

    DNS names are not resolved here: :mod:`network` checks what they resolve to.
    """
    name = normal_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = host_address(name)
    return address is not None and is_non_global_address(address)


def is_loopback_host(host: str) -> bool:
    name = normal_host(host)
    if name == "localhost":
        return True
    address = host_address(name)
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


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
    if is_libc_only_address(target.host):
        raise FetchDenied.of(
            "fetch.bad_redirect",
            f"got a redirect to numeric host {target.host[:100]!r}, expected a name or a"
            " dotted-quad IP address",
            location=shown,
        )
    if is_non_global_host(target.host) and not is_non_global_host(upstream.host):
        raise FetchDenied.of(
            "fetch.bad_redirect",
            f"got a redirect to non-public address {target.host}, expected a public host",
            location=shown,
        )
    if not redirect_host_allowed(target, upstream):
        host = wire_host(target)
        raise FetchDenied.of(
            "fetch.redirect_host_not_allowed",
            f"got a redirect to {host[:100]}:{origin(target)[2]}, expected"
            f" {upstream.host}:{upstream.port} or a host in redirect_hosts"
            f" [{', '.join(upstream.redirect_hosts)[:200]}]; not contacted",
            host=host[:253],
            location=shown,
        )
    return target


def wire_host(url: httpx.URL) -> str:
    """The host as it goes on the wire: IDNA (``xn--``) form, lower case, nothing dropped."""
    return url.raw_host.decode("ascii", "replace")


def redirect_host_allowed(target: httpx.URL, upstream: Upstream) -> bool:
    """Whether a redirect may go to ``target``'s host, as the source layer judges it.

    The upstream's own host counts only on its own port; ``redirect_hosts``
    entries name hosts (any port), exactly or by ``*`` glob, compared with the
    IDNA form of the host and never by prefix: ``127.0.0.1`` does not allow
    ``127.0.0.10``, ``cdn.example.com`` does not allow ``cdn.example.com.`` or
    ``cdn.example.com.evil``.
    """
    return redirect_allowed(
        wire_host(target),
        origin(target)[2],
        (upstream.host, upstream.port),
        upstream.redirect_hosts,
    )
