"""What each layer needs in order to work, checked while it runs.

A layer whose staging store or trust material goes away after start cannot
give a sound verdict: its health turns NOT_SERVING (see ``server``) and the
gateway treats it as an outage (503), never as a verdict. The checks are
cheap (a stat and an access check per file) because they run on every health
Check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pullguard.services.runtime.config import Config, SignatureRule

#: Layers that read (or, the fetcher, write) the shared staging store.
STAGING_LAYERS = frozenset({"fetcher", "format", "hashverify", "signature"})
#: Layers that read ``policy.deny_digests_file`` while they run.
DENY_FILE_LAYERS = frozenset({"analysis", "hashverify"})


def readiness_for(layer: str, config: Config) -> Callable[[], list[str]]:
    """The readiness check of ``layer`` under ``config``: a list of problems."""
    staging = config.state_dir / "staging"
    files = list(_trust_files(layer, config))

    def check() -> list[str]:
        problems: list[str] = []
        if layer in STAGING_LAYERS:
            problems.extend(_staging_problems(staging, writable=layer == "fetcher"))
        for what, path in files:
            if not path.is_file() or not os.access(path, os.R_OK):
                problems.append(f"{what} {path} is missing or unreadable")
        return problems

    return check


def _staging_problems(staging: Path, writable: bool) -> list[str]:
    # Each gateway empties its own folder of the store when it starts; a store that is
    # merely absent is made again. One that cannot be made (a file in its
    # place, a read-only disk) stops the layer.
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"staging store {staging} cannot be made: {exc.strerror or exc}"]
    mode = os.R_OK | os.X_OK | (os.W_OK if writable else 0)
    if not staging.is_dir() or not os.access(staging, mode):
        return [f"staging store {staging} is not a usable directory"]
    return []


def _trust_files(layer: str, config: Config) -> Iterator[tuple[str, Path]]:
    policy = config.policy
    if layer in DENY_FILE_LAYERS and policy.deny_digests_file is not None:
        yield "deny digest file", policy.deny_digests_file
    if layer == "signature":
        seen: set[Path] = set()
        for rule in policy.rules:
            for signature in (rule.signature, rule.provenance.signers):
                for what, path in _signature_files(signature, config.base_dir):
                    if path not in seen:
                        seen.add(path)
                        yield f"{what} of rule {rule.match!r}", path


def _signature_files(signature: SignatureRule, base_dir: Path) -> Iterator[tuple[str, Path]]:
    for name, _pem in signature.keys:
        path = Path(name)
        yield "key file", path if path.is_absolute() else base_dir / path
    if signature.trusted_root_file:
        yield "trusted root", Path(signature.trusted_root_file)
