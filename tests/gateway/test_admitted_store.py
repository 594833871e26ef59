"""The admitted store is never trusted blindly; records are durable (issues 7 and 14).

Real files under tmp_path and a real database: the cases taking ``database``
run on SQLite and on a real PostgreSQL server (tests/support/postgres.py).
The pipeline cases use the fake layers of test_pipeline_faults, where a
hostile fetcher is the point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from pullguard.gateway import fsck, stores
from pullguard.gateway.decisions import Admission, DecisionLog, StateError
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.stores import AdmittedStore
from pullguard.services.runtime.config.database import Database
from pullguard.services.runtime.errors import StagingError
from pullguard.services.runtime.staging import FileStamp, StagingStore
from pullguard.v1 import fetcher_pb2
from tests.gateway.test_pipeline_faults import (
    CONFIG_BLOB,
    DIGEST,
    LAYER_BLOB,
    MANIFEST,
    FakeLayers,
    _digest,
    _pipeline,
)
from tests.support.stack import pullguard_command

SESSION = "0" * 32


def _stage(staging: StagingStore, data: bytes, key: str = "") -> str:
    key = key or _digest(data)
    with staging.writer(SESSION) as writer:
        writer.write(data)
        writer.commit(key)
    return key


def _report(decision_id: str, decision: str = "ALLOW") -> dict[str, object]:
    return {
        "decision_id": decision_id,
        "time": "2026-12-06T00:00:00Z",
        "reference": "lab/app:v1",
        "repository": "lab/app",
        "digest": DIGEST,
        "decision": decision,
        "policy_version": "v",
    }


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# -- admission never trusts a name ---------------------------------------------


def test_a_verified_file_replaces_a_damaged_one_of_the_same_name(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, LAYER_BLOB)
    store.blob_path(key).parent.mkdir(parents=True, exist_ok=True)
    store.blob_path(key).write_bytes(b"damaged bytes")
    store.take_from_staging(staging, SESSION, key)
    assert store.blob_path(key).read_bytes() == LAYER_BLOB


def test_staged_bytes_that_do_not_hash_to_their_key_are_refused(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, b"other bytes", key=_digest(LAYER_BLOB))
    with pytest.raises(StagingError, match="hashes to"):
        store.take_from_staging(staging, SESSION, key)
    assert not store.has(key)


def test_a_streamed_digest_other_than_the_key_is_refused(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, LAYER_BLOB)
    with pytest.raises(StagingError, match="streamed"):
        store.take_from_staging(staging, SESSION, key, streamed=_digest(b"x"))
    assert not store.has(key)


def test_the_file_hashverify_stamped_is_taken_without_a_fifth_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, LAYER_BLOB)
    stamp = FileStamp.of(staging.path(SESSION, key).stat())

    def hashed(*_args: object) -> str:
        raise AssertionError("a stamped, unchanged file was hashed again")

    monkeypatch.setattr(stores, "file_digest", hashed)
    store.take_from_staging(staging, SESSION, key, verified=stamp)
    assert store.blob_path(key).read_bytes() == LAYER_BLOB


def test_a_file_put_in_place_of_the_stamped_one_is_hashed_and_refused(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, LAYER_BLOB)
    stamp = FileStamp.of(staging.path(SESSION, key).stat())
    _stage(staging, b"other bytes", key=key)  # a new file (inode) under the verified name
    with pytest.raises(StagingError, match="hashes to"):
        store.take_from_staging(staging, SESSION, key, verified=stamp)
    assert not store.has(key)


def test_a_file_written_since_its_stamp_is_hashed_and_refused(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, LAYER_BLOB)
    path = staging.path(SESSION, key)
    stamp = FileStamp.of(path.stat())
    _flip(path)  # same inode and size: only its times show the write
    verified = dataclasses.replace(stamp, ctime_ns=stamp.ctime_ns - 1)
    with pytest.raises(StagingError, match="hashes to"):
        store.take_from_staging(staging, SESSION, key, verified=verified)
    assert not store.has(key)


async def test_the_gateway_compares_the_fetchers_streamed_digest(tmp_path: Path) -> None:
    """A fetcher that staged the right bytes but streamed others is not believed."""

    class LyingStream(FakeLayers):
        def _healthy(self, layer: str, method: str, request: object) -> object:
            response = super()._healthy(layer, method, request)
            if method == "FetchBlobs":
                assert isinstance(response, fetcher_pb2.FetchBlobsResponse)
                response.blobs[1].computed_digest = _digest(b"what really came")
            return response

    pipeline = _pipeline(tmp_path, {})
    pipeline.clients = LyingStream(pipeline.staging, {})
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed
    codes = [f["code"] for f in result.report.denial_findings()]
    assert codes == ["gateway.staged_digest_mismatch"], result.report.as_json()
    assert not pipeline.admitted.has(_digest(LAYER_BLOB))


# -- serving checks what it serves ---------------------------------------------


def test_a_damaged_blob_is_detected_moved_aside_and_not_served(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    staging = StagingStore(tmp_path / "staging")
    key = _stage(staging, LAYER_BLOB)
    store.take_from_staging(staging, SESSION, key)
    assert store.verified_blob(key) == store.blob_path(key)
    _flip(store.blob_path(key))
    assert store.verified_blob(key) is None
    assert not store.has(key)
    assert [p.name.startswith("sha256-") for p in store.damaged_dir.iterdir()] == [True]


async def test_a_cached_pull_with_a_damaged_blob_fetches_and_replaces_it(
    tmp_path: Path, database: Database | None
) -> None:
    pipeline = _pipeline(tmp_path, {}, database)
    assert (await pipeline.pull("lab/app", "v1")).allowed
    layer = pipeline.admitted.blob_path(_digest(LAYER_BLOB))
    _flip(layer)
    again = await pipeline.pull("lab/app", "v1")
    assert again.allowed and not again.report.cached
    assert layer.read_bytes() == LAYER_BLOB
    manifest = pipeline.admitted.blob_path(DIGEST)
    _flip(manifest)
    third = await pipeline.pull("lab/app", "v1")
    assert third.allowed and not third.report.cached and third.manifest == MANIFEST
    assert manifest.read_bytes() == MANIFEST


# -- quarantine holds verdicts, not debris --------------------------------------


@pytest.mark.parametrize("fault", ["layer_failure", "exception"])
async def test_a_layer_failing_mid_pull_leaves_no_quarantine_entry(
    tmp_path: Path, fault: str, database: Database | None
) -> None:
    pipeline = _pipeline(tmp_path, {("format", "InspectLayers"): fault}, database)
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed
    assert list(pipeline.quarantine.root.iterdir()) == []
    assert pipeline.decisions.list_quarantine() == []
    # The pull's session is in this replica's own folder (see Pull.session).
    session = f"{pipeline.config.replica_id}/{result.report.decision_id}"
    assert not pipeline.staging.session_dir(session).exists()


async def test_a_denial_with_findings_is_still_quarantined(
    tmp_path: Path, database: Database | None
) -> None:
    pipeline = _pipeline(tmp_path, {("format", "InspectLayers"): "allow_with_error"}, database)
    result = await pipeline.pull("lab/app", "v1")
    assert not result.allowed
    assert [p.name for p in pipeline.quarantine.root.iterdir()] == [result.report.decision_id]


# -- durable records -------------------------------------------------------------


def test_a_torn_audit_line_does_not_swallow_the_next_record(
    tmp_path: Path, database: Database | None
) -> None:
    log = DecisionLog(tmp_path, database)
    log.record(_report("a" * 32))
    audit = tmp_path / "audit.jsonl"
    data = audit.read_bytes()
    audit.write_bytes(data[: len(data) // 2])  # a crash mid-line
    log.record(_report("b" * 32))
    lines = audit.read_bytes().split(b"\n")
    assert json.loads(lines[1])["decision_id"] == "b" * 32
    assert lines[2] == b""


def test_admission_and_decision_commit_together(tmp_path: Path, database: Database | None) -> None:
    log = DecisionLog(tmp_path, database)
    admission = Admission("lab/app", DIGEST, "m", 1, "c" * 32)
    with pytest.raises(KeyError):
        # A report without its required fields fails inside the transaction.
        log.admit_and_record(admission, "v", ["sha256:" + "1" * 64], [], "lab/app", {})
    assert log.admitted("lab/app", DIGEST, "v") is None
    assert not log.blob_admitted("lab/app", "sha256:" + "1" * 64)
    log.admit_and_record(admission, "v", [], [], "lab/app", _report("c" * 32))
    assert log.admitted("lab/app", DIGEST, "v") == admission
    assert [d["decision_id"] for d in log.list_decisions(5)] == ["c" * 32]
    assert log.pending_audit() == []


def test_a_failed_audit_append_keeps_the_admission_and_its_allow(
    tmp_path: Path, database: Database | None
) -> None:
    log = DecisionLog(tmp_path, database)
    (tmp_path / "audit.jsonl").mkdir()  # appending fails, as on a full disk
    admission = Admission("lab/app", DIGEST, "m", 1, "c" * 32)
    log.admit_and_record(admission, "v", [], [], "lab/app", _report("c" * 32))
    assert log.admitted("lab/app", DIGEST, "v") == admission
    assert log.pending_audit() == ["c" * 32]
    (tmp_path / "audit.jsonl").rmdir()
    assert log.flush_audit() == 1
    assert json.loads((tmp_path / "audit.jsonl").read_bytes())["decision_id"] == "c" * 32


def test_an_unaudited_decision_is_appended_once_at_start(
    tmp_path: Path, database: Database | None
) -> None:
    log = DecisionLog(tmp_path, database)
    log.record(_report("d" * 32))
    log.record(_report("e" * 32))
    # As if the process died before appending: both notes stay committed.
    log._db.execute("INSERT INTO audit_pending VALUES (?), (?)", ("d" * 32, "e" * 32))
    log._db.commit()
    log.close()
    audit = tmp_path / "audit.jsonl"
    lines = audit.read_bytes().splitlines()
    audit.write_bytes(lines[0] + b"\n")  # e's line was lost in the crash
    log = DecisionLog(tmp_path, database)
    assert log.flush_audit() == 1
    ids = [json.loads(line)["decision_id"] for line in audit.read_bytes().splitlines()]
    assert ids == ["d" * 32, "e" * 32]
    assert log.pending_audit() == []


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "decisions.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="decisions.sqlite3"):
        DecisionLog(tmp_path)
    assert (tmp_path / "decisions.sqlite3").read_bytes().startswith(b"this is not")


def test_a_damaged_database_is_refused(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    for n in range(300):
        log.record(_report(f"{n:032x}"))
    log.close()
    with sqlite3.connect(tmp_path / "decisions.sqlite3") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "decisions.sqlite3"
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 3 + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="decisions.sqlite3"):
        DecisionLog(tmp_path)


def test_an_empty_database_beside_an_audit_log_is_refused(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.record(_report("f" * 32))
    log.close()
    (tmp_path / "decisions.sqlite3").write_bytes(b"")
    for stale in ("decisions.sqlite3-wal", "decisions.sqlite3-shm"):
        (tmp_path / stale).unlink(missing_ok=True)
    with pytest.raises(StateError, match="missing or empty"):
        DecisionLog(tmp_path)


def test_the_cli_names_the_bad_database_without_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "decisions.sqlite3").write_bytes(b"garbage" * 1000)
    config = tmp_path / "pullguard.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state),
                "upstreams": {"lab": {"url": "http://127.0.0.1:9", "insecure": True}},
                "policy": {"rules": [{"match": "lab/**", "signature": "none"}]},
            }
        )
    )
    for command in (["decisions"], ["fsck"]):
        done = subprocess.run(
            [*pullguard_command(), *command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        assert "decisions.sqlite3" in done.stderr and "Traceback" not in done.stderr


# -- start-up reconciliation and fsck ------------------------------------------------


async def _admitted_pipeline(tmp_path: Path, database: Database | None) -> Pipeline:
    pipeline = _pipeline(tmp_path, {}, database)
    assert (await pipeline.pull("lab/app", "v1")).allowed
    return pipeline


async def test_a_cached_tag_pull_does_not_rewrite_index_json(
    tmp_path: Path, database: Database | None
) -> None:
    pipeline = await _admitted_pipeline(tmp_path, database)
    index = pipeline.admitted.root / "index.json"
    written = index.stat().st_ino  # index.json is replaced, never edited in place
    cached = await pipeline.pull("lab/app", "v1")
    assert cached.allowed and cached.report.cached
    assert index.stat().st_ino == written
    pipeline.admitted.add_reference(DIGEST, "m", 5, ["lab/app:v2"])
    assert index.stat().st_ino != written
    written = index.stat().st_ino
    assert pipeline.admitted.remove_references("lab/other", DIGEST) == 0
    assert index.stat().st_ino == written


async def test_reconcile_removes_tmp_files_and_unadmitted_names(
    tmp_path: Path, database: Database | None
) -> None:
    pipeline = await _admitted_pipeline(tmp_path, database)
    store, decisions = pipeline.admitted, pipeline.decisions
    (store.root / ".tmp-abc").write_bytes(b'{"schemaVer')
    store.add_reference(_digest(b"ghost"), "m", 5, ["lab/ghost:v1"])
    found = fsck.reconcile(decisions, store)
    assert found.layout.tmp_files == [".tmp-abc"]
    assert found.layout.unadmitted_names == ["lab/ghost:v1"]
    assert not (store.root / ".tmp-abc").exists()
    names = [
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((store.root / "index.json").read_bytes())["manifests"]
    ]
    assert sorted(names) == sorted([f"lab/app@{DIGEST}", "lab/app:v1"])


async def test_reconcile_names_an_admission_index_json_lost(
    tmp_path: Path, database: Database | None
) -> None:
    pipeline = await _admitted_pipeline(tmp_path, database)
    store = pipeline.admitted
    store.remove_references("lab/app", DIGEST)
    found = fsck.reconcile(pipeline.decisions, store)
    assert found.layout.unnamed_admissions == [f"lab/app@{DIGEST}"]
    assert store.tags_for("lab/app", DIGEST) == []
    assert f"lab/app@{DIGEST}" in (store.root / "index.json").read_text()


async def test_fsck_finds_damaged_missing_and_orphaned_and_repairs(
    tmp_path: Path, database: Database | None
) -> None:
    pipeline = await _admitted_pipeline(tmp_path, database)
    store, decisions = pipeline.admitted, pipeline.decisions
    assert fsck.fsck(decisions, store, repair=False).problems() == 0
    _flip(store.blob_path(_digest(LAYER_BLOB)))
    store.blob_path(_digest(CONFIG_BLOB)).unlink()
    orphan = store.blob_path(_digest(b"orphan"))
    orphan.write_bytes(b"orphan")
    found = fsck.fsck(decisions, store, repair=False)
    assert found.damaged == [_digest(LAYER_BLOB)]
    assert found.missing == [_digest(CONFIG_BLOB)]
    assert found.orphaned == [_digest(b"orphan")]
    repaired = fsck.fsck(decisions, store, repair=True)
    assert repaired.withdrawn == [f"lab/app@{DIGEST}"]
    assert decisions.admitted("lab/app", DIGEST, "v") is None
    assert not orphan.exists() and not store.has(_digest(LAYER_BLOB))
    assert len(list(store.damaged_dir.iterdir())) == 1
    again = fsck.fsck(decisions, store, repair=False)
    # The manifest and its remaining blob are orphans now; nothing is damaged or missing.
    assert again.damaged == [] and again.missing == []
    # The next pull verifies and fetches again.
    result = await pipeline.pull("lab/app", "v1")
    assert result.allowed and not result.report.cached
    assert fsck.fsck(decisions, store, repair=False).problems() == 0


def test_hashes_are_the_real_sha256(tmp_path: Path) -> None:
    # Guard for the helpers above: the fake's digests are sha256 of the bytes.
    assert _digest(LAYER_BLOB) == "sha256:" + hashlib.sha256(LAYER_BLOB).hexdigest()
