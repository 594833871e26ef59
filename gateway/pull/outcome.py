"""How one pull ended, before its verdict is set: what :meth:`Pipeline.run` returns.

The steps only say how the pull ended; :meth:`Pipeline._conclude
<pullguard.gateway.pull.pipeline.Pipeline._conclude>` alone turns an outcome
into the report's verdict and records it, so whatever follows every decision
(a metric, a log line, a notification) has one place to go.
"""

from __future__ import annotations

from dataclasses import dataclass

from pullguard.gateway.pull.admission import Admitting
from pullguard.services.runtime.errors import PullguardError


@dataclass(frozen=True)
class Served:
    """Step 3: admitted earlier under this policy, served from the admitted store."""

    manifest: bytes


@dataclass(frozen=True)
class Verified:
    """Every step allowed. ``admitting`` is the admission waiting for its commit
    (steps 6 and 7 ran); None when the pull only reports (``check``)."""

    manifest: bytes
    admitting: Admitting | None


@dataclass(frozen=True)
class RefusedByPlan:
    """Step 1 refused before any upstream traffic: nothing staged, nothing to quarantine."""


@dataclass(frozen=True)
class Refused:
    """A step refused, or the gateway failed inside (fail closed); the report says which."""


@dataclass(frozen=True)
class Outage:
    """No verdict was reached: a layer, the upstream or the target failed."""

    error: PullguardError


Outcome = Served | Verified | RefusedByPlan | Refused | Outage
