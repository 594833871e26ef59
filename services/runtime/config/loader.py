"""Loading a configuration file: the top-level keys, then each part's reader.

Every error names the file, the key (as a dotted path such as
``policy.rules[1].signature.keys[0]``) and what is wrong, and is raised as
:class:`ConfigError` before any service starts; each part is read even when
another failed, so that one run lists every error of the file. Relative
paths in a file resolve against that file's folder; in the built-in default
configuration, against the current directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pullguard.services.runtime.config.access import Auth, FrontTls, read_auth, read_front_tls
from pullguard.services.runtime.config.attest import Attest, read_attest
from pullguard.services.runtime.config.database import Database, read_database
from pullguard.services.runtime.config.notifications import Subscription, read_notifications
from pullguard.services.runtime.config.observability import (
    LogSettings,
    read_console_listen,
    read_log_settings,
    read_metrics_listen,
)
from pullguard.services.runtime.config.policy import Policy, policy_version, read_policy
from pullguard.services.runtime.config.reader import ConfigUnreadable, Reader, load_yaml
from pullguard.services.runtime.config.retention import Retention, read_retention
from pullguard.services.runtime.config.settings import (
    Limits,
    ServicesTls,
    Target,
    Telemetry,
    Upstream,
    read_hostport,
    read_limits,
    read_replica_id,
    read_services,
    read_services_tls,
    read_target,
    read_telemetry,
    read_upstream,
)
from pullguard.services.runtime.config.vulnerabilities import (
    NO_GATE,
    VulnerabilityDatabase,
    VulnerabilityRule,
    read_vulnerabilities,
)


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
    #: PostgreSQL for the decision database; None: SQLite in state_dir.
    database: Database | None = None
    #: HTTPS on the front door; logins and admin tokens (see .access).
    tls: FrontTls | None = None
    auth: Auth = Auth()
    console_listen: str | None = None
    metrics_listen: Mapping[str, str] = dataclasses.field(default_factory=dict)
    logging: LogSettings = LogSettings()
    #: This gateway replica's staging folder name (empty: no replica folder).
    replica_id: str = ""
    #: Where events are POSTed (see .notifications); empty: nowhere.
    notifications: tuple[Subscription, ...] = ()
    #: How long decisions and quarantine entries are kept; the GC's schedule.
    retention: Retention = Retention()
    #: pullguard's own signature and admission attestation on what it admits.
    attest: Attest | None = None
    #: The OSV database of the vulnerability layer (None: no vulnerability gate).
    vulnerability_database: VulnerabilityDatabase | None = None

    def with_services(self, services: Mapping[str, str]) -> Config:
        merged = dict(self.services)
        merged.update(services)
        return dataclasses.replace(self, services=merged)


def parse_config(text: str, source: str, base_dir: Path) -> Config:
    """Every error of the file at once: each part is read even when another failed."""
    reader = Reader(source, base_dir)
    config: Config | None = reader.gathered.attempt(None, _parse_config, reader, text)
    reader.gathered.raise_any()
    assert config is not None
    return config


def _parse_config(reader: Reader, text: str) -> Config:
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
            "database",
            "tls",
            "auth",
            "console_listen",
            "metrics_listen",
            "log_format",
            "log_level",
            "replica_id",
            "notifications",
            "retention",
            "attest",
            "vulnerabilities",
        },
    )
    listen = got.attempt("", read_hostport, reader, data.get("listen", "127.0.0.1:5000"), "listen")
    grpc_listen = got.attempt(
        "", read_hostport, reader, data.get("grpc_listen", "127.0.0.1:5050"), "grpc_listen"
    )
    state_dir = got.attempt(base_dir, reader.path, data.get("state_dir", ".pullguard"), "state_dir")
    upstreams_raw = got.attempt(None, reader.mapping, data.get("upstreams"), "upstreams")
    if upstreams_raw == {}:
        got.add(reader.fail("upstreams", "at least one upstream is required"))
    upstreams: dict[str, Upstream] = {}
    for alias, raw_upstream in (upstreams_raw or {}).items():
        upstream = got.attempt(None, read_upstream, reader, alias, raw_upstream)
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
    target = got.attempt(Target(), read_target, reader, data.get("target"), upstreams)
    no_database: tuple[VulnerabilityDatabase | None, VulnerabilityRule] = (None, NO_GATE)
    vulnerability_database, vulnerability_default = got.attempt(
        no_database, read_vulnerabilities, reader, data.get("vulnerabilities")
    )
    policy = got.attempt(
        Policy((), (), frozenset()), read_policy, reader, data.get("policy"), vulnerability_default
    )
    limits = got.attempt(Limits(), read_limits, reader, data.get("limits"))
    telemetry = got.attempt(Telemetry(), read_telemetry, reader, data.get("telemetry"))
    services: dict[str, str] = got.attempt({}, read_services, reader, data.get("services"))
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
        policy_version=policy_version(text, policy, upstreams),
        services_tls=got.attempt(None, read_services_tls, reader, data.get("services_tls")),
        database=got.attempt(None, read_database, reader, data.get("database")),
        tls=got.attempt(None, read_front_tls, reader, data.get("tls")),
        auth=got.attempt(Auth(), read_auth, reader, data.get("auth")),
        console_listen=got.attempt(None, read_console_listen, reader, data.get("console_listen")),
        metrics_listen=got.attempt({}, read_metrics_listen, reader, data.get("metrics_listen")),
        logging=got.attempt(
            LogSettings(), read_log_settings, reader, data.get("log_format"), data.get("log_level")
        ),
        replica_id=got.attempt("", read_replica_id, reader, data.get("replica_id")),
        notifications=got.attempt((), read_notifications, reader, data.get("notifications")),
        retention=got.attempt(Retention(), read_retention, reader, data.get("retention")),
        attest=got.attempt(None, read_attest, reader, data.get("attest"), target.kind),
        vulnerability_database=vulnerability_database,
    )


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
