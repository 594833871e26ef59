"""pullguard's configuration: YAML in, validated frozen dataclasses out.

Every error names the file, the key (as a dotted path such as
``policy.rules[1].signature.keys[0]``) and what is wrong, and is raised as
:class:`ConfigError` before any service starts. Relative paths in a file
resolve against that file's folder; in the built-in default configuration,
against the current directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pullguard.services.runtime.configload import ConfigUnreadable, Gathered, load_yaml
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.patterns import PatternError, compile_anchored

LAYERS = ("analysis", "fetcher", "format", "hashverify", "source", "signature")
SERVICES = (*LAYERS, "gateway")

_ALIAS_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]{1,5})?")
_HOSTPORT_RE = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

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
class KeylessIdentity:
    issuer: str
    subject: str = ""
    subject_regex: str = ""


@dataclass(frozen=True)
class SignatureRule:
    mode: str  # "none", "enforce" or "warn"
    keys: tuple[tuple[str, str], ...] = ()  # (file name, PEM text)
    threshold: int = 1
    keyless: tuple[KeylessIdentity, ...] = ()
    trusted_root: str = ""  # trusted_root.json text; "" = sigstore's production root
    #: Where trusted_root was read from, for the signature layer's readiness
    #: check; not part of the policy (the text is).
    trusted_root_file: str = field(default="", repr=False, compare=False)
    rekor: str = "optional"  # "required" or "optional"
    repository: str = ""  # where signatures live, on the same upstream
    identity: str = ""  # "<host>/<repository>" signatures must name, when remapped


@dataclass(frozen=True)
class TagRule:
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()  # anchored regular expressions
    require_digest: bool = False
    digest_pulls: str = "allow"  # "allow", "pinned" or "deny"


@dataclass(frozen=True)
class LayerRule:
    inspect: bool = True
    setuid: str = "report"  # "report" or "deny"
    devices: str = "deny"
    max_uncompressed_bytes: int = 8 * 1024 * 1024 * 1024
    max_entries: int = 1_000_000
    max_ratio: int = 1000


@dataclass(frozen=True)
class ProvenanceRule:
    required: bool = False
    builder_ids: tuple[str, ...] = ()
    source_repositories: tuple[str, ...] = ()
    signers: SignatureRule = SignatureRule(mode="none")


@dataclass(frozen=True)
class Rule:
    index: int
    match: str
    pattern: re.Pattern[str]
    signature: SignatureRule
    pins: Mapping[str, str]
    foreign_url_hosts: tuple[str, ...]
    layer_media_types: tuple[str, ...]
    tags: TagRule = TagRule()
    layers: LayerRule = LayerRule()
    approved_sources: tuple[str, ...] = ()
    require_source_annotation: bool = False
    provenance: ProvenanceRule = ProvenanceRule()
    artifact_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    deny: tuple[tuple[str, re.Pattern[str]], ...]
    deny_digests: frozenset[str]
    #: A file of known-bad digests, one per line (# comments allowed), that
    #: may be large; hashverify and analysis reload it when it changes.
    deny_digests_file: Path | None = None


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


@dataclass(frozen=True)
class Config:
    source: str
    base_dir: Path
    listen: str
    grpc_listen: str
    state_dir: Path
    upstreams: Mapping[str, Upstream]
    default_upstream: str
    target: Target
    policy: Policy
    limits: Limits
    telemetry: Telemetry
    services: Mapping[str, str]
    policy_version: str
    services_tls: ServicesTls | None = None

    def with_services(self, services: Mapping[str, str]) -> Config:
        merged = dict(self.services)
        merged.update(services)
        return _replace(self, services=merged)


def _replace(config: Config, **changes: Any) -> Config:
    from dataclasses import replace

    return replace(config, **changes)


class _Reader:
    """Typed access to a YAML mapping that reports the key path on error."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.gathered = Gathered()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {_kind(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.fail(key, f"keys must be strings, got {name!r}")
        return value

    def known(self, value: dict[str, Any], key: str, allowed: set[str]) -> None:
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key (known: {', '.join(sorted(allowed))})")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {_kind(value)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_kind(value)}")
        return value

    def number(self, value: Any, key: str, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(key, f"must be a number >= {minimum}, got {value!r}")
        return float(value)

    def integer(self, value: Any, key: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {_kind(value)}")
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))

    def path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(text)
        return path if path.is_absolute() else self.base_dir / path

    def read_file(self, value: Any, key: str, limit: int = 1024 * 1024) -> tuple[Path, str]:
        path = self.path(value, key)
        try:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise self.fail(key, f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise self.fail(key, f"{path} is larger than {limit} bytes")
        try:
            return path, data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(key, f"{path} is not UTF-8 text") from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, str):
        return f"string {value[:60]!r}"
    return type(value).__name__


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Compile a repository glob: ``*`` stays within one path segment,
    ``**`` spans segments (``a/**`` matches ``a/b/c``; ``**/x/**`` matches ``x/y``)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/[^/]+)*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Exact, case-sensitive host glob match; ``*`` matches one or more labels' worth
    of characters but never a dot-less empty label."""
    for pattern in patterns:
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif "*" in pattern:
            if re.fullmatch(re.escape(pattern).replace(r"\*", "[a-z0-9-]*"), host):
                return True
        elif host == pattern:
            return True
    return False


def _hostport(reader: _Reader, value: Any, key: str) -> str:
    text = reader.string(value, key)
    match = _HOSTPORT_RE.fullmatch(text)
    if match is None or not 0 <= int(match.group("port")) <= 65535:
        raise reader.fail(key, f"must be HOST:PORT, got {text!r}")
    return text


#: sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107


def _service_address(reader: _Reader, value: Any, key: str) -> str:
    """HOST:PORT, or ``unix:/absolute/path`` for a Unix domain socket."""
    text = reader.string(value, key)
    if not text.startswith("unix:"):
        return _hostport(reader, text, key)
    path = text.removeprefix("unix:")
    if not path.startswith("/") or path.startswith("//"):
        raise reader.fail(key, f"must be unix:/ABSOLUTE/PATH, got {text!r}")
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise reader.fail(key, f"socket path is longer than {MAX_SOCKET_PATH} bytes: {path!r}")
    return text


def _services_tls(reader: _Reader, raw: Any) -> ServicesTls | None:
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


def _upstream(reader: _Reader, alias: str, raw: Any) -> Upstream:
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
    reader: _Reader, data: dict[str, Any], key: str
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


def _credentials(reader: _Reader, data: dict[str, Any], key: str) -> tuple[str | None, str | None]:
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


def _target(reader: _Reader, raw: Any, upstreams: Mapping[str, Upstream]) -> Target:
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
        if not _REPOSITORY_RE.fullmatch(prefix):
            raise reader.fail(
                "target.prefix",
                f"must be a repository path such as mirror/public (lowercase components"
                f" joined by /), got {prefix!r}",
            )
    # An image lands at <prefix>/<alias>/<repository>: every alias must be a
    # valid path component there (an alias such as host:port is not).
    for alias in upstreams:
        if not re.fullmatch(_COMPONENT, alias):
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


def _tls(reader: _Reader, raw: Any, key: str, scheme: str) -> TlsRule:
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


def anchored_regex(reader: _Reader, value: Any, key: str) -> str:
    """A regular expression that must be anchored at both ends and compile."""
    text = reader.string(value, key)
    try:
        compile_anchored(text)
    except PatternError as exc:
        raise reader.fail(key, str(exc)) from None
    return text


def _keyless(reader: _Reader, raw: Any, key: str) -> tuple[KeylessIdentity, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise reader.fail(key, f"must be a list, got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        data = reader.mapping(item, where)
        reader.known(data, where, {"issuer", "subject", "subject_regex"})
        issuer = reader.string(data.get("issuer"), f"{where}.issuer")
        if ("subject" in data) == ("subject_regex" in data):
            raise reader.fail(where, "give exactly one of subject or subject_regex")
        if "subject" in data:
            out.append(
                KeylessIdentity(issuer, subject=reader.string(data["subject"], f"{where}.subject"))
            )
        else:
            regex = anchored_regex(reader, data["subject_regex"], f"{where}.subject_regex")
            out.append(KeylessIdentity(issuer, subject_regex=regex))
    return tuple(out)


def _keys(reader: _Reader, raw: Any, key: str) -> tuple[tuple[str, str], ...]:
    keys: list[tuple[str, str]] = []
    for i, item in enumerate(reader.strings(raw, key)):
        path, pem = reader.read_file(item, f"{key}[{i}]")
        if "-----BEGIN PUBLIC KEY-----" not in pem:
            raise reader.fail(f"{key}[{i}]", f"{path} is not a PEM public key")
        # Named as the operator wrote it: file names alone collide (cosign
        # names every key cosign.pub), and the name identifies the signer.
        keys.append((item, pem))
    return tuple(keys)


def _signature(reader: _Reader, raw: Any, key: str, allow_none: bool = True) -> SignatureRule:
    if raw is None or (raw == "none" and allow_none):
        return SignatureRule(mode="none")
    if isinstance(raw, str):
        raise reader.fail(key, f"must be none or a mapping with keys or keyless, got {raw!r}")
    data = reader.mapping(raw, key)
    reader.known(
        data,
        key,
        {"keys", "keyless", "threshold", "mode", "trusted_root", "rekor", "repository", "identity"},
    )
    mode = data.get("mode", "enforce")
    if mode not in ("enforce", "warn"):
        raise reader.fail(f"{key}.mode", f"must be enforce or warn, got {mode!r}")
    keys = _keys(reader, data.get("keys"), f"{key}.keys")
    keyless = _keyless(reader, data.get("keyless"), f"{key}.keyless")
    if not keys and not keyless:
        raise reader.fail(key, "at least one of keys or keyless is required")
    threshold = reader.integer(data.get("threshold", 1), f"{key}.threshold", 1)
    if threshold > len(keys) + len(keyless):
        raise reader.fail(
            f"{key}.threshold",
            f"{threshold} is more than the {len(keys) + len(keyless)} signers given",
        )
    trusted_root, trusted_root_file = "", ""
    if "trusted_root" in data:
        root_path, trusted_root = reader.read_file(
            data["trusted_root"], f"{key}.trusted_root", limit=16 * 1024 * 1024
        )
        trusted_root_file = str(root_path)
    rekor = data.get("rekor", "optional")
    if rekor not in ("required", "optional"):
        raise reader.fail(f"{key}.rekor", f"must be required or optional, got {rekor!r}")
    repository = ""
    if "repository" in data:
        repository = reader.string(data["repository"], f"{key}.repository")
        if not _REPOSITORY_RE.fullmatch(repository):
            raise reader.fail(f"{key}.repository", f"{repository!r} is not a repository path")
    identity = ""
    if "identity" in data:
        identity = reader.string(data["identity"], f"{key}.identity")
        if not _IDENTITY_RE.fullmatch(identity):
            raise reader.fail(f"{key}.identity", f"must be <host>/<repository>, got {identity!r}")
    return SignatureRule(
        mode=mode,
        keys=keys,
        threshold=threshold,
        keyless=keyless,
        trusted_root=trusted_root,
        trusted_root_file=trusted_root_file,
        rekor=rekor,
        repository=repository,
        identity=identity,
    )


_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_IDENTITY_RE = re.compile(rf"[a-z0-9.-]+(?::[0-9]{{1,5}})?/{_COMPONENT}(?:/{_COMPONENT})*")


def _tags(reader: _Reader, raw: Any, key: str) -> TagRule:
    if raw is None:
        return TagRule()
    data = reader.mapping(raw, key)
    reader.known(data, key, {"deny", "allow", "require_digest", "digest_pulls"})
    deny = reader.strings(data.get("deny"), f"{key}.deny")
    allow_raw = data.get("allow")
    if allow_raw is not None and not isinstance(allow_raw, list):
        raise reader.fail(f"{key}.allow", f"must be a list, got {_kind(allow_raw)}")
    allow = tuple(
        anchored_regex(reader, item, f"{key}.allow[{i}]") for i, item in enumerate(allow_raw or [])
    )
    # A rule that restricts tags must not be bypassed by pulling a digest that
    # no allowed tag reaches (P-03c): digest pulls then default to "pinned",
    # unless the rule asks for digests outright.
    require_digest = reader.boolean(data.get("require_digest", False), f"{key}.require_digest")
    default_pulls = "pinned" if allow and not require_digest else "allow"
    digest_pulls = data.get("digest_pulls", default_pulls)
    if digest_pulls not in ("allow", "pinned", "deny"):
        raise reader.fail(
            f"{key}.digest_pulls", f"must be allow, pinned or deny, got {digest_pulls!r}"
        )
    return TagRule(
        deny=deny,
        allow=allow,
        require_digest=require_digest,
        digest_pulls=digest_pulls,
    )


def _layers(reader: _Reader, raw: Any, key: str) -> LayerRule:
    if raw is None:
        return LayerRule()
    data = reader.mapping(raw, key)
    defaults = LayerRule()
    reader.known(data, key, set(defaults.__dataclass_fields__))
    values: dict[str, Any] = {}
    if "inspect" in data:
        values["inspect"] = reader.boolean(data["inspect"], f"{key}.inspect")
    for name in ("setuid", "devices"):
        if name in data:
            if data[name] not in ("report", "deny"):
                raise reader.fail(f"{key}.{name}", f"must be report or deny, got {data[name]!r}")
            values[name] = data[name]
    for name in ("max_uncompressed_bytes", "max_entries", "max_ratio"):
        if name in data:
            values[name] = reader.integer(data[name], f"{key}.{name}", 1)
    return LayerRule(**values)


def _provenance(reader: _Reader, raw: Any, key: str) -> ProvenanceRule:
    if raw is None:
        return ProvenanceRule()
    data = reader.mapping(raw, key)
    reader.known(data, key, {"required", "builder_ids", "source_repositories", "signers"})
    signers = _signature(reader, data.get("signers"), f"{key}.signers", allow_none=False)
    return ProvenanceRule(
        required=reader.boolean(data.get("required", True), f"{key}.required"),
        builder_ids=reader.strings(data.get("builder_ids"), f"{key}.builder_ids"),
        source_repositories=reader.strings(
            data.get("source_repositories"), f"{key}.source_repositories"
        ),
        signers=signers,
    )


def _pins(reader: _Reader, raw: Any, key: str) -> dict[str, str]:
    if raw is None:
        return {}
    path, text = reader.read_file(raw, key, limit=64 * 1024 * 1024)
    try:
        data = load_yaml(text, str(path))
    except ConfigError as exc:
        raise reader.fail(key, exc.message) from None
    pins = reader.mapping(data, f"{key} ({path})")
    out: dict[str, str] = {}
    for tag, digest in pins.items():
        if not _TAG_RE.fullmatch(tag):
            raise reader.fail(f"{key} ({path}).{tag}", "is not a valid tag")
        try:
            parse_digest(digest if isinstance(digest, str) else "")
        except DigestSyntaxError as exc:
            raise reader.fail(f"{key} ({path}).{tag}", str(exc)) from None
        out[tag] = digest
    return out


def _policy(reader: _Reader, raw: Any) -> Policy:
    data = reader.mapping(raw, "policy")
    reader.known(data, "policy", {"rules", "deny", "deny_digests", "deny_digests_file"})
    rules_raw = data.get("rules")
    if rules_raw is None:
        rules_raw = []
    if not isinstance(rules_raw, list):
        raise reader.fail("policy.rules", f"must be a list, got {_kind(rules_raw)}")
    found = (reader.gathered.attempt(None, _rule, reader, i, r) for i, r in enumerate(rules_raw))
    rules = [rule for rule in found if rule is not None]
    deny = reader.strings(data.get("deny"), "policy.deny")
    deny_digests = reader.strings(data.get("deny_digests"), "policy.deny_digests")
    for i, digest in enumerate(deny_digests):
        try:
            parse_digest(digest)
        except DigestSyntaxError as exc:
            raise reader.fail(f"policy.deny_digests[{i}]", str(exc)) from None
    deny_file = None
    if "deny_digests_file" in data:
        deny_file = reader.path(data["deny_digests_file"], "policy.deny_digests_file")
        if not deny_file.is_file():
            raise reader.fail("policy.deny_digests_file", f"{deny_file} is not a file")
    return Policy(
        rules=tuple(rules),
        deny=tuple((glob, glob_to_regex(glob)) for glob in deny),
        deny_digests=frozenset(deny_digests),
        deny_digests_file=deny_file,
    )


def _rule(reader: _Reader, i: int, item: Any) -> Rule:
    key = f"policy.rules[{i}]"
    rule = reader.mapping(item, key)
    reader.known(
        rule,
        key,
        {
            "match",
            "signature",
            "pins",
            "foreign_urls",
            "layer_media_types",
            "tags",
            "layers",
            "sources",
            "require_source",
            "provenance",
            "artifact_types",
        },
    )
    match = reader.string(rule.get("match"), f"{key}.match")
    return Rule(
        index=i,
        match=match,
        pattern=glob_to_regex(match),
        signature=_signature(reader, rule.get("signature"), f"{key}.signature"),
        pins=_pins(reader, rule.get("pins"), f"{key}.pins"),
        foreign_url_hosts=reader.strings(rule.get("foreign_urls"), f"{key}.foreign_urls"),
        layer_media_types=reader.strings(rule.get("layer_media_types"), f"{key}.layer_media_types"),
        tags=_tags(reader, rule.get("tags"), f"{key}.tags"),
        layers=_layers(reader, rule.get("layers"), f"{key}.layers"),
        approved_sources=reader.strings(rule.get("sources"), f"{key}.sources"),
        require_source_annotation=reader.boolean(
            rule.get("require_source", False), f"{key}.require_source"
        ),
        provenance=_provenance(reader, rule.get("provenance"), f"{key}.provenance"),
        artifact_types=reader.strings(rule.get("artifact_types"), f"{key}.artifact_types"),
    )


def _limits(reader: _Reader, raw: Any) -> Limits:
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
#: so that admissions an older pullguard made are verified again.
#: 2: an index is admitted only with every manifest it lists (issue 7).
CHECKS_REVISION = 2


def _policy_version(config_text: str, policy: Policy, upstreams: Mapping[str, Upstream]) -> str:
    """Hash of everything a verdict depends on: the policy, the key and pin
    contents it loaded, and the non-secret upstream settings."""
    material = {
        "checks": CHECKS_REVISION,
        "rules": [
            {
                "match": r.match,
                "signature": [r.signature.mode, list(r.signature.keys), r.signature.threshold],
                "pins": dict(sorted(r.pins.items())),
                "foreign": list(r.foreign_url_hosts),
                "layers": list(r.layer_media_types),
                "rule": repr(
                    (
                        r.signature,
                        r.tags,
                        r.layers,
                        r.approved_sources,
                        r.require_source_annotation,
                        r.provenance,
                        r.artifact_types,
                    )
                ),
            }
            for r in policy.rules
        ],
        "deny": [glob for glob, _ in policy.deny],
        "deny_digests": sorted(policy.deny_digests),
        # The deny database file is live data, not policy: it is re-read on
        # change and checked on every pull, so it is not part of the version.
        "deny_file": str(policy.deny_digests_file or ""),
        "upstreams": {
            a: [
                u.url,
                u.insecure,
                list(u.redirect_hosts),
                list(u.realm_hosts),
                u.canonical_host,
                repr(u.tls),
            ]
            for a, u in sorted(upstreams.items())
        },
    }
    blob = json.dumps(material, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]


def parse_config(text: str, source: str, base_dir: Path) -> Config:
    """Every error of the file at once: each part is read even when another failed."""
    reader = _Reader(source, base_dir)
    config: Config | None = reader.gathered.attempt(None, _parse_config, reader, text)
    reader.gathered.raise_any()
    assert config is not None
    return config


def _parse_config(reader: _Reader, text: str) -> Config:
    source, base_dir, got = reader.source, reader.base_dir, reader.gathered
    data = reader.mapping(load_yaml(text, source), "(top level)")
    got.attempt(
        None,
        reader.known,
        data,
        "",
        {
            "listen",
            "grpc_listen",
            "state_dir",
            "upstreams",
            "default_upstream",
            "target",
            "policy",
            "limits",
            "telemetry",
            "services",
            "services_tls",
        },
    )
    listen = got.attempt("", _hostport, reader, data.get("listen", "127.0.0.1:5000"), "listen")
    grpc_listen = got.attempt(
        "", _hostport, reader, data.get("grpc_listen", "127.0.0.1:5050"), "grpc_listen"
    )
    state_dir = got.attempt(base_dir, reader.path, data.get("state_dir", ".pullguard"), "state_dir")
    upstreams_raw = got.attempt(None, reader.mapping, data.get("upstreams"), "upstreams")
    if upstreams_raw == {}:
        got.add(reader.fail("upstreams", "at least one upstream is required"))
    upstreams: dict[str, Upstream] = {}
    for alias, raw_upstream in (upstreams_raw or {}).items():
        upstream = got.attempt(None, _upstream, reader, alias, raw_upstream)
        if upstream is not None:
            upstreams[alias] = upstream
    default_upstream = got.attempt(
        "",
        reader.string,
        data.get("default_upstream", next(iter(upstreams_raw or {"-": None}))),
        "default_upstream",
    )
    if upstreams_raw and default_upstream and default_upstream not in upstreams_raw:
        got.add(reader.fail("default_upstream", f"{default_upstream!r} is not an upstream alias"))
    target = got.attempt(Target(), _target, reader, data.get("target"), upstreams)
    policy = got.attempt(Policy((), (), frozenset()), _policy, reader, data.get("policy"))
    limits = got.attempt(Limits(), _limits, reader, data.get("limits"))
    telemetry = got.attempt(Telemetry(), _telemetry, reader, data.get("telemetry"))
    services: dict[str, str] = got.attempt({}, _services, reader, data.get("services"))
    return Config(
        source=source,
        base_dir=base_dir,
        listen=listen,
        grpc_listen=grpc_listen,
        state_dir=state_dir,
        upstreams=upstreams,
        default_upstream=default_upstream,
        target=target,
        policy=policy,
        limits=limits,
        telemetry=telemetry,
        services=services,
        policy_version=_policy_version(text, policy, upstreams),
        services_tls=got.attempt(None, _services_tls, reader, data.get("services_tls")),
    )


def _telemetry(reader: _Reader, raw: Any) -> Telemetry:
    telemetry_raw = reader.mapping(raw, "telemetry")
    reader.known(telemetry_raw, "telemetry", {"exporter", "endpoint"})
    exporter = telemetry_raw.get("exporter", "none")
    if exporter not in ("none", "console", "otlp"):
        raise reader.fail("telemetry.exporter", f"must be none, console or otlp, got {exporter!r}")
    endpoint = telemetry_raw.get("endpoint", "")
    if exporter == "otlp":
        endpoint = reader.string(endpoint, "telemetry.endpoint")
    return Telemetry(exporter=exporter, endpoint=endpoint)


def _services(reader: _Reader, raw: Any) -> dict[str, str]:
    services_raw = reader.mapping(raw, "services")
    reader.known(services_raw, "services", set(LAYERS))
    return {
        name: _service_address(reader, v, f"services.{name}") for name, v in services_raw.items()
    }


def load_config(path: str | Path | None) -> Config:
    """Load a configuration file, or the built-in default when ``path`` is None."""
    if path is None:
        text = resources.files("pullguard.gateway").joinpath("default-config.yaml").read_text()
        return parse_config(text, "<built-in default configuration>", Path.cwd())
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigUnreadable(str(file), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigUnreadable(str(file), "", "is not UTF-8 text") from None
    return parse_config(text, str(file), file.resolve().parent)
