"""Who may use pullguard: the front door's TLS, pull logins and admin tokens.

```yaml
tls: {certificate: front.pem, key: front.key}   # HTTPS on listen
auth:
  htpasswd: pullers.htpasswd    # user:$2y$... lines (bcrypt only), as distribution's
  admin_tokens: admins.yaml     # [{name, role: viewer|operator, token_sha256}]
```

Each file is read and checked at load, so a wrong file stops pullguard before
it serves: a certificate and key that do not load together, an htpasswd line
that is not ``user:<bcrypt hash>`` (MD5, SHA-1, crypt and plain text are
refused, as distribution refuses them), a token entry without a name, a role
or a SHA-256. :func:`parse_htpasswd` is also what the gateway calls again when
it reloads the file on SIGHUP.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullguard.services.runtime.config.reader import Reader, load_yaml
from pullguard.services.runtime.errors import ConfigError

ROLES = ("viewer", "operator")
#: A user or token name: printable, no colon (the htpasswd separator), bounded.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: A bcrypt hash as htpasswd -B and distribution write it: $2y$ (or $2a$, $2b$), cost, 53 chars.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(?P<cost>[0-9]{2})\$[./A-Za-z0-9]{53}")
#: Most entries an htpasswd or admin token file may hold.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class FrontTls:
    """The front door's certificate chain and key: files, read again on SIGHUP."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class AdminToken:
    name: str
    role: str
    token_sha256: str = field(repr=False)


@dataclass(frozen=True)
class Auth:
    #: auth.htpasswd: the file, and its users' bcrypt hashes as read at load.
    htpasswd: Path | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    #: auth.admin_tokens; None when the key is absent (admin listeners stay on loopback).
    admin_tokens: tuple[AdminToken, ...] | None = None


def server_context(tls: FrontTls) -> ssl.SSLContext:
    """A TLS server context holding ``tls``'s certificate and key (ssl.SSLError, OSError)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.key))
    return context


def read_front_tls(reader: Reader, raw: Any) -> FrontTls | None:
    if raw is None:
        return None
    data = reader.mapping(raw, "tls")
    reader.known(data, "tls", {"certificate", "key"})
    for name in ("certificate", "key"):
        if name not in data:
            raise reader.fail(f"tls.{name}", "is required (a PEM file)")
    tls = FrontTls(
        reader.path(data["certificate"], "tls.certificate"), reader.path(data["key"], "tls.key")
    )
    try:
        server_context(tls)
    except (ssl.SSLError, OSError) as exc:
        raise reader.fail(
            "tls", f"cannot load {tls.certificate} with {tls.key}: {exc.strerror or exc}"
        ) from None
    return tls


def read_auth(reader: Reader, raw: Any) -> Auth:
    data = reader.mapping(raw, "auth")
    reader.known(data, "auth", {"htpasswd", "admin_tokens"})
    htpasswd = None
    users: dict[str, bytes] = {}
    if "htpasswd" in data:
        htpasswd, text = reader.read_file(data["htpasswd"], "auth.htpasswd")
        users = parse_htpasswd(text, str(htpasswd), reader.source)
    tokens = None
    if "admin_tokens" in data:
        path, text = reader.read_file(data["admin_tokens"], "auth.admin_tokens")
        tokens = _admin_tokens(reader, load_yaml(text, str(path)), str(path))
    return Auth(htpasswd=htpasswd, users=users, admin_tokens=tokens)


def parse_htpasswd(text: str, path: str, source: str = "") -> dict[str, bytes]:
    """``user:<bcrypt hash>`` lines (blank lines and ``#`` comments skipped) as user -> hash.

    Only bcrypt is accepted: a line with any other hash names its line and why.
    """
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{path} line {number}"
        user, separator, hashed = entry.partition(":")
        if not separator or not NAME_RE.fullmatch(user):
            raise ConfigError(source or path, "auth.htpasswd", f"{where}: not user:hash")
        if not _BCRYPT_RE.fullmatch(hashed):
            kind = _hash_kind(hashed)
            raise ConfigError(
                source or path,
                "auth.htpasswd",
                f"{where}: user {user!r} has a {kind}; only bcrypt is accepted"
                " (htpasswd -B, or pullguard's README)",
            )
        if user in users:
            raise ConfigError(source or path, "auth.htpasswd", f"{where}: user {user!r} again")
        if len(users) >= MAX_ENTRIES:
            raise ConfigError(source or path, "auth.htpasswd", f"more than {MAX_ENTRIES} users")
        users[user] = hashed.encode()
    return users


def _hash_kind(hashed: str) -> str:
    if hashed.startswith("$apr1$"):
        return "MD5 (apr1) hash"
    if hashed.startswith("{SHA}"):
        return "SHA-1 hash"
    if hashed.startswith("$2"):
        return "malformed bcrypt hash"
    if hashed.startswith("$"):
        return "crypt(3) hash"
    return "crypt or plain-text password"


def _admin_tokens(reader: Reader, raw: Any, path: str) -> tuple[AdminToken, ...]:
    key = "auth.admin_tokens"
    if not isinstance(raw, list) or not raw:
        raise reader.fail(key, f"{path} must hold a non-empty list of {{name, role, token_sha256}}")
    if len(raw) > MAX_ENTRIES:
        raise reader.fail(key, f"{path} holds more than {MAX_ENTRIES} tokens")
    tokens: list[AdminToken] = []
    names: set[str] = set()
    digests: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        entry = reader.mapping(item, where)
        reader.known(entry, where, {"name", "role", "token_sha256"})
        name = reader.string(entry.get("name"), f"{where}.name")
        if not NAME_RE.fullmatch(name):
            raise reader.fail(f"{where}.name", f"must match {NAME_RE.pattern}, got {name[:60]!r}")
        role = entry.get("role")
        if role not in ROLES:
            raise reader.fail(f"{where}.role", f"must be viewer or operator, got {role!r}")
        digest = reader.string(entry.get("token_sha256"), f"{where}.token_sha256")
        if not _SHA256_RE.fullmatch(digest):
            raise reader.fail(
                f"{where}.token_sha256", "must be 64 lowercase hex characters (sha256 of the token)"
            )
        if name in names:
            raise reader.fail(f"{where}.name", f"{name!r} appears twice")
        if digest in digests:
            raise reader.fail(f"{where}.token_sha256", "the same token is listed twice")
        names.add(name)
        digests.add(digest)
        tokens.append(AdminToken(name, role, digest))
    return tuple(tokens)
