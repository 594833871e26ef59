"""The garbage collector of the admitted store (issue 11, part 7).

It removes what no admission needs, keeps what any admission needs (a blob
two images share outlives the revocation of one), and never races an
admission: a collection that runs while a pull has moved its content in but
not yet committed it removes none of it, and a collection that marked a
file before an admission committed it looks again before unlinking.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from pullguard.gateway import failpoints
from pullguard.gateway.decisions import Admission, DecisionLog
from pullguard.gateway.gc import AdmissionGate
from pullguard.gateway.gc.blobs import BlobCollector, BlobSweep
from pullguard.gateway.stores import AdmittedStore
from tests.gateway.test_pipeline_faults import CONFIG_BLOB, DIGEST, LAYER_BLOB, _pipeline

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put(store: AdmittedStore, data: bytes, age: float = 7200.0) -> str:
    digest = _digest(data)
    path = store.blob_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return digest


def _admit(log: DecisionLog, repository: str, manifest: str, blobs: list[str], n: int) -> None:
    log.admit_and_record(
        Admission(repository, manifest, MANIFEST_TYPE, 10, f"{n:032x}"),
        "p1",
        blobs,
        [],
        repository,
        {
            "decision_id": f"{n:032x}",
            "time": "2026-01-01T00:00:00.000+00:00",
            "reference": f"{repository}:v1",
            "repository": repository,
            "digest": manifest,
            "decision": "ALLOW",
            "policy_version": "p1",
        },
    )


def test_revoked_images_unique_blobs_go_and_shared_ones_stay(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "state")
    store = AdmittedStore(tmp_path / "state" / "admitted")
    shared, only_a, only_b = (_put(store, b"shared"), _put(store, b"a"), _put(store, b"b"))
    manifest_a, manifest_b = _put(store, b"manifest-a"), _put(store, b"manifest-b")
    leftover = _put(store, b"from an admission that failed")
    _admit(log, "lab/a", manifest_a, [shared, only_a], 1)
    _admit(log, "lab/b", manifest_b, [shared, only_b], 2)
    log.revoke("lab/b", manifest_b)

    dry = BlobCollector(log, store, min_age=60).collect(dry=True)
    assert {d for d, _s in dry.removed} == {only_b, manifest_b, leftover}
    assert store.has(only_b), "a dry run removes nothing"

    sweep = BlobCollector(log, store, min_age=60).collect(dry=False)
    assert {d for d, _s in sweep.removed} == {only_b, manifest_b, leftover}
    assert sweep.removed_bytes == len(b"b" + b"manifest-b" + b"from an admission that failed")
    assert sweep.live == 3
    for kept in (shared, only_a, manifest_a):
        assert store.has(kept)
    for gone in (only_b, manifest_b, leftover):
        assert not store.has(gone)
    log.close()


def test_a_file_younger_than_min_age_is_spared(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "state")
    store = AdmittedStore(tmp_path / "state" / "admitted")
    fresh = _put(store, b"just arrived", age=0)
    old = _put(store, b"long forgotten")
    sweep = BlobCollector(log, store, min_age=600).collect(dry=False)
    assert [d for d, _s in sweep.removed] == [old]
    assert sweep.young == 1 and store.has(fresh)
    log.close()


def test_a_misnamed_file_is_left_to_fsck(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "state")
    store = AdmittedStore(tmp_path / "state" / "admitted")
    odd = store.root / "blobs" / "sha256" / "not-a-digest"
    odd.parent.mkdir(parents=True, exist_ok=True)
    odd.write_bytes(b"?")
    assert BlobCollector(log, store, min_age=0).collect(dry=False).removed == []
    assert odd.exists()
    log.close()


async def test_gc_during_an_admission_removes_none_of_what_it_moved_in(tmp_path: Path) -> None:
    """The pull is stopped after its blobs and manifest are in the store, before its commit."""
    pipeline = _pipeline(tmp_path, {})
    collector = BlobCollector(pipeline.decisions, pipeline.admitted, min_age=0, stripe_wait=0.2)
    moved_in = [_digest(CONFIG_BLOB), _digest(LAYER_BLOB), DIGEST]
    during: list[BlobSweep] = []

    def collect_now() -> None:
        # Content on disk that nothing references yet: what a collector removes.
        assert all(pipeline.admitted.has(d) for d in moved_in)
        assert not pipeline.decisions.referenced_among(moved_in)
        during.append(collector.collect(dry=False))

    with failpoints.calling("admit.after_manifest", collect_now):
        result = await pipeline.pull("lab/app", "v1")

    assert result.allowed, result.report.as_json()
    assert during[0].removed == []
    assert sorted(during[0].deferred_items) == sorted(moved_in)
    for digest in moved_in:
        assert pipeline.admitted.verified_blob(digest) is not None, digest
    # Committed now: the next collection finds everything in use.
    after = collector.collect(dry=False)
    assert after.removed == [] and after.live == 3
    # And the image is served from the store without verifying again.
    again = await pipeline.pull("lab/app", "v1")
    assert again.allowed and again.report.cached


async def test_gc_looks_again_under_the_lock_before_unlinking(tmp_path: Path) -> None:
    """Marked as garbage (a revoked image), then admitted again before the sweep: spared."""
    pipeline = _pipeline(tmp_path, {})
    assert (await pipeline.pull("lab/app", "v1")).allowed
    pipeline.store.revoke("lab/app", DIGEST)
    collector = BlobCollector(pipeline.decisions, pipeline.admitted, min_age=0)
    sweep = BlobSweep()
    candidates = collector.mark(sweep)
    assert sum(len(c) for c in candidates.values()) == 3

    readmitted = await pipeline.pull("lab/app", "v1")
    assert readmitted.allowed and not readmitted.report.cached

    collector.sweep(candidates, sweep, dry=False)
    assert sweep.removed == []
    for digest in (_digest(CONFIG_BLOB), _digest(LAYER_BLOB), DIGEST):
        assert pipeline.admitted.verified_blob(digest) is not None, digest


async def test_an_admission_waits_for_a_stripe_the_collector_holds(tmp_path: Path) -> None:
    store = AdmittedStore(tmp_path / "admitted")
    gate = AdmissionGate(store.root)
    digest = _digest(b"x")
    with gate.collecting("2d", 1.0) as locked:
        assert locked
    from pullguard.gateway.gc.gate import stripe_of

    stripe = stripe_of(digest)
    with gate.collecting(stripe, 1.0) as locked:
        assert locked
        other = AdmissionGate(store.root)
        # While the collector holds it, a second exclusive holder cannot get in.
        with other.collecting(stripe, 0.1) as second:
            assert not second
    async with gate.admitting([digest]):
        with AdmissionGate(store.root).collecting(stripe, 0.1) as blocked:
            assert not blocked
    with gate.collecting(stripe, 0.1) as free:
        assert free


@pytest.mark.parametrize("bad", ["sha256:zz"])
def test_stripe_of_a_bad_digest_is_refused(bad: str) -> None:
    from pullguard.gateway.gc.gate import stripe_of
    from pullguard.services.runtime.digests import DigestSyntaxError

    with pytest.raises(DigestSyntaxError):
        stripe_of(bad)
