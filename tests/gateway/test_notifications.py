"""Notifications at the gateway level: real decision database (SQLite and PostgreSQL),
real stores, a real HTTP receiver on 127.0.0.1, the real sender.

The layers are test_pipeline_faults' typed fake (a refusal on demand); the
events come from the pipeline's own decisions, releases and re-evaluations.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.notify.events import SCHEMA
from pullguard.gateway.notify.sender import NotificationSender, outbox_for, start_sender
from pullguard.gateway.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from pullguard.gateway.pull import Pipeline
from pullguard.gateway.release import plan_release
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.config.database import Database
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, signature_pb2
from tests.gateway.test_pipeline_faults import FakeLayers
from tests.support.configs import make_config
from tests.support.receiver import Receiver, as_json

SECRET = b"a shared secret of the receiver"
BODY_KEYS = {
    "schema",
    "event",
    "id",
    "time",
    "decision",
    "reference",
    "repository",
    "digest",
    "previous_digest",
    "outcome",
    "layer",
    "reason",
    "findings",
    "operator",
    "release_reason",
    "replica",
}


class Layers(FakeLayers):
    """The fake, plus an unsigned image (signature.missing, which a release may waive)."""

    unsigned = False

    def _healthy(self, layer: str, method: str, request: Any) -> Any:
        if method == "VerifySignatures" and self.unsigned:
            verdict = common_pb2.Verdict(decision=common_pb2.DENY, layer="signature")
            verdict.findings.add(
                code="signature.missing", severity=common_pb2.ERROR, message="no signature"
            )
            return signature_pb2.VerifySignaturesResponse(verdict=verdict)
        return super()._healthy(layer, method, request)


def _config(tmp_path: Path, url: str, **entry: Any) -> Config:
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    hook = {"url": url, "secret_file": str(secret), "backoff": 0.05, "timeout": 5, **entry}
    return make_config(tmp_path, notifications=[hook], replica_id="r1")


def _pipeline(config: Config, database: Database | None, **faults: str) -> Pipeline:
    state = config.state_dir
    staging = StagingStore(state / "staging")
    decisions = DecisionLog(state, database)
    decisions.notify_to(outbox_for(config))
    layers = Layers(staging, {tuple(k.split(".")): v for k, v in faults.items()})  # type: ignore[misc]
    return Pipeline(
        config,
        layers,
        decisions,
        AdmittedStore(state / "admitted"),
        Quarantine(state / "quarantine"),
        staging,
    )


def _sender(config: Config, decisions: DecisionLog) -> NotificationSender:
    sender = start_sender(config, decisions, CollectorRegistry())
    assert sender is not None
    sender.poll = 0.05
    return sender


def _count(sender: NotificationSender, kind: str, result: str) -> float:
    return float(sender.metrics.sent.labels(kind, result)._value.get())


async def _one_denial(
    config: Config, database: Database | None, result: str, count: int
) -> tuple[Pipeline, NotificationSender]:
    """Pull once into a denial; stop the sender once ``count`` deliveries ended in ``result``."""
    pipeline = _pipeline(config, database, **{"format.CheckManifest": "deny"})
    sender = _sender(config, pipeline.decisions)
    try:
        await pipeline.pull("lab/app", "v1")
        for _ in range(1200):
            if _count(sender, "deny", result) >= count:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{count} {result} deliveries awaited for a minute in vain")
    finally:
        await sender.stop()
    return pipeline, sender


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    yield hook
    hook.close()


async def _received(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    got = await asyncio.to_thread(receiver.wait_for, count)
    return [as_json(r) for r in got]


async def test_a_denial_is_posted_signed_with_its_quarantine(
    tmp_path: Path, receiver: Receiver, database: Database | None
) -> None:
    config = _config(tmp_path, receiver.url)
    pipeline = _pipeline(config, database, **{"format.CheckManifest": "deny"})
    sender = _sender(config, pipeline.decisions)
    try:
        result = await pipeline.pull("lab/app", "v1")
        assert not result.allowed
        deny, quarantine = await _received(receiver, 2)
    finally:
        await sender.stop()
    decision = result.report.decision_id
    assert (deny["event"], quarantine["event"]) == ("deny", "quarantine")
    for body in (deny, quarantine):
        assert set(body) == BODY_KEYS and body["schema"] == SCHEMA
        assert body["decision"] == decision and body["outcome"] == "denied"
        assert body["layer"] == "format" and body["repository"] == "lab/app"
        assert body["reference"] == "lab/app:v1" and body["replica"] == "r1"
        assert body["digest"] == result.report.digest
    assert deny["id"] != quarantine["id"]
    # The signature covers the timestamp and the exact bytes; a changed body fails.
    first = receiver.received[0]
    signature, timestamp = first.headers[SIGNATURE_HEADER], first.headers[TIMESTAMP_HEADER]
    assert signature.startswith("sha256=")
    assert verify(SECRET, signature, timestamp, first.body)
    assert not verify(SECRET, signature, timestamp, first.body.replace(b"deny", b"dany"))
    assert not verify(b"another secret of some length", signature, timestamp, first.body)
    assert not verify(SECRET, signature, str(int(timestamp) + 1), first.body)
    assert first.headers["X-Pullguard-Delivery"] == deny["id"]
    assert _count(sender, "deny", "delivered") == 1
    assert pipeline.decisions.list_notifications() == []


async def test_release_revoke_and_a_moved_tag_are_posted(
    tmp_path: Path, receiver: Receiver, database: Database | None
) -> None:
    config = _config(tmp_path, receiver.url, events=["release", "revoke", "moved_tag"])
    pipeline = _pipeline(config, database)
    layers = pipeline.clients
    assert isinstance(layers, Layers)
    sender = _sender(config, pipeline.decisions)
    try:
        # Denied for a missing signature (no event asked for), then released.
        layers.unsigned = True
        denied = (await pipeline.pull("lab/app", "v1")).report
        assert denied.decision == "DENY"
        quarantined = pipeline.decisions.list_decisions(1)[0]
        plan = plan_release(denied.decision_id, quarantined)
        released = await pipeline.release(plan, "reviewed in SEC-1", "alice")
        assert released.allowed
        (release,) = await _received(receiver, 1)
        # The tag moves: the upstream serves another image under v1.
        layers.unsigned = False
        first = (await pipeline.pull("lab/app", "v1")).report
        layers.manifest = layers.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":2')
        moved = (await pipeline.pull("lab/app", "v1")).report
        again = (await pipeline.pull("lab/app", "v1")).report
        assert first.decision == moved.decision == again.decision == "ALLOW"
        assert moved.digest != first.digest
        (_, tag_moved) = await _received(receiver, 2)
        # A re-evaluation that now refuses revokes both admitted images.
        layers.faults[("format", "CheckManifest")] = "deny"
        outcomes = await pipeline.reevaluate(force=True, limit=10)
        assert sorted(o.outcome for o in outcomes) == ["revoked", "revoked"]
        revokes = (await _received(receiver, 4))[2:]
    finally:
        await sender.stop()
    assert release["event"] == "release" and release["operator"] == "alice"
    assert release["release_reason"] == "reviewed in SEC-1"
    assert release["digest"] == denied.digest and release["outcome"] == "allowed"
    assert release["decision"] == released.report.decision_id
    assert tag_moved["event"] == "moved_tag" and tag_moved["decision"] == moved.decision_id
    assert (tag_moved["previous_digest"], tag_moved["digest"]) == (first.digest, moved.digest)
    assert {r["event"] for r in revokes} == {"revoke"}
    assert {r["outcome"] for r in revokes} == {"revoked"} and {r["layer"] for r in revokes} == {
        "format"
    }
    assert {r["decision"] for r in revokes} == {o.decision_id for o in outcomes}
    # Nothing else was posted: not the denials, nor the unmoved third pull.
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 4


async def test_a_pin_mismatch_is_a_moved_tag(tmp_path: Path, receiver: Receiver) -> None:
    config = _config(tmp_path, receiver.url, events=["moved_tag"])
    pipeline = _pipeline(config, None)
    pinned = "sha256:" + "1" * 64
    report = {
        "decision_id": "d1",
        "time": "2026-01-01T00:00:00.000+00:00",
        "reference": "lab/app:v1",
        "client_name": "lab/app",
        "repository": "lab/app",
        "digest": "sha256:" + "2" * 64,
        "decision": "DENY",
        "outcome": "denied",
        "denied_by": "hashverify",
        "reason": "tag moved",
        "policy_version": "p",
        "layers": [
            {
                "layer": "hashverify",
                "step": "manifest",
                "decision": "DENY",
                "error": "",
                "findings": [
                    {
                        "code": "hash.pin_mismatch",
                        "severity": "ERROR",
                        "message": "tag v1 moved",
                        "evidence": {"pinned": pinned},
                    }
                ],
            }
        ],
    }
    pipeline.decisions.record(report)
    pipeline.decisions.record({**report, "decision_id": "d2"})  # told once
    (queued,) = pipeline.decisions.list_notifications()
    body = json.loads(queued["body"])
    assert body["event"] == "moved_tag" and body["previous_digest"] == pinned
    assert body["findings"] == ["hash.pin_mismatch"] and body["decision"] == "d1"


async def test_an_event_waits_for_a_receiver_that_is_down_across_a_restart(
    tmp_path: Path, database: Database | None
) -> None:
    down = Receiver()  # its port is known, nothing listens yet
    config = _config(tmp_path, down.url, events=["deny"])
    pipeline, _ = await _one_denial(config, database, "failed", 2)
    pipeline.decisions.close()
    (waiting,) = _pending(config, database)
    assert waiting["state"] == "pending" and waiting["attempts"] >= 2
    assert "ClientConnectorError" in waiting["last_error"]
    # The gateway restarts; the receiver is back.
    down.start()
    try:
        decisions = DecisionLog(config.state_dir, database)
        decisions.notify_to(outbox_for(config))
        restarted = _sender(config, decisions)
        try:
            (got,) = await asyncio.to_thread(down.wait_for, 1)
        finally:
            await restarted.stop()
        assert as_json(got)["event"] == "deny" and as_json(got)["id"] == waiting["event_id"]
        assert decisions.list_notifications() == []
        decisions.close()
    finally:
        down.close()


def _pending(config: Config, database: Database | None) -> list[dict[str, Any]]:
    decisions = DecisionLog(config.state_dir, database)
    try:
        return decisions.list_notifications()
    finally:
        decisions.close()


async def test_a_refusing_receiver_is_retried_then_the_event_is_dead(
    tmp_path: Path, receiver: Receiver, database: Database | None
) -> None:
    receiver.status = 500
    config = _config(tmp_path, receiver.url, events=["deny"], max_attempts=3)
    pipeline, sender = await _one_denial(config, database, "dead", 1)
    await asyncio.sleep(0.3)
    bodies = receiver.bodies()
    assert len(bodies) == 3 and len(set(bodies)) == 1  # one event, the same bytes each time
    assert _count(sender, "deny", "failed") == 2
    (dead,) = pipeline.decisions.list_notifications()
    assert (dead["state"], dead["attempts"], dead["last_error"]) == ("dead", 3, "HTTP 500: refused")
    assert sender.metrics.registry is not None
    scraped = generate_latest(sender.metrics.registry).decode()
    assert 'pullguard_notifications_queued{state="dead"} 1.0' in scraped
    assert 'pullguard_notifications_total{event="deny",result="failed"} 2.0' in scraped


async def test_a_redirect_is_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    receiver.redirect_to = "/elsewhere"
    config = _config(tmp_path, receiver.url, events=["deny"], max_attempts=1)
    pipeline, _ = await _one_denial(config, None, "dead", 1)
    assert receiver.bodies("/elsewhere") == []
    (dead,) = pipeline.decisions.list_notifications()
    assert dead["last_error"] == "HTTP 302: redirects are not followed"


async def test_an_endless_answer_is_read_only_so_far(tmp_path: Path, receiver: Receiver) -> None:
    receiver.endless = True
    config = _config(tmp_path, receiver.url, events=["deny"], timeout=3.0)
    _, sender = await _one_denial(config, None, "delivered", 1)
    assert _count(sender, "deny", "failed") == 0


async def test_a_hanging_receiver_delays_no_pull_and_times_out(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.hold()
    config = _config(tmp_path, receiver.url, events=["deny"], timeout=1.0)
    pipeline = _pipeline(config, None, **{"format.CheckManifest": "deny"})
    sender = _sender(config, pipeline.decisions)
    try:
        await pipeline.pull("lab/app", "v1")
        await asyncio.to_thread(receiver.wait_holding)
        # The sender waits on the receiver; pulls go on.
        for _ in range(3):
            result = await pipeline.pull("lab/app", "v1")
            assert result.report.decision == "DENY"
            assert receiver.holding
        # The POST's timeout ends the wait: the event is tried again.
        await asyncio.to_thread(receiver.wait_for, 2)
        assert _count(sender, "deny", "failed") >= 1
    finally:
        receiver.release()
        await sender.stop()


async def test_a_full_queue_drops_the_new_event(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/hook", events=["deny"], max_queued=1)
    pipeline = _pipeline(config, None, **{"format.CheckManifest": "deny"})
    dropped: list[str] = []
    assert pipeline.decisions.outbox is not None
    pipeline.decisions.outbox.on_dropped = dropped.append
    await pipeline.pull("lab/app", "v1")
    await pipeline.pull("lab/app", "v1")
    assert len(pipeline.decisions.list_notifications()) == 1
    assert dropped == ["deny"]
    # The decisions themselves are recorded whatever the queue holds.
    assert len(pipeline.decisions.list_decisions(10)) == 2


def _denial(number: int) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(str(number).encode()).hexdigest()
    return {
        "decision_id": f"d{number:03d}",
        "time": f"2026-01-01T00:00:{number:02d}.000+00:00",
        "reference": f"lab/app@{digest}",
        "client_name": "lab/app",
        "repository": "lab/app",
        "digest": digest,
        "decision": "DENY",
        "outcome": "denied",
        "denied_by": "format",
        "policy_version": "p",
        "layers": [],
    }


async def test_replicas_on_one_postgresql_deliver_each_event_once(
    tmp_path: Path, receiver: Receiver, postgres_cluster: Any
) -> None:
    database = postgres_cluster.create_database()
    config = _config(tmp_path, receiver.url, events=["deny"])
    replicas = [DecisionLog(tmp_path / f"replica{i}", database) for i in range(3)]
    for decisions in replicas:
        decisions.notify_to(outbox_for(config))
    for number in range(30):
        replicas[number % 3].record(_denial(number))
    receiver.hold()  # every replica claims while the first POSTs wait
    senders = [_sender(config, decisions) for decisions in replicas]
    try:
        await asyncio.to_thread(receiver.wait_holding)
        await asyncio.sleep(0.5)
        receiver.release()
        await _received(receiver, 30)
        await asyncio.sleep(0.5)
    finally:
        for sender in senders:
            await sender.stop()
    ids = [as_json(r)["decision"] for r in receiver.received]
    assert sorted(ids) == [f"d{n:03d}" for n in range(30)]
    assert sum(_count(s, "deny", "delivered") for s in senders) == 30
    for decisions in replicas:
        decisions.close()
