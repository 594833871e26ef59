"""A scriptable fake upstream registry that can misbehave on purpose.

It plays whatever a test scripts: statuses, headers (lying ones included),
bodies given whole or produced chunk by chunk (stalls, trickles, endless
streams), redirects and auth challenges. It records every request with all
its headers, so a test can assert that a request was never made or that no
``Authorization`` reached a host. It listens on 127.0.0.1 on a free port,
over plain http or, given an ``ssl.SSLContext``, https (see :func:`tls_material`
for a throw-away CA); run several to play a registry, a token realm and a
"CDN" on other ports.

Example::

    async with HostileUpstream() as registry, HostileUpstream() as cdn:
        registry.redirect("/v2/x/blobs/sha256:..", f"{cdn.url}/data")
        cdn.reply("/data", Reply(body=b"hello"))
        ...
        assert "authorization" not in cdn.seen("/data")[0].headers
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyStream = Callable[[], AsyncIterator[bytes]]


@dataclass
class Reply:
    """One scripted response.

    ``body`` is sent as is; ``stream`` (if given) produces the body chunk by
    chunk instead. Headers are sent exactly as given, so ``Content-Length``
    or ``Content-Encoding`` can lie. ``delay`` waits before the headers.
    ``hang_up`` closes the connection after the body instead of ending the
    message, so a body shorter than its ``Content-Length`` is cut off, and a
    chunked one lacks its last chunk.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: BodyStream | None = None
    delay: float = 0.0
    hang_up: bool = False


@dataclass
class Seen:
    """One request as the fake upstream received it."""

    method: str
    path: str  # raw path, without the query
    query: str  # raw query string
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    bytes_sent: int = 0  # body bytes written back (before the client hung up)


_SEEN: Any = web.RequestKey("seen", Seen) if hasattr(web, "RequestKey") else "seen"


class HostileUpstream:
    """An aiohttp server on 127.0.0.1:<free port> that plays scripted routes.

    Unscripted paths answer 404 with an OCI error body.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.requests: list[Seen] = []
        self._routes: dict[tuple[str, str], Handler] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # -- life cycle ----------------------------------------------------------

    async def start(self) -> HostileUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn the bound port
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HostileUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (https with TLS), no trailing slash."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}"

    # -- scripting -----------------------------------------------------------

    def reply(self, path: str, *replies: Reply, method: str = "GET") -> None:
        """Answer ``method path`` with ``replies`` in turn; the last one repeats."""
        script = list(replies) or [Reply()]
        count = 0

        async def handler(request: web.Request) -> web.StreamResponse:
            nonlocal count
            chosen = script[min(count, len(script) - 1)]
            count += 1
            return await self.send(request, chosen)

        self._routes[(method, path)] = handler

    def handle(self, path: str, handler: Handler, method: str = "GET") -> None:
        """Answer ``method path`` with a custom aiohttp handler (use :meth:`send`)."""
        self._routes[(method, path)] = handler

    def redirect(self, path: str, location: str, status: int = 307) -> None:
        """Answer ``GET path`` with a redirect to ``location`` (sent verbatim)."""
        self.reply(path, Reply(status=status, headers={"Location": location}))

    def guard(
        self, path: str, authorization: str, ok: Reply, challenge: Reply, method: str = "GET"
    ) -> None:
        """Answer ``ok`` when the request's Authorization equals ``authorization``,
        else ``challenge`` (typically :func:`bearer_challenge`)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            chosen = ok if request.headers.get("Authorization") == authorization else challenge
            return await self.send(request, chosen)

        self._routes[(method, path)] = handler

    def seen(self, path: str | None = None) -> list[Seen]:
        """Requests received, all or those for ``path``."""
        return [r for r in self.requests if path is None or r.path == path]

    # -- serving -------------------------------------------------------------

    async def send(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        """Write ``reply`` to ``request``, counting body bytes into its record."""
        record = request[_SEEN]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        response = web.StreamResponse(status=reply.status)
        for name, value in reply.headers.items():
            response.headers[name] = value
        if reply.stream is None and "Content-Length" not in response.headers:
            response.headers["Content-Length"] = str(len(reply.body))
        await response.prepare(request)
        try:
            if reply.stream is None:
                if reply.body:
                    await response.write(reply.body)
                    record.bytes_sent += len(reply.body)
            else:
                async for chunk in reply.stream():
                    await response.write(chunk)
                    record.bytes_sent += len(chunk)
            if reply.hang_up:
                await asyncio.sleep(0.01)  # let the bytes leave before the close
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            # The client hung up: exactly what the fetcher should do to a liar.
            pass
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = Seen(request.method, raw_path, query, headers)
        self.requests.append(record)
        request[_SEEN] = record
        handler = self._routes.get((request.method, raw_path))
        if handler is None:
            body = {"errors": [{"code": "NAME_UNKNOWN", "message": "not scripted"}]}
            return web.json_response(body, status=404)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await handler(request)
        finally:
            if task is not None:
                self._tasks.discard(task)


# -- helpers for scripts -----------------------------------------------------


def bearer_challenge(realm: str, service: str = "", scope: str = "") -> Reply:
    """A 401 with ``WWW-Authenticate: Bearer realm=..,service=..,scope=..``."""
    params = [f'realm="{realm}"']
    if service:
        params.append(f'service="{service}"')
    if scope:
        params.append(f'scope="{scope}"')
    return Reply(status=401, headers={"WWW-Authenticate": "Bearer " + ",".join(params)})


def token_reply(
    token: str = "test-token", expires_in: int | None = 300, key: str = "token"
) -> Reply:
    """A token realm's JSON answer."""
    data: dict[str, Any] = {key: token}
    if expires_in is not None:
        data["expires_in"] = expires_in
    return Reply(headers={"Content-Type": "application/json"}, body=json.dumps(data).encode())


def endless(chunk: bytes = b"\0" * 65536) -> BodyStream:
    """A body that never ends."""

    async def stream() -> AsyncIterator[bytes]:
        while True:
            yield chunk

    return stream


def stall_after(first: bytes, pause: float = 3600.0) -> BodyStream:
    """Send ``first``, then go quiet for ``pause`` seconds (and end)."""

    async def stream() -> AsyncIterator[bytes]:
        yield first
        await asyncio.sleep(pause)

    return stream


def trickle(data: bytes, interval: float, size: int = 1) -> BodyStream:
    """Send ``data`` ``size`` bytes at a time, one piece every ``interval`` seconds."""

    async def stream() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), size):
            yield data[offset : offset + size]
            await asyncio.sleep(interval)

    return stream


