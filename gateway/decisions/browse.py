"""Reading the records page by page, for the console and its JSON API.

Pages are cut by keyset, never by offset: a page asks for the rows strictly
older than the last row of the page before, ``(time, id) < (t, i)``, newest
first. Each filter has an index whose columns end in ``(time, id)``
(schema version 2), so a page costs one index range scan however deep it
lies, and a row recorded while someone pages never shifts the next page
(no duplicate, no gap). The cursor is that ``(time, id)`` pair, opaque to
callers (:func:`encode_cursor`).

Re-evaluation runs are recorded here too (``reevaluation_runs``): who ran
one, when, and what it did with each image.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pullguard.gateway.decisions.database import Tables
from pullguard.services.runtime.errors import InvalidRequest

#: Rows a page holds unless asked, and at most.
DEFAULT_PAGE = 50
MAX_PAGE = 500
#: What a caller may filter on; outcome as the report's ``outcome`` field.
OUTCOMES = ("allowed", "denied", "outage")
MAX_FILTER = 300
MAX_CURSOR = 300
#: A decision id, or a replica's (``replica/id``); anything else is not looked up.
DECISION_ID = re.compile(r"(?:[A-Za-z0-9_.-]{1,64}/)?[0-9a-f]{32}")
#: The list columns: a page never reads the (large) report column.
SUMMARY = ("id", "time", "reference", "repository", "digest", "decision", "denied_by", "reason")
SUMMARY_SQL = "id, time, reference, repository, digest, decision, denied_by, reason, outage"


@dataclass(frozen=True)
class DecisionFilter:
    """What a decisions page shows: every field empty means everything."""

    outcome: str = ""
    repository: str = ""
    layer: str = ""
    #: ISO 8601 times, compared as recorded (UTC, ``+00:00``): since inclusive, until exclusive.
    since: str = ""
    until: str = ""

    @classmethod
    def parse(cls, query: dict[str, str]) -> DecisionFilter:
        """The filter a query string asks for; InvalidRequest names a bad field."""
        values = {}
        for name in ("outcome", "repository", "layer", "since", "until"):
            value = query.get(name, "").strip()
            if len(value) > MAX_FILTER:
                raise InvalidRequest(f"{name} is {len(value)} characters; at most {MAX_FILTER}")
            values[name] = value
        if values["outcome"] and values["outcome"] not in OUTCOMES:
            raise InvalidRequest(
                f"outcome {values['outcome'][:40]!r} is not one of {', '.join(OUTCOMES)}"
            )
        for name in ("since", "until"):
            if values[name]:
                values[name] = _utc(name, values[name])
        return cls(**values)

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.outcome == "allowed":
            clauses.append("decision = 'ALLOW'")
        elif self.outcome == "denied":
            clauses.append("decision = 'DENY' AND outage = ''")
        elif self.outcome == "outage":
            clauses.append("decision = 'DENY' AND outage != ''")
        if self.repository:
            clauses.append("repository = ?")
            params.append(self.repository)
        if self.layer:
            clauses.append("denied_by = ?")
            params.append(self.layer)
        if self.since:
            clauses.append("time >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("time < ?")
            params.append(self.until)
        return clauses, params

    def as_query(self) -> dict[str, str]:
        """The non-empty fields, for links to the next page."""
        fields = ("outcome", "repository", "layer", "since", "until")
        return {name: getattr(self, name) for name in fields if getattr(self, name)}


def _utc(name: str, text: str) -> str:
    """An ISO 8601 time as the records spell it (UTC, milliseconds); a date means its midnight."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{name} {text[:40]!r} is not an ISO 8601 time (e.g. 2026-12-06T08:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def encode_cursor(key: Sequence[str]) -> str:
    """An opaque cursor for the row ``key`` (its time and id, or other sort columns)."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[str]:
    """The key a cursor of :func:`encode_cursor` holds; InvalidRequest when it is not one."""
    if len(cursor) > MAX_CURSOR:
        raise InvalidRequest(f"cursor is {len(cursor)} characters; at most {MAX_CURSOR}")
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not isinstance(key, list) or len(key) != width or not all(isinstance(k, str) for k in key):
        raise InvalidRequest("cursor is not one this server gave (ask for the first page again)")
    return key


def page_limit(text: str | None) -> int:
    """The ``limit`` a caller asked for, 1 to :data:`MAX_PAGE`."""
    if text is None or text == "":
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidRequest(f"limit wants 1 to {MAX_PAGE}, got {text[:20]!r}")
    return int(text)


@dataclass(frozen=True)
class Page:
    """One page of rows, and the cursor of the next ("" on the last page)."""

    items: list[dict[str, Any]]
    next_cursor: str


def decision_page_sql(wanted: DecisionFilter, cursor: str) -> tuple[str, list[Any]]:
    """The statement of one page (its last parameter, the row count, is the caller's)."""
    clauses, params = wanted.where()
    if cursor:
        time, decision_id = decode_cursor(cursor, 2)
        clauses.append("(time < ? OR (time = ? AND id < ?))")
        params += [time, time, decision_id]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    # Clauses are this module's constants; every value is a parameter.
    sql = (
        f"SELECT {SUMMARY_SQL} FROM decisions{where}"  # noqa: S608
        " ORDER BY time DESC, id DESC LIMIT ?"
    )
    return sql, params


def _summary(row: Sequence[Any]) -> dict[str, Any]:
    item = dict(zip(SUMMARY, (str(v) for v in row[: len(SUMMARY)]), strict=True))
    item["decision_id"] = item.pop("id")
    outage = str(row[len(SUMMARY)])
    item["outcome"] = "outage" if outage else "allowed" if item["decision"] == "ALLOW" else "denied"
    item["outage_layer"] = outage
    return item


class BrowseRecords(Tables):
    """Pages of decisions, admissions and re-evaluation runs; one decision's report."""

    def decision_page(self, wanted: DecisionFilter, cursor: str, limit: int) -> Page:
        """Decisions matching ``wanted``, newest first, after ``cursor`` ("" for the first)."""
        sql, params = decision_page_sql(wanted, cursor)
        with self._lock:
            rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        items = [_summary(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = items[-1] if items else None
        next_cursor = encode_cursor([last["time"], last["decision_id"]]) if more and last else ""
        return Page(items, next_cursor)

    def decision_report(self, decision_id: str) -> dict[str, Any] | None:
        """One decision's full report, or None when there is no such decision."""
        if not DECISION_ID.fullmatch(decision_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM decisions WHERE id=?", (decision_id,)
            ).fetchone()
        if row is None:
            return None
        report: dict[str, Any] = json.loads(row[0])
        return report

    def admitted_page(self, cursor: str, limit: int) -> Page:
        """Admitted images (one row per repository, digest and policy), by repository and digest."""
        params: list[Any] = []
        where = ""
        if cursor:
            repository, digest, policy = decode_cursor(cursor, 3)
            where = " WHERE (a.repository, a.digest, a.policy_version) > (?, ?, ?)"
            params = [repository, digest, policy]
        sql = (
            "SELECT a.repository, a.digest, a.policy_version, a.media_type, a.size,"  # noqa: S608
            " a.decision_id, COALESCE(d.time, '') FROM admitted a"
            f" LEFT JOIN decisions d ON d.id = a.decision_id{where}"
            " ORDER BY a.repository, a.digest, a.policy_version LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        names = ("repository", "digest", "policy_version", "media_type", "size", "decision_id")
        items = [
            {**dict(zip(names, row[:6], strict=True)), "size": int(row[4]), "time": str(row[6])}
            for row in rows[:limit]
        ]
        last = items[-1] if items else None
        next_cursor = (
            encode_cursor([last["repository"], last["digest"], last["policy_version"]])
            if len(rows) > limit and last
            else ""
        )
        return Page(items, next_cursor)

    def record_reevaluation(
        self, run_id: str, time: str, operator: str, force: bool, images: list[dict[str, Any]]
    ) -> None:
        """Keep what one re-evaluation run did, for the console."""
        with self._lock:
            self._db.execute(
                "INSERT INTO reevaluation_runs (id, time, operator, force, images)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, time, operator, int(force), json.dumps(images, sort_keys=True)),
            )
            self._db.commit()

    def reevaluation_page(self, cursor: str, limit: int) -> Page:
        """Re-evaluation runs, newest first, each with how many images had each outcome."""
        params: list[Any] = []
        where = ""
        if cursor:
            time, run_id = decode_cursor(cursor, 2)
            where = " WHERE (time < ? OR (time = ? AND id < ?))"
            params = [time, time, run_id]
        sql = (
            f"SELECT id, time, operator, force, images FROM reevaluation_runs{where}"  # noqa: S608
            " ORDER BY time DESC, id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        items = [_run(row, with_images=False) for row in rows[:limit]]
        last = items[-1] if items else None
        more = len(rows) > limit and last
        return Page(items, encode_cursor([last["time"], last["run_id"]]) if more and last else "")

    def reevaluation_run(self, run_id: str) -> dict[str, Any] | None:
        """One re-evaluation run with every image's outcome, or None."""
        if not re.fullmatch(r"[0-9a-f]{32}", run_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, time, operator, force, images FROM reevaluation_runs WHERE id=?",
                (run_id,),
            ).fetchone()
        return _run(row, with_images=True) if row else None


def _run(row: Sequence[Any], *, with_images: bool) -> dict[str, Any]:
    images: list[dict[str, Any]] = json.loads(row[4])
    counts: dict[str, int] = {}
    for image in images:
        counts[str(image.get("outcome"))] = counts.get(str(image.get("outcome")), 0) + 1
    run: dict[str, Any] = {
        "run_id": str(row[0]),
        "time": str(row[1]),
        "operator": str(row[2]),
        "force": bool(row[3]),
        "outcomes": counts,
    }
    if with_images:
        run["images"] = images
    return run
