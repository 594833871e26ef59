"""index.json shared by several gateway processes: no write is lost.

Each read-modify-write of index.json holds a ``flock`` on index.json.lock;
without it, two replicas that add names at the same time overwrite each
other's (each renames in an index read before the other's rename).
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from pullguard.gateway.stores import AdmittedStore

WRITES = 40
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _add_names(root: str, replica: str) -> None:
    store = AdmittedStore(Path(root))
    for number in range(WRITES):
        digest = f"sha256:{number:064x}"
        store.add_reference(digest, MANIFEST, 1, [f"{replica}/app:t{number}"])


def test_two_processes_adding_names_lose_none(tmp_path: Path) -> None:
    root = tmp_path / "admitted"
    AdmittedStore(root)
    # Spawned, not forked: a fork of a test worker copies whatever threads
    # earlier tests left (gRPC's among them) mid-call, and one such child hung.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_names, args=(str(root), r)) for r in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(120)
            assert worker.exitcode == 0
    finally:
        # A writer that hangs is stopped here, by its PID, not left running.
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(10)

    index = json.loads((root / "index.json").read_text())
    names = {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}
    assert len(names) == 3 * WRITES
