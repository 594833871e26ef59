"""The decision database on SQLite and on a real PostgreSQL server (issue 10).

Every case taking ``database`` runs twice: SQLite under tmp_path, and a fresh
database of the session's throw-away PostgreSQL cluster
(tests/support/postgres.py). The same tables, the same answers.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pullguard.gateway.decisions import Admission, DecisionLog, StateError
from pullguard.gateway.decisions.postgres import AdvisoryLeases
from pullguard.gateway.decisions.schema import SCHEMA_VERSION
from pullguard.services.runtime.config.database import Database
from pullguard.services.runtime.errors import ConfigError
from tests.support.configs import make_config
from tests.support.postgres import PostgresCluster

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _d(n: int) -> str:
    return f"sha256:{n:064x}"


def _report(decision_id: str, time: str, digest: str, decision: str = "ALLOW") -> dict[str, object]:
    return {
        "decision_id": decision_id,
        "time": time,
        "reference": "lab/app:v1",
        "repository": "lab/app",
        "digest": digest,
        "decision": decision,
        "policy_version": "p1",
    }


@pytest.fixture
def log(tmp_path: Path, database: Database | None) -> DecisionLog:
    decisions = DecisionLog(tmp_path / "state", database)
    yield decisions  # type: ignore[misc]
    decisions.close()


def test_admissions_round_trip_and_revoke_keeps_shared_blobs(log: DecisionLog) -> None:
    index, child, other = _d(1), _d(2), _d(3)
    blobs = [_d(10), _d(11)]
    log.admit_and_record(
        Admission("lab/app", index, INDEX, 3 << 31, "a" * 32),
        "p1",
        [],
        [(child, MANIFEST, 500)],
        "app",
        _report("a" * 32, "2026-12-06T00:00:01Z", index),
    )
    admissions = [
        (child, 500, "b", "p1", blobs, "2026-12-06T00:00:01Z"),
        (other, 9, "c", "p1", [_d(11), _d(12)], "2026-12-06T00:00:02Z"),
        # A second admission of one digest under a newer policy: the newest decision wins.
        (other, 9, "d", "p2", [_d(11), _d(12)], "2026-12-06T00:00:03Z"),
    ]
    for digest, size, decision, policy, listed_blobs, when in admissions:
        log.admit_and_record(
            Admission("lab/app", digest, MANIFEST, size, decision * 32),
            policy,
            listed_blobs,
            [],
            "app",
            _report(decision * 32, when, digest),
        )

    assert log.admitted("lab/app", index, "p1") == Admission(
        "lab/app", index, INDEX, 3 << 31, "a" * 32
    )
    assert log.admitted("lab/app", index, "p2") is None
    assert log.repository_for("app") == "lab/app"
    assert log.index_entries("lab/app", child, "p1") == [(index, MANIFEST, 500)]
    assert log.parent_indexes("lab/app", child, "p1") == [index]
    assert log.manifest_blobs("lab/app", child) == blobs
    assert log.admission_map()[("lab/app", index)] == (INDEX, 3 << 31)
    assert log.referenced_digests() == {index, child, other, _d(10), _d(11), _d(12)}
    assert log.admissions_needing(_d(11)) == [("lab/app", child), ("lab/app", other)]
    listed = [(admission.digest, policy) for admission, policy in log.admissions(10)]
    assert listed == [(index, "p1"), (child, "p1"), (other, "p2")]
    assert len(log.admissions(1)) == 1

    log.revoke("lab/app", child)
    assert log.admitted("lab/app", child, "p1") is None
    assert not log.blob_admitted("lab/app", _d(10))
    assert log.blob_admitted("lab/app", _d(11))  # another admitted manifest lists it
    assert log.manifest_blobs("lab/app", child) == []


def test_decisions_names_waivers_publications_and_quarantine(log: DecisionLog) -> None:
    digest = _d(5)
    log.record(_report("e" * 32, "2026-12-06T00:00:01Z", digest))
    log.record(_report("f" * 32, "2026-12-06T00:00:02Z", _d(6), decision="DENY"))
    log.record({**_report("e" * 32, "2026-12-06T00:00:03Z", digest), "reason": "again"})
    decisions = log.list_decisions(10)
    assert [(d["decision_id"], d.get("reason")) for d in decisions] == [
        ("e" * 32, "again"),
        ("f" * 32, None),
    ]
    assert log.last_admitted_for_tag("lab/app", "v1", "lab/app:v1") == digest
    assert log.pending_audit() == []

    log.link_name("app", "lab/app")
    log.link_name("app", "lab/other")
    assert log.repository_for("app") == "lab/other"
    assert log.repository_for("nobody") is None

    release = {"quarantine_id": "q1", "reason": "reviewed", "operator": "ops", "time": "t"}
    log.add_waivers("lab/app", digest, ["format.x", "source.y"], "e" * 32, release)
    log.add_waivers("lab/app", digest, ["format.x"], "e" * 32, {**release, "reason": "again"})
    assert log.waivers("lab/app", digest) == ["format.x", "source.y"]
    assert log.waivers("lab/app", _d(6)) == []

    log.mark_published("reg", "lab/app", "v1", _d(7))
    log.mark_published("reg", "lab/app", "v1", digest)
    log.mark_published("reg", "lab/app", digest, digest)
    assert log.published("reg", "lab/app", "v1") == digest
    assert log.published_references("reg", "lab/app", digest) == [digest, "v1"]
    assert log.published_without_admission("reg", 10) == [("lab/app", digest)]
    log.forget_published("reg", "lab/app", digest)
    assert log.published("reg", "lab/app", "v1") is None

    log.quarantined("q1", "2026-12-06T00:00:01Z", "lab/app:v1", digest, "first")
    log.quarantined("q2", "2026-12-06T00:00:02Z", "lab/app:v2", _d(6), "second")
    log.quarantined("q1", "2026-12-06T00:00:03Z", "lab/app:v1", digest, "replaced")
    assert [(q["id"], q["reason"]) for q in log.list_quarantine()] == [
        ("q1", "replaced"),
        ("q2", "second"),
    ]
    assert log.is_quarantined("q2")
    log.forget_quarantine("q2")
    assert not log.is_quarantined("q2")
    assert log.quick_check() == ["ok"]


def test_a_failed_write_leaves_the_connection_usable(log: DecisionLog) -> None:
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        log.record({**_report("x" * 32, "t", _d(1)), "time": None})  # NOT NULL
    log.record(_report("a" * 32, "2026-12-06T00:00:01Z", _d(1)))
    assert [d["decision_id"] for d in log.list_decisions(5)] == ["a" * 32]


def _set_version(log: DecisionLog, version: int) -> None:
    log._db.execute("UPDATE schema_version SET version = ?", (version,))
    log._db.commit()


def test_a_database_newer_than_the_code_is_refused_naming_both_versions(
    tmp_path: Path, database: Database | None
) -> None:
    state = tmp_path / "state"
    log = DecisionLog(state, database)
    assert log._db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    _set_version(log, SCHEMA_VERSION + 7)
    log.close()
    with pytest.raises(StateError, match=f"schema version {SCHEMA_VERSION + 7}, newer than the"):
        DecisionLog(state, database)
    try:
        DecisionLog(state, database)
    except StateError as exc:
        assert f"the {SCHEMA_VERSION} this pullguard knows" in str(exc)


def test_a_sqlite_file_from_before_schema_versions_migrates_forward(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    with sqlite3.connect(tmp_path / "decisions.sqlite3") as db:
        db.execute(
            "CREATE TABLE decisions (id TEXT PRIMARY KEY, time TEXT NOT NULL,"
            " reference TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,"
            " decision TEXT NOT NULL, denied_by TEXT NOT NULL, reason TEXT NOT NULL,"
            " policy_version TEXT NOT NULL, transient INTEGER NOT NULL, report TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO decisions VALUES ('o', 't', 'r', 'lab/app', 'd', 'DENY', '', '', 'p', 0,"
            ' \'{"decision_id": "o"}\')'
        )
    db.close()
    log = DecisionLog(tmp_path)
    assert log._db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert log._db.execute("SELECT outage FROM decisions").fetchall() == [("",)]
    assert log.list_decisions(5) == [{"decision_id": "o"}]
    log.close()


def test_an_empty_postgres_database_beside_an_audit_log_is_refused(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    first = postgres_cluster.create_database()
    log = DecisionLog(tmp_path, first)
    log.record(_report("a" * 32, "2026-12-06T00:00:01Z", _d(1)))
    log.close()
    empty = postgres_cluster.create_database()
    with pytest.raises(StateError, match="holds no pullguard schema but .*audit.jsonl"):
        DecisionLog(tmp_path, empty)
    with psycopg.connect(empty.url, password=empty.password) as db:
        tables = db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)  # refused before anything was created


# -- configuration and passwords ------------------------------------------------------


def test_the_password_is_taken_out_of_the_url(tmp_path: Path) -> None:
    config = make_config(tmp_path, database="postgresql://pg:s%40cret@db.example:5433/pullguard")
    assert config.database is not None
    assert config.database.url == "postgresql://pg@db.example:5433/pullguard"
    assert config.database.password == "s@cret"
    assert "cret" not in repr(config) and "cret" not in str(config.database)


def test_the_password_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    config = make_config(
        tmp_path, database={"url": "postgresql://pg@db.example/pullguard", "password_file": "pw"}
    )
    assert config.database == Database("postgresql://pg@db.example/pullguard", "from-file")
    assert config.database.password == "from-file"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mysql://db/x", "database: wants a postgresql:// URL"),
        ("postgresql://db:port/x", "database: is not a valid URL"),
        (
            {"url": "postgresql://u:p@db/x", "password_file": "pw"},
            "database.password_file: the URL holds a password already",
        ),
        ({"url": "postgresql://db/x", "pasword": "x"}, "pasword"),
    ],
)
def test_a_bad_database_setting_is_named(tmp_path: Path, value: object, problem: str) -> None:
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match=problem):
        make_config(tmp_path, database=value)


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path) -> None:
    config = make_config(tmp_path, database="postgresql://pg:hunter2secret@127.0.0.1:9/pullguard")
    with pytest.raises(StateError) as raised:
        DecisionLog(tmp_path / "state", config.database)
    assert "postgresql://pg@127.0.0.1:9/pullguard" in str(raised.value)
    assert "hunter2secret" not in str(raised.value)


def test_pgpassword_from_the_environment_is_used(
    tmp_path: Path, postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres_cluster.create_database()
    monkeypatch.setenv("PGPASSWORD", postgres_cluster.password)
    log = DecisionLog(tmp_path, Database(database.url))
    assert log.quick_check() == ["ok"]
    log.close()


# -- leases across replicas -----------------------------------------------------------


async def _waiting_sessions(database: Database) -> int:
    async with await psycopg.AsyncConnection.connect(
        database.url, password=database.password, autocommit=True
    ) as db:
        cursor = await db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _until_waiting(database: Database, count: int) -> None:
    for _ in range(600):
        if await _waiting_sessions(database) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never saw {count} session(s) waiting for a lease")


HOLDER = """
import asyncio, sys
from pullguard.gateway.decisions.postgres import AdvisoryLeases
from pullguard.services.runtime.config.database import Database

