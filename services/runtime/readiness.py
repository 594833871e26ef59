"""What each layer needs in order to work, checked while it runs.

A layer whose staging store or deny file goes away after start cannot give
a sound verdict: its health turns NOT_SERVING (see ``server``) and the
gateway treats it as an outage (503), never as a verdict. Only what a layer
reads while it runs is checked: trust material (the signature layer's keys
and trusted roots) is read once, with the configuration, and a file deleted
later changes nothing the layer uses, so it must not make an orchestrator
restart the layer. The checks stat files; ``server`` runs them off the event
loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pullguard.services.runtime.config import Config

#: Layers that read (or, the fetcher, write) the shared staging store.
STAGING_LAYERS = frozenset({"fetcher", "format", "hashverify", "signature"})
#: Layers that read ``policy.deny_digests_file`` while they run.
DENY_FILE_LAYERS = frozenset({"analysis", "hashverify"})


def readiness_for(layer: str, config: Config) -> Callable[[], list[str]]:
    """The readiness check of ``layer`` under ``config``: a list of problems."""
    staging = config.state_dir / "staging"
    files = list(_runtime_files(layer, config))

    def check() -> list[str]:
        problems: list[str] = []
        if layer in STAGING_LAYERS:
            problems.extend(_staging_problems(staging, writable=layer == "fetcher"))
        database = config.vulnerability_database
        if layer == "vulnerability" and database is not None and not database.osv.exists():
            problems.append(f"vulnerability database {database.osv} is missing")
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


def _runtime_files(layer: str, config: Config) -> Iterator[tuple[str, Path]]:
    policy = config.policy
    if layer in DENY_FILE_LAYERS and policy.deny_digests_file is not None:
        yield "deny digest file", policy.deny_digests_file
