"""pullguard's configuration: YAML in, validated frozen dataclasses out.

- :mod:`.reader`: strict YAML (no repeated keys), typed access naming each
  key, every error of a file gathered;
- :mod:`.settings`: listen addresses, upstreams, target, limits, telemetry,
  service addresses and their TLS;
- :mod:`.observability`: the console and metrics listeners, log format and level;
- :mod:`.policy`: the policy rules, deny lists and the policy version;
- :mod:`.loader`: the whole file, :func:`parse_config` and :func:`load_config`.

Patterns in the policy (globs, host globs, regular expressions) are matched
by :mod:`pullguard.services.runtime.patterns`.
"""

from pullguard.services.runtime.config.loader import Config, load_config, parse_config
from pullguard.services.runtime.config.observability import LogSettings
from pullguard.services.runtime.config.policy import (
    CHECKS_REVISION,
    KeylessIdentity,
    LayerRule,
    Policy,
    ProvenanceRule,
    Rule,
    SignatureRule,
    TagRule,
)
from pullguard.services.runtime.config.reader import ConfigErrors, ConfigUnreadable
from pullguard.services.runtime.config.settings import (
    LAYERS,
    MAX_SOCKET_PATH,
    SERVICES,
    WELL_KNOWN_UPSTREAMS,
    Limits,
    ServicesTls,
    Target,
    Telemetry,
    TlsRule,
    Upstream,
)
from pullguard.services.runtime.patterns import glob_to_regex

__all__ = [
    "CHECKS_REVISION",
    "LAYERS",
    "MAX_SOCKET_PATH",
    "SERVICES",
    "WELL_KNOWN_UPSTREAMS",
    "Config",
    "ConfigErrors",
    "ConfigUnreadable",
    "KeylessIdentity",
    "LayerRule",
    "Limits",
    "LogSettings",
    "Policy",
    "ProvenanceRule",
    "Rule",
    "ServicesTls",
    "SignatureRule",
    "TagRule",
    "Target",
    "Telemetry",
    "TlsRule",
    "Upstream",
    "glob_to_regex",
    "load_config",
    "parse_config",
]
