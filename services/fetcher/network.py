"""Where the fetcher's connections may go, and what TLS told us about them.

Every TCP connection the fetcher opens goes through :class:`GuardedBackend`,
an httpcore network backend (T-07, T-08), in the pool of
:class:`~pullguard.services.fetcher.threaded.ThreadedTransport`:

- the host is resolved here, once, with the event loop's ``getaddrinfo``
  bounded by the connect timeout;
- if ANY resolved address is loopback, private, link-local, multicast,
  reserved or unspecified, the connection is refused with
  :class:`ForbiddenAddress` — unless the host is the upstream's own, or the
  upstream itself is on such an address (a lab registry on 127.0.0.1);
- the socket is then opened to one of the addresses just checked, never to
  the name. Nothing resolves the name a second time, so a DNS answer that
  changes between the check and the connection (rebinding) cannot slip
  through: there is no time-of-check/time-of-use gap. TLS still verifies the
  certificate against the host name (SNI and hostname check use the name).

TLS trust: the system store, or ONLY the upstream's ``tls.ca_file`` when set
(which then also applies to its redirect targets). :func:`peer_facts` reads
the peer certificate's SubjectPublicKeyInfo hash, the protocol version and
the peer address from a response's network stream, for provenance; the source
layer checks pins against them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pullguard.services.fetcher.urls import (
    host_address,
    is_non_global_address,
    is_non_global_host,
    normal_host,
)
from pullguard.services.runtime.config import Upstream

#: ``resolve(host, port)`` -> addresses as strings, e.g. ["127.0.0.1", "::1"].
Resolver = Callable[[str, int], Awaitable[list[str]]]
#: Most addresses of one name tried in turn when connecting.
MAX_CONNECT_ATTEMPTS = 4
#: How long the answer to "is the upstream itself on a non-public address" is kept.
UPSTREAM_LOCALITY_TTL = 60.0
SocketOption = Any
#: Seconds a connecting thread waits for the guard when no connect timeout is set.
GUARD_WAIT = 30.0
#: Bytes asked of a connection per read (httpcore's own default is 64 KiB).
READ_BYTES = 1024 * 1024


class ForbiddenAddress(Exception):
    """A connection to a non-public address that the upstream may not send us to."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to non-public address {address}")
        self.host = host
        self.address = address


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``getaddrinfo`` gives for ``host``, in its order, without repeats."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class AddressGuard:
    """Decides which addresses a connection to ``host`` may use (see module doc)."""

    def __init__(
        self,
        upstream: Upstream,
        resolve: Resolver = system_resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream_host = normal_host(upstream.host)
        self._resolve = resolve
        self._clock = clock
        self._upstream_local: tuple[bool, float] | None = None

    async def addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """Checked addresses to connect to; raises ForbiddenAddress, OSError or TimeoutError."""
        resolved = await self._lookup(host, port, timeout)
        if normal_host(host) == self._upstream_host:
            return resolved  # the operator chose this host
        for address in resolved:
            if is_non_global_address(_parse(address)):
                if not await self._upstream_is_local(port, timeout):
                    raise ForbiddenAddress(host, address)
                break
        return resolved

    async def _lookup(self, host: str, port: int, timeout: float | None) -> list[str]:
        literal = host_address(host)
        if literal is not None:
            return [str(literal)]
        addresses = await asyncio.wait_for(self._resolve(host, port), timeout)
        if not addresses:
            raise OSError(f"no address for {host}")
        return addresses

    async def _upstream_is_local(self, port: int, timeout: float | None) -> bool:
        """Is the upstream itself on a non-public address (literal, name or resolved)?"""
        if is_non_global_host(self._upstream_host):
            return True
        cached = self._upstream_local
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        try:
            resolved = await self._lookup(self._upstream_host, port, timeout)
        except (OSError, TimeoutError):
            return False  # unknown counts as public: the stricter answer
        local = any(is_non_global_address(_parse(a)) for a in resolved)
        self._upstream_local = (local, self._clock() + UPSTREAM_LOCALITY_TTL)
        return local


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        # A resolver answer that is not an address is not trusted as public.
        return ipaddress.IPv4Address(0)


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore backend that connects only to addresses the guard approved.

    It dials in the worker thread that asked for the connection (see
    :mod:`threaded`), but the guard runs on the event loop the requests come
    from (:meth:`serve_from`), where the resolver and the upstream's locality
    cache live: one guard, one cache, whatever thread connects.
    """

    def __init__(self, guard: AddressGuard, inner: httpcore.NetworkBackend | None = None) -> None:
        self._guard = guard
        self._inner = inner or httpcore.SyncBackend()
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the guard on ``loop``, the event loop that sends the requests."""
        self._loop = loop

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        if self._loop is None:
            raise httpcore.ConnectError("no event loop to check the address on")
        checked = asyncio.run_coroutine_threadsafe(
            self._guard.addresses(host, port, timeout), self._loop
        )
        try:
            # The guard bounds its own lookups by ``timeout``; this bound only
            # keeps the thread from waiting on a loop that stopped.
            addresses = checked.result((timeout or GUARD_WAIT) + 1.0)
        except TimeoutError:
            checked.cancel()
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        failure: Exception | None = None
        for address in addresses[:MAX_CONNECT_ATTEMPTS]:
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("the fetcher does not use unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_transport(
    ssl_context: ssl.SSLContext, limits: httpx.Limits, backend: GuardedBackend
) -> httpx.HTTPTransport:
    """httpx's synchronous transport, its HTTP/1.1 pool connecting through ``backend``.

    httpx takes no network backend argument, so the pool it built is replaced
    by an identical one that has ours (httpx 0.27 and 0.28 keep it as
    ``_pool``; the check below fails loudly if that ever changes).
    """
    transport = httpx.HTTPTransport(verify=ssl_context, trust_env=False, limits=limits)
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
        raise RuntimeError("this httpx version keeps no _pool: cannot guard connections")
    # httpcore reads 64 KiB per step and offers no setting: blobs of hundreds
    # of MiB then cost thousands of parser steps each.
    if not isinstance(getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", None), int):
        raise RuntimeError("this httpcore version has no READ_NUM_BYTES to raise")
    httpcore.HTTP11Connection.READ_NUM_BYTES = READ_BYTES
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=backend,
    )
    return transport


def ssl_context(upstream: Upstream) -> ssl.SSLContext:
    """Certificate verification with the system store, or only ``tls.ca_file``."""
    context = ssl.create_default_context(cafile=upstream.tls.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class PeerFacts:
    spki_sha256: str = ""
    tls_version: str = ""
    address: str = ""


def peer_facts(response: httpx.Response) -> PeerFacts:
    """TLS and address facts of the connection a response came over (empty if unknown)."""
    stream = response.extensions.get("network_stream")
    if stream is None:
        return PeerFacts()
    address = _format_address(stream.get_extra_info("server_addr"))
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return PeerFacts(address=address)
    der = ssl_object.getpeercert(True)  # positional: the sync stream gives ssl._SSLSocket
    return PeerFacts(
        spki_sha256=spki_sha256(der) if der else "",
        tls_version=str(ssl_object.version() or ""),
        address=address,
    )


@functools.lru_cache(maxsize=64)
def spki_sha256(der: bytes) -> str:
    """SHA-256 (hex) of a DER certificate's SubjectPublicKeyInfo; "" if unreadable."""
    try:
        public_key = x509.load_der_x509_certificate(der).public_key()
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, UnsupportedAlgorithm):
        return ""  # no hash means no pin can match: the source layer fails closed
    return hashlib.sha256(spki).hexdigest()


def _format_address(value: object) -> str:
    if not isinstance(value, tuple) or len(value) < 2:
        return ""
    host, port = str(value[0]), value[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
