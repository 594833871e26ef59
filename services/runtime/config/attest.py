"""The ``attest:`` key: pullguard signs what it admits (see pullguard.gateway.attest).

```yaml
attest:
  key: pullguard.key             # cosign generate-key-pair's key, or a PEM PKCS#8 ECDSA P-256 key
  password_file: pullguard.pass  # or password_env: NAME (default COSIGN_PASSWORD, as cosign)
  mode: tag                      # tag: sha256-<hex>.sig/.att; referrers: OCI 1.1 referrers; both
```

``referrers`` and ``both`` need ``target: {kind: registry}``: the embedded
front door serves no referrers (neither the API nor the fallback tag).

Only paths and names are read here: the key is decrypted once by the gateway
at start-up, so the layer services, which also read this file, never hold it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullguard.services.runtime.config.reader import Reader

#: cosign's own variable, so one key pair works the same with cosign and pullguard.
DEFAULT_PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105 - a variable name, not a password
MODES = ("tag", "referrers", "both")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class Attest:
    """Where pullguard's signing key is and how its password is found."""

    key: Path
    password_file: Path | None = None
    password_env: str = DEFAULT_PASSWORD_ENV
    mode: str = "tag"

    @property
    def tags(self) -> bool:
        """cosign's ``sha256-<hex>.sig``/``.att`` tags are written."""
        return self.mode in ("tag", "both")

    @property
    def referrers(self) -> bool:
        """OCI 1.1 referrers (and the ``sha256-<hex>`` fallback index) are written."""
        return self.mode in ("referrers", "both")


def read_attest(reader: Reader, raw: Any, target_kind: str = "embedded") -> Attest | None:
    if raw is None:
        return None
    data = reader.mapping(raw, "attest")
    reader.known(data, "attest", {"key", "password_file", "password_env", "mode"})
    if "key" not in data:
        raise reader.fail("attest.key", "is required: the private key pullguard signs with")
    key = reader.path(data["key"], "attest.key")
    password_file = None
    if "password_file" in data:
        if "password_env" in data:
            raise reader.fail(
                "attest.password_file", "give password_file or password_env, not both"
            )
        password_file = reader.path(data["password_file"], "attest.password_file")
    password_env = DEFAULT_PASSWORD_ENV
    if "password_env" in data:
        password_env = reader.string(data["password_env"], "attest.password_env")
        if not _ENV_RE.fullmatch(password_env):
            raise reader.fail(
                "attest.password_env", f"not an environment variable name: {password_env!r}"
            )
    mode = reader.string(data.get("mode", "tag"), "attest.mode")
    if mode not in MODES:
        raise reader.fail("attest.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "tag" and target_kind != "registry":
        raise reader.fail(
            "attest.mode",
            f"{mode} needs target kind registry: the embedded target serves no referrers",
        )
    return Attest(key, password_file, password_env, mode)