async def main():
    async with AdvisoryLeases(Database(sys.argv[1], sys.argv[2])).hold(sys.argv[3]):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_lease_excludes_another_replica_until_released(
    postgres_cluster: PostgresCluster,
) -> None:
    database = postgres_cluster.create_database()
    one, two = AdvisoryLeases(database), AdvisoryLeases(database)
    order: list[str] = []

    async def second() -> None:
        async with two.hold("lab/app@sha256:1"):
            order.append("two")

    async with one.hold("lab/app@sha256:1"):
        waiter = asyncio.create_task(second())
        await _until_waiting(database, 1)
        async with two.hold("lab/app@sha256:2"):  # another image is not held up
            order.append("other")
        order.append("one")
    await waiter
    assert order == ["other", "one", "two"]
    assert await _waiting_sessions(database) == 0


async def test_a_lease_held_by_a_dead_replica_expires(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database.url, database.password or "", "lab/app@x"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        waiter = asyncio.create_task(_hold_once(AdvisoryLeases(database), "lab/app@x"))
        await _until_waiting(database, 1)
        assert not waiter.done()
        holder.kill()  # the replica dies holding the lease: its session ends with it
        await asyncio.wait_for(waiter, 60)
    finally:
        holder.kill()
        holder.wait()


async def _hold_once(leases: AdvisoryLeases, name: str) -> None:
    async with leases.hold(name):
        return None


def test_a_session_the_server_dropped_is_opened_again(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    database = postgres_cluster.create_database()
    log = DecisionLog(tmp_path, database)
    log.record(_report("a" * 32, "2026-12-06T00:00:01Z", _d(1)))
    # A read, then a write: each the first statement on a dropped session.
    _drop_sessions(database)
    assert [d["decision_id"] for d in log.list_decisions(5)] == ["a" * 32]
    _drop_sessions(database)
    log.record(_report("b" * 32, "2026-12-06T00:00:02Z", _d(2)))
    assert len(log.list_decisions(5)) == 2
    log.close()


def _drop_sessions(database: Database) -> None:
    """What a server restart does to the gateway's session."""
    with psycopg.connect(database.url, password=database.password, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
