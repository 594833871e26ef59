"""Retention of decisions and quarantine entries, on SQLite and on PostgreSQL (issue 11, part 7).

Oldest first, in batches, by age and by count; a decision something still
names (an admission, an open quarantine entry, a waiver) is kept whatever
its age; a quarantine entry's files go with its row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pullguard.gateway.decisions import Admission, DecisionLog
from pullguard.gateway.gc import collect, records
from pullguard.gateway.gc.records import prune_decisions, prune_quarantine
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config.database import Database
from pullguard.services.runtime.config.retention import GcSettings, Keep, Retention

DAY = 86400.0


def _ago(days: float) -> str:
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    return moment.isoformat(timespec="milliseconds")


def _report(n: int, days: float, decision: str = "DENY") -> dict[str, object]:
    return {
        "decision_id": f"{n:032x}",
        "time": _ago(days),
        "reference": f"lab/app:v{n}",
        "repository": "lab/app",
        "digest": f"sha256:{n:064x}",
        "decision": decision,
        "policy_version": "p1",
    }


@pytest.fixture
def log(tmp_path: Path, database: Database | None) -> Iterator[DecisionLog]:
    with contextlib.closing(DecisionLog(tmp_path / "state", database)) as decisions:
        yield decisions


def _ids(log: DecisionLog) -> set[int]:
    return {int(d["decision_id"], 16) for d in log.list_decisions(1000)}


def test_decisions_older_than_max_age_go_in_batches_unless_named(
    log: DecisionLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "BATCH", 3)
    for n in range(1, 11):
        log.record(_report(n, days=100 + n))  # ten old decisions
    for n in range(11, 14):
        log.record(_report(n, days=1))  # three recent ones
    # Old, but named: the admission decision 1 made, the open quarantine entry of 2,
    # and the waiver of a release (decision 3) of quarantine entry 4.
    log.admit_and_record(
        Admission("lab/app", f"sha256:{1:064x}", "m", 1, f"{1:032x}"),
        "p1",
        [],
        [],
        "lab/app",
        _report(1, days=101, decision="ALLOW"),
    )
    log.quarantined(f"{2:032x}", _ago(102), "lab/app:v2", f"sha256:{2:064x}", "denied")
    log.add_waivers(
        "lab/app",
        f"sha256:{4:064x}",
        ["x.y"],
        f"{3:032x}",
        {"quarantine_id": f"{4:032x}", "time": _ago(103), "reason": "ok", "operator": "ops"},
    )

    dry = prune_decisions(log, Keep(max_age=90 * DAY), dry=True)
    assert dry.count == 6 and _ids(log) == set(range(1, 14))

    pruned = prune_decisions(log, Keep(max_age=90 * DAY), dry=False)
    assert pruned.count == 6
    assert [int(i, 16) for i, _t, _r in pruned.items] == [10, 9, 8, 7, 6, 5]
    assert _ids(log) == {1, 2, 3, 4, 11, 12, 13}


def test_decisions_beyond_max_count_go_oldest_first(log: DecisionLog) -> None:
    for n in range(1, 9):
        log.record(_report(n, days=n))  # 1 is the newest
    pruned = prune_decisions(log, Keep(max_count=3), dry=False)
    assert pruned.count == 5
    assert _ids(log) == {1, 2, 3}
    assert prune_decisions(log, Keep(max_count=3), dry=False).count == 0
    assert prune_decisions(log, Keep(), dry=False).count == 0


def _quarantine(log: DecisionLog, store: Quarantine, n: int, days: float) -> Path:
    entry = store.entry_dir(f"{n:032x}")
    (entry / "content").mkdir(parents=True)
    (entry / "content" / "blob").write_bytes(b"x" * 1000)
    (entry / "report.json").write_text("{}")
    log.record(_report(n, days=days))
    log.quarantined(f"{n:032x}", _ago(days), f"lab/app:v{n}", f"sha256:{n:064x}", "denied")
    return entry


def test_quarantine_entries_past_retention_go_with_their_files(
    log: DecisionLog, tmp_path: Path
) -> None:
    store = Quarantine(tmp_path / "state" / "quarantine")
    old = [_quarantine(log, store, n, days=40 + n) for n in range(1, 4)]
    recent = [_quarantine(log, store, n, days=n - 3) for n in range(4, 7)]
    keep = Keep(max_age=30 * DAY, max_count=2)

    dry = prune_quarantine(log, store, keep, dry=True, min_age=0)
    assert dry.count == 4 and dry.bytes >= 4000
    assert all(entry.exists() for entry in old + recent)

    pruned = prune_quarantine(log, store, keep, dry=False, min_age=0)
    assert pruned.count == 4
    assert {e["id"] for e in log.list_quarantine()} == {f"{n:032x}" for n in (4, 5)}
    assert [e.exists() for e in old + recent] == [False, False, False, True, True, False]
    # Their decisions are no longer named by an entry: decisions retention may take them.
    assert prune_decisions(log, Keep(max_age=30 * DAY), dry=False).count == 3


def test_released_entry_folders_go_by_age_only(log: DecisionLog, tmp_path: Path) -> None:
    store = Quarantine(tmp_path / "state" / "quarantine")
    released = _quarantine(log, store, 1, days=50)
    log.forget_quarantine(f"{1:032x}")  # released: the folder stays for the record
    fresh = _quarantine(log, store, 2, days=50)
    log.forget_quarantine(f"{2:032x}")
    old = time.time() - 50 * DAY
    os.utime(released, (old, old))
    not_ours = store.root / "lost+found"
    not_ours.mkdir()
    os.utime(not_ours, (old, old))

    pruned = prune_quarantine(log, store, Keep(max_age=30 * DAY), dry=False, min_age=3600)
    assert pruned.count == 1
    assert not released.exists()
    assert fresh.exists(), "a folder written lately may be an entry on its way in"
    assert not_ours.exists()
    assert prune_quarantine(log, store, Keep(max_count=0), dry=False, min_age=0).count == 0


def test_one_run_prunes_records_and_blobs(log: DecisionLog, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Quarantine(state / "quarantine")
    admitted = AdmittedStore(state / "admitted")
    _quarantine(log, store, 1, days=40)
    retention = Retention(
        decisions=Keep(max_age=30 * DAY), quarantine=Keep(max_age=30 * DAY), gc=GcSettings(0, 0)
    )
    report = collect(retention, log, admitted, store, dry=False)
    assert (report.quarantine.count, report.decisions.count) == (1, 1)
    assert report.as_json()["decisions"]["items"][0]["id"] == f"{1:032x}"
