"""Keyset pages of the decision log: an index range scan at any depth, stable pages.

100,000 decisions are written straight into the table (the page query reads
the summary columns only), many sharing one timestamp, so that the id
tie-break is what keeps pages from losing or repeating rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pullguard.gateway.decisions import Admission, DecisionLog
from pullguard.gateway.decisions.browse import (
    MAX_PAGE,
    DecisionFilter,
    decision_page_sql,
    encode_cursor,
    page_limit,
)
from pullguard.services.runtime.config.database import Database
from pullguard.services.runtime.errors import InvalidRequest

ROWS = 100_000
LAYERS = ("signature", "source", "format", "")


def _fill(log: DecisionLog) -> list[tuple[str, str]]:
    rows = []
    for n in range(ROWS):
        # Ten decisions per millisecond: ties on time are the rule, not the exception.
        ms = n // 10
        time = f"2026-12-{1 + ms // 86_400_000:02d}T{(ms // 3_600_000) % 24:02d}:" + (
            f"{(ms // 60_000) % 60:02d}:{(ms // 1000) % 60:02d}.{ms % 1000:03d}+00:00"
        )
        layer = LAYERS[n % 4]
        rows.append(
            (
                f"{n * 7919 % 1_000_003:032x}",
                time,
                f"docker.io/library/r{n % 50}:1",
                f"docker.io/library/r{n % 50}",
                "sha256:" + "0" * 64,
                "ALLOW" if not layer else "DENY",
                layer,
                "",
                "p1",
                0,
                "{}",
                "",
            )
        )
    log._db.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    log._db.commit()
    return sorted(((r[1], r[0]) for r in rows), reverse=True)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecisionLog, list[tuple[str, str]]]:
    log = DecisionLog(Path(tmp_path_factory.mktemp("pages")))
    expected = _fill(log)
    yield log, expected
    log.close()


def _plan(log: DecisionLog, wanted: DecisionFilter, cursor: str) -> str:
    sql, params = decision_page_sql(wanted, cursor)
    raw = log._db.raw
    assert isinstance(raw, sqlite3.Connection)
    rows = raw.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, 50]).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


DEEP = encode_cursor(["2026-12-01T00:00:05.000+00:00", "f" * 32])


@pytest.mark.parametrize(
    ("wanted", "index"),
    [
        (DecisionFilter(), "decisions_page"),
        (DecisionFilter(outcome="allowed"), "decisions_outcome_page"),
        (DecisionFilter(outcome="denied"), "decisions_outcome_page"),
        (DecisionFilter(repository="docker.io/library/r7"), "decisions_repository_page"),
        (DecisionFilter(layer="signature"), "decisions_layer_page"),
    ],
)
@pytest.mark.parametrize("cursor", ["", DEEP])
def test_every_filtered_page_is_one_index_scan_without_a_sort(
    filled: tuple[DecisionLog, list[tuple[str, str]]],
    wanted: DecisionFilter,
    index: str,
    cursor: str,
) -> None:
    plan = _plan(filled[0], wanted, cursor)
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort of the whole table per page
    assert "SCAN decisions" not in plan or "USING INDEX" in plan, plan


def test_walking_every_page_yields_each_decision_once_newest_first(
    filled: tuple[DecisionLog, list[tuple[str, str]]],
) -> None:
    log, expected = filled
    seen: list[tuple[str, str]] = []
    cursor = ""
    pages = 0
    while True:
        page = log.decision_page(DecisionFilter(), cursor, MAX_PAGE)
        seen += [(item["time"], item["decision_id"]) for item in page.items]
        pages += 1
        if not page.next_cursor:
            break
        cursor = page.next_cursor
        if pages == 3:
            # A pull recorded while someone pages is newer: it never shifts the next page.
            log.record(
                {
                    "decision_id": "e" * 32,
                    "time": "2027-01-01T00:00:00.000+00:00",
                    "reference": "x:1",
                    "repository": "x",
                    "decision": "ALLOW",
                    "policy_version": "p1",
                }
            )
    assert pages == ROWS // MAX_PAGE
    assert seen == expected  # no gap, no duplicate, in order
    log._db.execute("DELETE FROM decisions WHERE id=?", ("e" * 32,))
    log._db.commit()


def test_a_filtered_walk_is_complete_too(
    filled: tuple[DecisionLog, list[tuple[str, str]]],
) -> None:
    log, _ = filled
    ids: list[str] = []
    cursor = ""
    wanted = DecisionFilter.parse({"layer": "signature", "since": "2026-12-01T00:00:01Z"})
    while True:
        page = log.decision_page(wanted, cursor, 333)
        ids += [item["decision_id"] for item in page.items]
        assert all(item["denied_by"] == "signature" for item in page.items)
        assert all(item["outcome"] == "denied" for item in page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert len(ids) == len(set(ids)) == (ROWS - 10_000) // 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"outcome": "maybe"}, "outcome 'maybe' is not one of allowed, denied, outage"),
        ({"since": "yesterday"}, "since 'yesterday' is not an ISO 8601 time"),
        ({"repository": "x" * 301}, "repository is 301 characters"),
    ],
)
def test_a_bad_filter_is_named(query: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        DecisionFilter.parse(query)


def test_cursors_and_limits_are_checked(filled: tuple[DecisionLog, list[tuple[str, str]]]) -> None:
    for bad in ("not-a-cursor", encode_cursor(["only one"]), "x" * 400):
        with pytest.raises(InvalidRequest, match="cursor"):
            filled[0].decision_page(DecisionFilter(), bad, 10)
    for bad_limit in ("0", "501", "-1", "ten"):
        with pytest.raises(InvalidRequest, match="limit wants 1 to 500"):
            page_limit(bad_limit)
    assert page_limit(None) == 50


def test_a_time_filter_is_compared_as_recorded() -> None:
    wanted = DecisionFilter.parse({"since": "2026-12-06", "until": "2026-12-06T10:00:00+01:00"})
    assert wanted.since == "2026-12-06T00:00:00.000+00:00"
    assert wanted.until == "2026-12-06T09:00:00.000+00:00"


def test_pages_runs_and_admissions_on_both_engines(
    tmp_path: Path, database: Database | None
) -> None:
    """The same statements on SQLite and PostgreSQL (row values, the v2 indexes)."""
    log = DecisionLog(tmp_path / "state", database)
    try:
        for n in range(60):
            log.record(
                {
                    "decision_id": f"{n:032x}",
                    "time": f"2026-12-06T00:00:{n // 7:02d}.000+00:00",  # ties of seven
                    "reference": f"lab/r{n % 3}:1",
                    "repository": f"lab/r{n % 3}",
                    "decision": "DENY" if n % 2 else "ALLOW",
                    "denied_by": "signature" if n % 2 else "",
                    "policy_version": "p1",
                }
            )
        wanted = DecisionFilter.parse({"outcome": "denied", "repository": "lab/r1"})
        ids, cursor = [], ""
        while True:
            page = log.decision_page(wanted, cursor, 4)
            ids += [item["decision_id"] for item in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        expected = [n for n in range(60) if n % 2 and n % 3 == 1]
        assert ids == [
            f"{n:032x}" for n in sorted(expected, key=lambda n: (n // 7, n), reverse=True)
        ]
        assert log.decision_report(f"{1:032x}")["denied_by"] == "signature"
        assert log.decision_report("../etc") is None

        log.record_reevaluation(
            "b" * 32,
            "2026-12-06T01:00:00.000+00:00",
            "olga",
            True,
            [{"outcome": "revoked", "digest": "sha256:1"}, {"outcome": "current"}],
        )
        (run,) = log.reevaluation_page("", 10).items
        assert run["outcomes"] == {"revoked": 1, "current": 1} and run["operator"] == "olga"
        assert log.reevaluation_run("b" * 32)["images"][0]["digest"] == "sha256:1"

        for n in range(5):
            log.admit_and_record(
                Admission("lab/r0", f"sha256:{n}", "m", n, f"{n:032x}"),
                "p1",
                [],
                [],
                "r0",
                {
                    "decision_id": f"{n:032x}",
                    "time": "t",
                    "reference": "x",
                    "repository": "lab/r0",
                    "decision": "ALLOW",
                    "policy_version": "p1",
                },
            )
        first = log.admitted_page("", 3)
        rest = log.admitted_page(first.next_cursor, 3)
        digests = [i["digest"] for i in first.items + rest.items]
        assert digests == [f"sha256:{n}" for n in range(5)] and not rest.next_cursor
    finally:
        log.close()
