"""Process settings: listen addresses, upstreams, target, limits, telemetry, services.

Each type comes with the reader that builds it from its YAML mapping; every
error names the key (see :mod:`.reader`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pullguard.services.runtime.config.reader import Reader

LAYERS = ("analysis", "fetcher", "format", "hashverify", "source", "signature", "vulnerability")
SERVICES = (*LAYERS, "gateway")

_ALIAS_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]{1,5})?")
_HOSTPORT_RE = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")

#: One repository path component, and a whole repository path (distribution's grammar).
COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{COMPONENT}(?:/{COMPONENT})*")


#: Hosts the real public registries legitimately redirect blobs and token
#: requests to; applied when an upstream's URL names one of these registries.
WELL_KNOWN_UPSTREAMS: dict[str, dict[str, tuple[str, ...]]] = {
    "registry-1.docker.io": {
        "redirect_hosts": ("production.cloudflare.docker.com", "*.cloudflare.docker.com"),
        "realm_hosts": ("auth.docker.io",),
        "canonical_host": ("docker.io",),
    },
    "ghcr.io": {
        "redirect_hosts": ("pkg-containers.githubusercontent.com",),
        "realm_hosts": ("ghcr.io",),
        "canonical_host": ("ghcr.io",),
    },
    "quay.io": {
        "redirect_hosts": ("cdn.quay.io", "cdn01.quay.io", "cdn02.quay.io", "cdn03.quay.io"),
        "realm_hosts": ("quay.io",),
        "canonical_host": ("quay.io",),
    },
    "registry.k8s.io": {
        "redirect_hosts": ("*.pkg.dev", "*.amazonaws.com"),
        "realm_hosts": ("registry.k8s.io",),
        "canonical_host": ("registry.k8s.io",),
    },
}


@dataclass(frozen=True)
class TlsRule:
    ca_file: str = ""  # path of a PEM bundle replacing the system trust store
    spki_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class Upstream:
    alias: str
    url: str
    scheme: str
    host: str
    port: int
    insecure: bool
    username: str | None
    password: str | None = field(repr=False)
    redirect_hosts: tuple[str, ...]
    realm_hosts: tuple[str, ...]
    canonical_host: str
    tls: TlsRule = TlsRule()
    #: While the upstream cannot be reached, a tag pull gets the tag's last
    #: admitted digest ("serve", with a Warning) or a 502/504 ("refuse").
    offline_tags: str = "serve"

    @property
    def netloc(self) -> str:
        return _netloc(self.scheme, self.host, self.port)


@dataclass(frozen=True)
class Limits:
    """Every read is bounded; the defaults follow THREATS.md's table."""

    manifest_bytes: int = 4 * 1024 * 1024
    config_bytes: int = 4 * 1024 * 1024
    blob_bytes: int = 16 * 1024 * 1024 * 1024
    token_bytes: int = 1024 * 1024
    error_body_bytes: int = 1024 * 1024
    signature_bytes: int = 4 * 1024 * 1024
    signatures: int = 100
    layers: int = 1000
    index_entries: int = 10000
    redirects: int = 5
    connect_timeout: float = 10.0
    idle_timeout: float = 30.0
    manifest_deadline: float = 60.0
    blob_deadline: float = 3600.0
    min_bytes_per_second: int = 16 * 1024
    layer_timeout: float = 120.0
    retries: int = 2
    #: Tags asked per page of an upstream's tag list; pages and tags read, at most.
    tag_page_size: int = 1000
    tag_pages: int = 100
    tags: int = 20000
    #: Front door: open connections, and seconds to send a request head or a body.
    max_connections: int = 512
    header_timeout: float = 10.0
    body_timeout: float = 10.0


@dataclass(frozen=True)
class Telemetry:
    exporter: str = "none"  # none, console or otlp
    endpoint: str = ""
    service_namespace: str = "pullguard"


@dataclass(frozen=True)
class Target:
    """Where admitted images are published besides the embedded store.

    ``embedded`` keeps them only in the admitted store under ``state_dir``;
    ``registry`` also pushes each admitted image to ``url`` under
    ``<prefix>/<alias>/<repository>``.
    """

    kind: str = "embedded"
    url: str = ""
    insecure: bool = False
    prefix: str = ""
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def repository(self, name: str) -> str:
        """The target's repository for an admitted ``<alias>/<repository>``."""
        return f"{self.prefix}/{name}" if self.prefix else name


