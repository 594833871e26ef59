"""Re-evaluation (O-07): every admitted image verified again under the current policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pullguard.gateway.pull.admission import Admissions
from pullguard.gateway.pull.one import PullResult
from pullguard.gateway.release import ReevaluationOptions

#: Refusals of how a re-evaluation asks (by digest), not of the image: they
#: cannot revoke an image that rules admit by tag.
REQUEST_SHAPE_CODES = frozenset({"analysis.digest_pull_denied"})

#: Runs one pull of (repository, digest) as a re-evaluation.
Reverify = Callable[[str, str, ReevaluationOptions], Awaitable[PullResult]]


@dataclass
class Reevaluated:
    """What a re-evaluation did with one image (the gateway proto's ReevaluatedImage)."""

    repository: str
    digest: str
    #: "current", "readmitted", "revoked" or "undecided".
    outcome: str
    policy_version: str
    decision_id: str = ""
    previous_decision: str = ""
    previous_policy: str = ""
    denied_by: str = ""
    reason: str = ""
    #: For a revoked image and a registry target: "withdrawn: ..." or "failed: ...".
    target: str = ""


async def reevaluate(
    store: Admissions, reverify: Reverify, policy_version: str, *, force: bool, limit: int
) -> list[Reevaluated]:
    """Verify every admitted image again under the current policy.

    An image still admitted under this policy is left alone unless
    ``force``. One that now passes is admitted under this policy. One that
    a layer now refuses with findings is revoked: no longer served, its
    names dropped from the admitted layout, its content quarantined with
    the new report, which names the admission it replaces. A run that
    could not decide (upstream down, a layer failing) revokes nothing.
    Images are verified one at a time, to spare the upstreams.
    """
    outcomes: list[Reevaluated] = []
    for admission, previous_policy in store.decisions.admissions(limit):
        options = ReevaluationOptions(admission.decision_id, previous_policy, force)
        result = await reverify(admission.repository, admission.digest, options)
        report = result.report
        seen = Reevaluated(
            admission.repository,
            admission.digest,
            "revoked",
            report.policy_version,
            decision_id=report.decision_id,
            previous_decision=admission.decision_id,
            previous_policy=previous_policy,
            denied_by=report.denied_by,
            reason=report.reason,
        )
        if result.allowed:
            seen.outcome = "current" if report.cached else "readmitted"
        elif (
            report.transient
            or any(step.error for step in report.steps)
            or {f["code"] for f in report.denial_findings()} & REQUEST_SHAPE_CODES
        ):
            seen.outcome = "undecided"
        else:
            store.revoke(admission.repository, admission.digest, because=report)
            seen.target = await store.withdraw(admission.repository, admission.digest)
        outcomes.append(seen)
    # Revoked earlier, but the target could not be told then: try again.
    if store.publisher is not None:
        for repository, digest in store.decisions.published_without_admission(
            store.publisher.key, limit
        ):
            outcomes.append(
                Reevaluated(
                    repository,
                    digest,
                    "revoked",
                    policy_version,
                    reason="revoked earlier; still in the target",
                    target=await store.withdraw(repository, digest),
                )
            )
    return outcomes