def gzip_bytes(data: bytes, wbits: int = zlib.MAX_WBITS | 16) -> bytes:
    """``data`` gzip-encoded (zlib-wrapped with ``wbits=15``, raw deflate with -15)."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return encoder.compress(data) + encoder.flush()


def gzip_bomb(piece: int = 1024 * 1024) -> BodyStream:
    """An endless gzip stream of zeros: about 1 KiB on the wire per MiB decoded."""

    async def stream() -> AsyncIterator[bytes]:
        encoder = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        zeros = b"\0" * piece
        while True:
            yield encoder.compress(zeros) + encoder.flush(zlib.Z_SYNC_FLUSH)
            await asyncio.sleep(0)

    return stream


def empty_deflate_blocks() -> BodyStream:
    """An endless gzip stream that decodes to nothing: a header, then empty
    non-final stored blocks (``00 0000 ffff``), forever."""

    async def stream() -> AsyncIterator[bytes]:
        yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
        while True:
            yield b"\x00\x00\x00\xff\xff" * 4096
            await asyncio.sleep(0)

    return stream


@dataclass(frozen=True)
class TlsMaterial:
    """A throw-away CA and a server certificate for 127.0.0.1 it signed."""

    ca_file: Path  # PEM of the CA certificate
    server_context: ssl.SSLContext  # for HostileUpstream(ssl_context=...)
    certificate_der: bytes  # the server certificate
    spki_sha256: str  # hex SHA-256 of the server certificate's SubjectPublicKeyInfo


def tls_material(directory: Path) -> TlsMaterial:
    """Generate a CA and a 127.0.0.1 server certificate into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullguard test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "server.key"
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    spki = server_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TlsMaterial(
        ca_file=ca_file,
        server_context=context,
        certificate_der=server_cert.public_bytes(serialization.Encoding.DER),
        spki_sha256=hashlib.sha256(spki).hexdigest(),
    )
