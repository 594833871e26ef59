"""Every pull's verdict is set and recorded in one place, ``Pipeline._conclude``.

Whatever follows each decision (a metric, a log line, a notification) hooks
in there; these tests hold that every way a pull can end passes it once,
with the verdict it records (an admission whose commit fails is concluded
again, as a denial). The layers are the typed fake
``LayerClients`` of test_pipeline_faults.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.pull import Pipeline, Pull, PullResult
from pullguard.gateway.pull.outcome import Outcome
from tests.gateway.test_pipeline_faults import DIGEST, _pipeline


class Concluded:
    """Wraps a pipeline's _conclude and keeps what each call concluded."""

    def __init__(self, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
        self.outcomes: list[tuple[str, str]] = []
        conclude = pipeline._conclude

        def spy(pull: Pull, outcome: Outcome) -> PullResult:
            try:
                return conclude(pull, outcome)
            finally:
                self.outcomes.append((type(outcome).__name__, pull.report.decision))

        monkeypatch.setattr(pipeline, "_conclude", spy)


async def _ended(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    faults: dict[tuple[str, str], str],
    pulls: list[tuple[str, bool]],
) -> tuple[list[tuple[str, str]], Pipeline]:
    pipeline = _pipeline(tmp_path, faults)
    concluded = Concluded(pipeline, monkeypatch)
    for reference, admit in pulls:
        await pipeline.pull("lab/app", reference, admit=admit)
    return concluded.outcomes, pipeline


@pytest.mark.parametrize(
    ("faults", "pulls", "expected"),
    [
        ({}, [("v1", True)], [("Verified", "ALLOW")]),
        ({}, [("v1", False)], [("Verified", "ALLOW")]),
        ({}, [("v1", True), ("v1", True)], [("Verified", "ALLOW"), ("Served", "ALLOW")]),
        ({("analysis", "Plan"): "deny"}, [("v1", True)], [("RefusedByPlan", "DENY")]),
        ({("format", "CheckManifest"): "deny"}, [("v1", True)], [("Refused", "DENY")]),
        ({("format", "CheckConfig"): "exception"}, [("v1", True)], [("Refused", "DENY")]),
        ({("fetcher", "FetchBlobs"): "layer_failure"}, [("v1", True)], [("Outage", "OUTAGE")]),
    ],
)
async def test_every_pull_is_concluded_once_with_its_verdict(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    faults: dict[tuple[str, str], str],
    pulls: list[tuple[str, bool]],
    expected: list[tuple[str, str]],
) -> None:
    outcomes, pipeline = await _ended(tmp_path, monkeypatch, faults, pulls)
    assert outcomes == expected
    # One decision recorded per pull (a syntax refusal would only be counted).
    assert len(pipeline.decisions.list_decisions(10)) == len(pulls)


async def test_an_admission_whose_commit_fails_is_concluded_again_as_a_denial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = _pipeline(tmp_path, {})

    def disk_full(*_args: Any, **_kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(pipeline.decisions, "admit_and_record", disk_full)
    concluded = Concluded(pipeline, monkeypatch)

    result = await pipeline.pull("lab/app", "v1")

    assert not result.allowed and result.manifest is None
    assert concluded.outcomes == [("Verified", "ALLOW"), ("Refused", "DENY")]
    assert pipeline.decisions.admitted("lab/app", DIGEST, "v") is None
    (decision,) = pipeline.decisions.list_decisions(10)
    assert decision["decision"] == "DENY" and not decision["admitted"]
    assert decision["denied_by"] == "gateway"
