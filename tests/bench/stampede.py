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
    the requests sent again, and the distinct errors of those that failed."""

    succeeded: int
    seconds: float
    retried: int
    errors: tuple[str, ...]


@dataclass
class Retries:
    """Requests sent again because a kept-alive connection closed before any answer."""

    count: int = 0


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
    base = f"http://{address}/v2/{repository}"
    retries = Retries()
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(_one_pull(base, tag, retries) for _ in range(clients)), return_exceptions=True
    )
    seconds = time.perf_counter() - started
    errors = sorted({f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)})
    succeeded = sum(1 for o in outcomes if not isinstance(o, BaseException))
    return Outcome(succeeded, seconds, retries.count, tuple(errors))


async def _one_pull(base: str, tag: str, retries: Retries) -> None:
    """One client with its own connection, as each real client (a node's daemon) has."""
    timeout = httpx.Timeout(CLIENT_TIMEOUT)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, follow_redirects=True) as client:
        path = f"/manifests/{tag}"
        try:
            response = await _send(client, path, retries, {"Accept": OCI_MANIFEST})
            manifest = json.loads(await response.aread())
            for descriptor in [manifest["config"], *manifest["layers"]]:
                path = f"/blobs/{descriptor['digest']}"
                await _one_blob(await _send(client, path, retries), str(descriptor["digest"]))
        except httpx.HTTPError as exc:
            raise RuntimeError(f"GET {path}: {type(exc).__name__}: {exc}") from exc


async def _send(
    client: httpx.AsyncClient, path: str, retries: Retries, headers: dict[str, str] | None = None
) -> httpx.Response:
    """GET ``path``, its body left to stream; sent once more on a fresh connection when the
    kept-alive one closed before any answer, as Go's and most HTTP clients do."""
    request = client.build_request("GET", path, headers=headers)
    try:
        response = await client.send(request, stream=True)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        retries.count += 1
        response = await client.send(request, stream=True)
    if response.status_code != 200:
        await response.aclose()
        raise RuntimeError(f"GET {path}: HTTP {response.status_code}")
    return response


async def _one_blob(response: httpx.Response, digest: str) -> None:
    hashed = hashlib.sha256()
    try:
        async for piece in response.aiter_bytes(READ_SIZE):
            hashed.update(piece)
    finally:
        await response.aclose()
    got = "sha256:" + hashed.hexdigest()
    if got != digest:
        raise ValueError(f"blob {digest} arrived as {got}")
