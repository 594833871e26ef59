"""Requests refused by syntax before any policy question, and how the front door answers them.

A malformed name, tag or digest is refused by analysis before anything is
fetched, and it stays refused. But it is not a verdict about an image: it is
answered with the distribution spec's status (the OCI conformance suite is the
arbiter: a tag that cannot exist is 404 ``MANIFEST_UNKNOWN``, a malformed
digest 400 ``DIGEST_INVALID``, a malformed name 400 ``NAME_INVALID``), and it
is counted rather than recorded one by one, so anonymous garbage cannot fill
the decision database and the audit log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger("pullguard.gateway")

#: analysis finding code -> (HTTP status, OCI error code).
SYNTAX_STATUS: dict[str, tuple[int, str]] = {
    "analysis.invalid_name": (400, "NAME_INVALID"),
    "analysis.invalid_reference": (404, "MANIFEST_UNKNOWN"),
    "analysis.invalid_digest": (400, "DIGEST_INVALID"),
    "analysis.unsupported_digest_algorithm": (400, "DIGEST_INVALID"),
}

#: Seconds between two log lines that report the counts.
REPORT_INTERVAL = 60.0


def syntax_status(codes: Iterable[str]) -> tuple[int, str] | None:
    """The status for a refusal whose blocking findings are all syntax findings, else None."""
    statuses = [SYNTAX_STATUS.get(code) for code in codes]
    if not statuses or any(status is None for status in statuses):
        return None
    return statuses[0]


class SyntaxRefusals:
    """Counts refusals by finding code; logs the counts at most every ``interval`` seconds."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self.interval = interval
        self.total: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_report = time.monotonic()

    def count(self, code: str) -> None:
        with self._lock:
            self.total[code] += 1
            self._pending[code] += 1
            now = time.monotonic()
            if now - self._last_report < self.interval:
                return
            pending, self._pending = self._pending, Counter()
            self._last_report = now
        log.warning(
            "refused by syntax since the last report (not recorded one by one): %s",
            ", ".join(f"{code} {n}" for code, n in sorted(pending.items())),
        )
