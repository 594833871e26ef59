"""What may listen beyond loopback, checked before anything starts.

- Without ``auth.admin_tokens``, the gRPC ``Gateway`` service (and the
  console, which calls :func:`require_loopback` for ``console_listen``) has
  no logins at all: it listens on loopback only.
- ``auth.htpasswd`` over plain HTTP beyond loopback would send every
  password in clear text: it needs ``tls``.
"""

from __future__ import annotations

import ipaddress

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import ConfigError


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT (or a unix: socket) can be reached from this machine only."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def require_loopback(config: Config, key: str, address: str, why: str, fix: str) -> None:
    """Refuse to start (ConfigError) when ``address``, given as ``key``, is beyond loopback."""
    if not is_loopback(address):
        raise ConfigError(
            config.source,
            key,
            f"{address} is beyond loopback, but {why}; listen on 127.0.0.1 or set {fix}",
        )


NO_TOKENS = "no auth.admin_tokens are set, so anyone who reaches it could use it"


def check_exposure(config: Config) -> list[str]:
    """Every refusal of this module for ``config``'s addresses (a ConfigError); else warnings."""
    if config.auth.admin_tokens is None:
        require_loopback(config, "grpc_listen", config.grpc_listen, NO_TOKENS, "auth.admin_tokens")
    if config.auth.htpasswd is not None and config.tls is None:
        why = "auth.htpasswd over plain HTTP would send passwords in clear text"
        require_loopback(config, "listen", config.listen, why, "tls")
    if not is_loopback(config.grpc_listen):
        return [
            f"grpc_listen {config.grpc_listen} is plaintext gRPC beyond loopback: admin tokens"
            " cross the network readable; put it behind TLS (a mesh or a TLS proxy)"
        ]
    return []