@dataclass(frozen=True)
class ServicesTls:
    """Mutual TLS between the gateway and the layers: PEM bytes read at load.

    Every process presents ``certificate`` and accepts only peers whose
    certificate ``ca`` signed; ``server_name``, when set, replaces the host of
    a layer's address as the name its certificate must carry."""

    ca: bytes = field(repr=False)
    certificate: bytes = field(repr=False)
    key: bytes = field(repr=False)
    server_name: str = ""
    #: The configuration file, for error messages.
    source: str = ""


def read_hostport(reader: Reader, value: Any, key: str) -> str:
    text = reader.string(value, key)
    match = _HOSTPORT_RE.fullmatch(text)
    if match is None or not 0 <= int(match.group("port")) <= 65535:
        raise reader.fail(key, f"must be HOST:PORT, got {text!r}")
    return text


#: sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107


def _service_address(reader: Reader, value: Any, key: str) -> str:
    """HOST:PORT, or ``unix:/absolute/path`` for a Unix domain socket."""
    text = reader.string(value, key)
    if not text.startswith("unix:"):
        return read_hostport(reader, text, key)
    path = text.removeprefix("unix:")
    if not path.startswith("/") or path.startswith("//"):
        raise reader.fail(key, f"must be unix:/ABSOLUTE/PATH, got {text!r}")
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise reader.fail(key, f"socket path is longer than {MAX_SOCKET_PATH} bytes: {path!r}")
    return text


def read_services_tls(reader: Reader, raw: Any) -> ServicesTls | None:
    if raw is None:
        return None
    data = reader.mapping(raw, "services_tls")
    reader.known(data, "services_tls", {"ca", "certificate", "key", "server_name"})
    pem = {
        name: reader.read_file(data.get(name), f"services_tls.{name}")[1].encode()
        for name in ("ca", "certificate", "key")
    }
    server_name = data.get("server_name")
    if server_name is not None:
        server_name = reader.string(server_name, "services_tls.server_name")
    return ServicesTls(**pem, server_name=server_name or "", source=reader.source)


def read_upstream(reader: Reader, alias: str, raw: Any) -> Upstream:
    key = f"upstreams.{alias}"
    if not _ALIAS_RE.fullmatch(alias):
        raise reader.fail(key, "alias must be a lowercase registry-style name")
    data = reader.mapping(raw, key)
    reader.known(
        data,
        key,
        {
            "url",
            "insecure",
            "username",
            "password",
            "password_file",
            "redirect_hosts",
            "realm_hosts",
            "canonical_host",
            "tls",
            "offline_tags",
        },
    )
    offline_tags = data.get("offline_tags", "serve")
    if offline_tags not in ("serve", "refuse"):
        raise reader.fail(f"{key}.offline_tags", f"must be serve or refuse, got {offline_tags!r}")
    parts, insecure, host, port = _registry_url(reader, data, key)
    username, password = _credentials(reader, data, key)
    known = WELL_KNOWN_UPSTREAMS.get(host, {})
    redirect_hosts = reader.strings(data.get("redirect_hosts"), f"{key}.redirect_hosts")
    realm_hosts = reader.strings(data.get("realm_hosts"), f"{key}.realm_hosts")
    canonical = data.get("canonical_host")
    tls = _tls(reader, data.get("tls"), f"{key}.tls", parts.scheme)
    return Upstream(
        alias=alias,
        url=f"{parts.scheme}://{parts.netloc}",
        scheme=parts.scheme,
        host=host,
        port=port,
        insecure=insecure,
        username=username,
        password=password,
        redirect_hosts=redirect_hosts or known.get("redirect_hosts", ()),
        realm_hosts=realm_hosts or known.get("realm_hosts", ()),
        canonical_host=(
            reader.string(canonical, f"{key}.canonical_host")
            if canonical is not None
            else (known.get("canonical_host") or (_netloc(parts.scheme, host, port),))[0]
        ),
        tls=tls,
        offline_tags=offline_tags,
    )


