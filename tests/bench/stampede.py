"""The stampede: many clients pull one image through a cold pullguard at the same moment.

Each client fetches the manifest, then every blob, and checks each blob's
sha256 itself. The upstream registry's access log then tells how often each
blob was fetched from it (one GET per blob is the goal).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from tests.bench.workload import BenchImage
from tests.support.images import OCI_MANIFEST
from tests.support.registry_process import RegistryProcess

#: One client's whole pull may take this long (a cold pull under load included).
CLIENT_TIMEOUT = 600.0
READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """How the clients fared: how many succeeded, the seconds until the last one finished,
    and the distinct errors of those that failed."""

    succeeded: int
    seconds: float
    errors: tuple[str, ...]


def upstream_gets(upstream: RegistryProcess, image: BenchImage) -> dict[str, int]:
    """How many times the upstream answered a GET of each of the image's blobs."""
    prefix = f"GET /v2/{image.repository}/blobs/"
    counted = Counter(r[len(prefix) :] for r in upstream.requests() if r.startswith(prefix))
    return {digest: counted.get(digest, 0) for digest in image.blob_digests}


def run_stampede(address: str, name: str, clients: int) -> Outcome:
    """``clients`` concurrent pulls of ``name`` (``repo:tag``) from ``address``."""
    return asyncio.run(_stampede(address, name, clients))


async def _stampede(address: str, name: str, clients: int) -> Outcome:
    repository, tag = name.rsplit(":", 1)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(CLIENT_TIMEOUT)
    async with httpx.AsyncClient(
        base_url=f"http://{address}/v2/{repository}",
        limits=limits,
        timeout=timeout,
        follow_redirects=True,
    ) as client:
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(_one_pull(client, tag) for _ in range(clients)), return_exceptions=True
        )
        seconds = time.perf_counter() - started
    errors = sorted({f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)})
    succeeded = sum(1 for o in outcomes if not isinstance(o, BaseException))
    return Outcome(succeeded, seconds, tuple(errors))


async def _one_pull(client: httpx.AsyncClient, tag: str) -> None:
    response = await client.get(f"/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    response.raise_for_status()
    manifest = json.loads(response.content)
    for descriptor in [manifest["config"], *manifest["layers"]]:
        await _one_blob(client, str(descriptor["digest"]))


async def _one_blob(client: httpx.AsyncClient, digest: str) -> None:
    hashed = hashlib.sha256()
    async with client.stream("GET", f"/blobs/{digest}") as response:
        response.raise_for_status()
        async for piece in response.aiter_bytes(READ_SIZE):
            hashed.update(piece)
    got = "sha256:" + hashed.hexdigest()
    if got != digest:
        raise ValueError(f"blob {digest} arrived as {got}")
