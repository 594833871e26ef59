"""pullguard on PostgreSQL (issue 10): real pulls, and two gateway replicas that fetch once.

Real parts only: Debian's docker-registry as upstream, the session's
throw-away PostgreSQL cluster (tests/support/postgres.py) with a password
from a file, ``pullguard up`` for the stack, and a second gateway started
with ``pullguard serve gateway`` on the same database, state and layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pullguard.services.runtime.config.database import Database
from tests.support.images import BuiltImage, build_image, pull, push, random_layers
from tests.support.postgres import PostgresCluster
from tests.support.registry_process import RegistryProcess
from tests.support.stack import LAYERS, Pullguard, free_port, pullguard_command

StartPullguard = Callable[..., Pullguard]
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
#: Concurrent cold pulls of one image, spread over the two gateways.
PULLS = 50


@pytest.fixture
def pg_database(postgres_cluster: PostgresCluster) -> Database:
    return postgres_cluster.create_database()


def _database_setting(database: Database, tmp_path: Path) -> dict[str, str]:
    """``database:`` as an operator writes it: the URL, and the password in a file."""
    password = tmp_path / "database.password"
    password.write_text(f"{database.password}\n")
    return {"url": database.url, "password_file": str(password)}


def _rows(database: Database, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database.url, password=database.password) as db:
        return list(db.execute(sql).fetchall())


def test_pulls_are_decided_and_recorded_in_postgresql(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    database = pg_database
    good = build_image(tmp_path / "src-good", "v1", random_layers(2, 64 * 1024, seed=1))
    evil = build_image(tmp_path / "src-evil", "v1", random_layers(1, 1024, seed=2))
    push(good, upstream.address, "team/app")
    push(evil, upstream.address, "team/evil/app")
    pg = pullguard_factory(upstream.url, database=_database_setting(database, tmp_path))

    allowed = pull(f"{pg.address}/lab/team/app:v1", tmp_path / "out", "v1")
    denied = pull(f"{pg.address}/lab/team/evil/app:v1", tmp_path / "denied", "v1")

    assert allowed.returncode == 0, allowed.stderr + pg.log()
    assert denied.returncode != 0
    listed = pg.cli("decisions", "--json")
    assert listed.returncode == 0, listed.stderr
    decisions = {(d["reference"], d["decision"]) for d in json.loads(listed.stdout)}
    assert decisions == {("lab/team/app:v1", "ALLOW"), ("lab/team/evil/app:v1", "DENY")}
    # The decisions live in PostgreSQL, not in a SQLite file under state_dir.
    assert not (pg.state_dir / "decisions.sqlite3").exists()
    rows = _rows(database, "SELECT reference, decision FROM decisions ORDER BY decision")
    assert rows == [("lab/team/app:v1", "ALLOW"), ("lab/team/evil/app:v1", "DENY")]
    assert _rows(database, "SELECT repository, digest FROM admitted") == [
        ("lab/team/app", good.digest)
    ]
    assert database.password and database.password not in pg.log()


@contextlib.contextmanager
def _second_gateway(pg: Pullguard, tmp_path: Path) -> Iterator[str]:
    """``pullguard serve gateway`` on the stack's config, layers and state; yields its address."""
    listen = f"127.0.0.1:{free_port()}"
    up = json.loads((pg.state_dir / "up.json").read_text())
    services = [f"--service={layer}={up[layer]['address']}" for layer in LAYERS]
    log = (tmp_path / "gateway-2.log").open("ab")
    process = subprocess.Popen(
        [
            *pullguard_command(),
            "serve",
            "gateway",
            "--listen",
            listen,
            "--grpc-listen",
            f"127.0.0.1:{free_port()}",
            "--config",
            str(pg.config_path),
            *services,
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
        # A replica of its own on the shared state_dir (its own staging folder).
        env={**os.environ, "PULLGUARD_REPLICA_ID": "second"},
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(listen):
            assert process.poll() is None, (tmp_path / "gateway-2.log").read_text()
            assert time.monotonic() < deadline, "the second gateway never answered"
            time.sleep(0.1)
        yield listen
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _pull_over_http(client: httpx.AsyncClient, address: str, image: BuiltImage) -> None:
    """What a client does: the manifest by tag, then every blob, each checked by its digest."""
    base = f"http://{address}/v2/lab/team/app"
    manifest = await client.get(f"{base}/manifests/v1", headers=ACCEPT)
    assert manifest.status_code == 200, manifest.text
    assert manifest.content == image.manifest
    for digest in image.blob_digests:
        blob = await client.get(f"{base}/blobs/{digest}")
        assert blob.status_code == 200, blob.text
        assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == digest


async def _stampede(addresses: list[str], image: BuiltImage) -> None:
    limits = httpx.Limits(max_connections=PULLS * 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        await asyncio.gather(
            *(_pull_over_http(client, addresses[n % 2], image) for n in range(PULLS))
        )


def test_two_gateways_on_one_database_fetch_each_blob_once(
    upstream: RegistryProcess,
    pullguard_factory: StartPullguard,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    database = pg_database
    image = build_image(tmp_path / "src", "v1", random_layers(3, 2 << 20, seed=3))
    push(image, upstream.address, "team/app")
    pg = pullguard_factory(upstream.url, database=_database_setting(database, tmp_path))
    with _second_gateway(pg, tmp_path) as second:
        before = len(upstream.requests())
        asyncio.run(_stampede([pg.address, second], image))
        fetched = Counter(
            request.rsplit("/", 1)[1]
            for request in upstream.requests()[before:]
            if request.startswith("GET /v2/team/app/blobs/")
        )
    assert fetched == dict.fromkeys(image.blob_digests, 1), fetched
    decisions = _rows(database, "SELECT decision, count(*) FROM decisions GROUP BY decision")
    assert decisions[0][0] == "ALLOW" and len(decisions) == 1
    assert (
        pg.log().count("Traceback") == 0
        and "Traceback" not in (tmp_path / "gateway-2.log").read_text()
    )