def _registry_url(
    reader: Reader, data: dict[str, Any], key: str
) -> tuple[SplitResult, bool, str, int]:
    """A registry's ``url`` and ``insecure``: https, or plain http only when said."""
    url = reader.string(data.get("url"), f"{key}.url").rstrip("/")
    parts = urlsplit(url)
    insecure = reader.boolean(data.get("insecure", False), f"{key}.insecure")
    if parts.scheme not in ("https", "http"):
        raise reader.fail(
            f"{key}.url", f"scheme must be https (or http with insecure), got {url!r}"
        )
    if parts.scheme == "http" and not insecure:
        raise reader.fail(f"{key}.url", "plain http needs insecure: true")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise reader.fail(f"{key}.url", "must not carry credentials, a query or a fragment")
    if parts.path not in ("", "/"):
        raise reader.fail(f"{key}.url", "must not carry a path")
    host = parts.hostname
    if not host:
        raise reader.fail(f"{key}.url", "has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise reader.fail(f"{key}.url", "has an invalid port") from None
    return parts, insecure, host, port


def _credentials(reader: Reader, data: dict[str, Any], key: str) -> tuple[str | None, str | None]:
    """``username`` with ``password`` or ``password_file``: both or neither."""
    username = data.get("username")
    password = data.get("password")
    if username is not None:
        username = reader.string(username, f"{key}.username")
    if "password_file" in data:
        if password is not None:
            raise reader.fail(f"{key}.password_file", "give password or password_file, not both")
        _, text = reader.read_file(data["password_file"], f"{key}.password_file")
        password = text.strip()
        if not password:
            raise reader.fail(f"{key}.password_file", "the file holds no password")
    elif password is not None:
        password = reader.string(password, f"{key}.password")
    if (username is None) != (password is None):
        raise reader.fail(key, "username and password come together")
    return username, password


def read_target(reader: Reader, raw: Any, upstreams: Mapping[str, Upstream]) -> Target:
    """Where admitted images go besides the embedded store."""
    data = reader.mapping(raw, "target")
    known = {"kind", "url", "insecure", "prefix", "username", "password", "password_file"}
    reader.known(data, "target", known)
    kind = data.get("kind", "embedded")
    if kind == "embedded":
        for name in sorted(set(data) - {"kind"}):
            raise reader.fail(f"target.{name}", "applies only to kind registry")
        return Target()
    if kind != "registry":
        raise reader.fail("target.kind", f"must be embedded or registry, got {kind!r}")
    parts, insecure, host, port = _registry_url(reader, data, "target")
    username, password = _credentials(reader, data, "target")
    prefix = ""
    if "prefix" in data:
        prefix = reader.string(data["prefix"], "target.prefix")
        if not REPOSITORY_RE.fullmatch(prefix):
            raise reader.fail(
                "target.prefix",
                f"must be a repository path such as mirror/public (lowercase components"
                f" joined by /), got {prefix!r}",
            )
    # An image lands at <prefix>/<alias>/<repository>: every alias must be a
    # valid path component there (an alias such as host:port is not).
    for alias in upstreams:
        if not re.fullmatch(COMPONENT, alias):
            raise reader.fail(
                f"upstreams.{alias}",
                "with target kind registry, an alias must be a repository path component"
                " (no ':'), since images land at <prefix>/<alias>/<repository>",
            )
    return Target(
        kind="registry",
        url=f"{parts.scheme}://{parts.netloc}",
        insecure=insecure,
        prefix=prefix,
        host=host,
        port=port,
        username=username,
        password=password,
    )


_SPKI_RE = re.compile(r"[0-9a-f]{64}")


def _tls(reader: Reader, raw: Any, key: str, scheme: str) -> TlsRule:
    if raw is None:
        return TlsRule()
    data = reader.mapping(raw, key)
    reader.known(data, key, {"ca_file", "spki_sha256"})
    if scheme != "https":
        raise reader.fail(key, "TLS settings need an https upstream")
    ca_file = ""
    if "ca_file" in data:
        path, pem = reader.read_file(data["ca_file"], f"{key}.ca_file")
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise reader.fail(f"{key}.ca_file", f"{path} holds no PEM certificate")
        ca_file = str(path)
    pins = reader.strings(data.get("spki_sha256"), f"{key}.spki_sha256")
    for i, pin in enumerate(pins):
        if not _SPKI_RE.fullmatch(pin):
            raise reader.fail(f"{key}.spki_sha256[{i}]", "must be 64 lowercase hex characters")
    return TlsRule(ca_file=ca_file, spki_sha256=pins)


def _netloc(scheme: str, host: str, port: int) -> str:
    """The registry name clients (and signers such as cosign) use: host[:port]."""
    default = 443 if scheme == "https" else 80
    return host if port == default else f"{host}:{port}"


def read_limits(reader: Reader, raw: Any) -> Limits:
    data = reader.mapping(raw, "limits")
    defaults = Limits()
    fields = {name: getattr(defaults, name) for name in defaults.__dataclass_fields__}
    reader.known(data, "limits", set(fields))
    values: dict[str, Any] = {}
    for name, default in fields.items():
        if name not in data:
            continue
        if isinstance(default, int):
            values[name] = reader.integer(data[name], f"limits.{name}", 0)
        else:
            values[name] = reader.number(data[name], f"limits.{name}", 0.001)
    return Limits(**values)


#: Part of every policy version; raised when what a verdict checks changes,


def read_telemetry(reader: Reader, raw: Any) -> Telemetry:
    telemetry_raw = reader.mapping(raw, "telemetry")
    reader.known(telemetry_raw, "telemetry", {"exporter", "endpoint"})
    exporter = telemetry_raw.get("exporter", "none")
    if exporter not in ("none", "console", "otlp"):
        raise reader.fail("telemetry.exporter", f"must be none, console or otlp, got {exporter!r}")
    endpoint = telemetry_raw.get("endpoint", "")
    if exporter == "otlp" and endpoint:
        # Optional: without it the exporter reads OTEL_EXPORTER_OTLP_*.
        endpoint = reader.string(endpoint, "telemetry.endpoint")
    return Telemetry(exporter=exporter, endpoint=endpoint)


def read_services(reader: Reader, raw: Any) -> dict[str, str]:
    services_raw = reader.mapping(raw, "services")
    reader.known(services_raw, "services", set(LAYERS))
    return {name: _layer_target(reader, v, f"services.{name}") for name, v in services_raw.items()}


#: gRPC target schemes of a layer run as several replicas (client-side round-robin).
REPLICATED_SCHEMES = ("ipv4:", "ipv6:", "dns:")
MAX_REPLICA_ADDRESSES = 64


def is_replicated(address: str) -> bool:
    """Whether a layer address names several replicas (a list, or a DNS name)."""
    return address.startswith(REPLICATED_SCHEMES)


def _layer_target(reader: Reader, value: Any, key: str) -> str:
    """One address, ``dns:///NAME:PORT``, or a list of IP HOST:PORT (one gRPC target)."""
    if isinstance(value, str) and value.startswith("dns:"):
        if not value.startswith("dns:///"):
            raise reader.fail(key, f"must be dns:///NAME:PORT (no DNS authority), got {value!r}")
        read_hostport(reader, value.removeprefix("dns:///"), key)
        return value
    if not isinstance(value, list):
        return _service_address(reader, value, key)
    addresses = reader.strings(value, key)
    if not 1 <= len(addresses) <= MAX_REPLICA_ADDRESSES:
        raise reader.fail(key, f"must list 1 to {MAX_REPLICA_ADDRESSES} addresses")
    families = set()
    for index, address in enumerate(addresses):
        read_hostport(reader, address, f"{key}[{index}]")
        host = address.rpartition(":")[0].strip("[]")
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise reader.fail(
                f"{key}[{index}]",
                f"a list holds IP addresses; for a name use dns:///{address}, got {address!r}",
            ) from None
    if len(families) > 1:
        raise reader.fail(key, "mixes IPv4 and IPv6 addresses")
    if len(addresses) == 1:
        return addresses[0]
    return f"ipv{families.pop()}:{','.join(addresses)}"


#: Where a gateway replica's id comes from when the file gives none.
REPLICA_ENV = "PULLGUARD_REPLICA_ID"
_REPLICA_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def read_replica_id(reader: Reader, raw: Any) -> str:
    """``replica_id``, else ``$PULLGUARD_REPLICA_ID``, else the host name.

    Names the replica's own staging folder (``state_dir/staging/<id>``), the
    only one it empties at start-up: replicas sharing a state_dir need
    distinct ids. A host name is lowercased and its other characters become
    ``-``; a given id must already be a lowercase name.
    """
    if raw is not None:
        text = reader.string(raw, "replica_id")
    elif os.environ.get(REPLICA_ENV):
        text = os.environ[REPLICA_ENV]
    else:
        host = re.sub(r"[^a-z0-9_.-]", "-", socket.gethostname().lower())
        text = host.lstrip("-_.")[:63] or "gateway"
    if not _REPLICA_RE.fullmatch(text):
        origin = "replica_id" if raw is not None else REPLICA_ENV
        raise reader.fail(
            origin, f"must be a lowercase name of letters, digits, '.', '_', '-', got {text[:80]!r}"
        )
    return text
