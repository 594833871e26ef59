"""The pipeline: entry points for pulls, releases and re-evaluations, and :meth:`Pipeline.run`.

:meth:`Pipeline.run` reads as the seven steps of one pull (see the package
docstring); each step is a function of its own module, given the one
:class:`~pullguard.gateway.pull.one.Pull` that holds the pull's state. It
returns how the pull ended (:mod:`.outcome`); :meth:`Pipeline._conclude`
alone sets the verdict and records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import assert_never

from opentelemetry.trace import SpanKind

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.observe import PullObserver, pull_kind
from pullguard.gateway.publish import Publisher
from pullguard.gateway.pull import manifest
from pullguard.gateway.pull.admission import Admissions
from pullguard.gateway.pull.blobs import stage_and_judge_blobs
from pullguard.gateway.pull.one import LayerClients, Pull, PullResult, StepRefused
from pullguard.gateway.pull.outcome import (
    Outage,
    Outcome,
    Refused,
    RefusedByPlan,
    Served,
    Verified,
)
from pullguard.gateway.pull.reevaluate import Reevaluated, reevaluate
from pullguard.gateway.pull.vulnerabilities import judge_vulnerabilities, rejudge_recorded
from pullguard.gateway.release import ReevaluationOptions, ReleaseOptions, ReleasePlan
from pullguard.gateway.report import Report
from pullguard.gateway.steps import StepName
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.gateway.syntax import SyntaxRefusals, syntax_status
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import (
    Denied,
    InvalidRequest,
    LayerUnavailable,
    NotFound,
    StagingFull,
    TargetError,
    UpstreamError,
    UpstreamUnreachable,
)
from pullguard.services.runtime.protoconv import verdict_allows
from pullguard.services.runtime.staging import StagingStore
from pullguard.services.runtime.telemetry import tracer
from pullguard.v1 import analysis_pb2, common_pb2, fetcher_pb2

log = logging.getLogger("pullguard.gateway")

#: Failures that mean no verdict was reached: recorded as an outage, retryable.
OUTAGES = (LayerUnavailable, UpstreamError, NotFound, TargetError, StagingFull)


class Pipeline:
    def __init__(
        self,
        config: Config,
        clients: LayerClients,
        decisions: DecisionLog,
        admitted: AdmittedStore,
        quarantine: Quarantine,
        staging: StagingStore,
        publisher: Publisher | None = None,
        observer: PullObserver | None = None,
    ) -> None:
        self.config = config
        self.clients = clients
        self.store = Admissions(config, decisions, admitted, quarantine, staging, publisher)
        self.decisions = decisions
        self.admitted = admitted
        self.quarantine = quarantine
        self.staging = staging
        self.publisher = publisher
        self.observer = observer if observer is not None else PullObserver()
        self.syntax_refusals = SyntaxRefusals()
        self._tracer = tracer("gateway")
        self._inflight: dict[tuple[str, str, bool], asyncio.Task[PullResult]] = {}
        self._digest_locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    # -- entry points ---------------------------------------------------------

    async def pull(self, name: str, reference: str, *, admit: bool = True) -> PullResult:
        """Run (or join) the pipeline for ``name`` at ``reference``.

        Concurrent pulls of the same reference share one run, so a stampede
        costs the upstream one fetch.
        """
        key = (name, reference, admit)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._traced(name, reference, admit))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def release(self, plan: ReleasePlan, reason: str, operator: str) -> PullResult:
        """Verify a quarantined image again with its reviewed findings waived; admit if it passes.

        Not shared with concurrent pulls: a release's waivers apply to this run
        (and, once it passes, to the digest) only.
        """
        options = ReleaseOptions(plan.quarantine_id, plan.digest, plan.waivers, reason, operator)
        return await self._traced(plan.client_name, plan.digest, True, release=options)

    async def reevaluate(self, *, force: bool, limit: int) -> list[Reevaluated]:
        """Verify every admitted image again under the current policy (O-07)."""

        async def reverify(
            repository: str, digest: str, options: ReevaluationOptions
        ) -> PullResult:
            return await self._traced(repository, digest, True, reevaluation=options)

        return await reevaluate(
            self.store, reverify, self.config.policy_version, force=force, limit=limit
        )

    async def repository_of(self, name: str) -> str | None:
        """``<alias>/<repository>`` for a client's name as a manifest pull reads it, or None."""
        try:
            plan = await self._repository_plan(name)
        except (InvalidRequest, Denied):
            return None
        return f"{plan.ref.upstream_alias}/{plan.ref.repository}"

    async def list_tags(self, name: str, last: str) -> list[str]:
        """Every tag upstream after ``last`` (all pages, bounded by the fetcher), once
        analysis allowed the repository itself."""
        plan = await self._repository_plan(name)
        listed = await self.clients.call(
            "fetcher", "ListTags", fetcher_pb2.ListTagsRequest(plan=plan, last=last)
        )
        return list(listed.tags)

    # -- one pull ---------------------------------------------------------------

    async def run(self, pull: Pull) -> Outcome:
        """The seven steps of one pull; a step that refuses raises StepRefused.

        It says only how the pull ended: :meth:`_conclude` sets and records the verdict.
        """
        report = pull.report
        # 1. analysis makes a plan, or refuses before any upstream traffic.
        if not await manifest.plan(pull):
            return RefusedByPlan()
        plan = pull.plan
        # 1b. A re-evaluation judges the recorded inventory against today's
        # advisories first (a CVE published since admission revokes).
        await rejudge_recorded(pull)
        # 3 (by digest). A digest names immutable content: what this policy
        # admitted is served without asking upstream, so it serves in an outage.
        if pull.admit and plan.ref.digest and not pull.forced:
            data = await self.store.serve_cached(pull, plan.ref.digest)
            if data is not None:
                return Served(data)
        # 2. fetcher stages the manifest (a tag is resolved exactly once).
        try:
            staged = await manifest.stage_manifest(pull)
        except UpstreamUnreachable as exc:
            data = await self.store.serve_offline_tag(pull, exc) if pull.admit else None
            if data is None:
                raise
            return Served(data)
        # Tags that resolve to one digest are verified once: the second pull
        # waits for the first and then finds the admission. The lock is held
        # until _decide has recorded the verdict (Pull.held), so the admission
        # it finds is committed, not in the making.
        await pull.held.enter_async_context(
            self._digest_lock(report.repository, staged.local_digest)
        )
        # 3. served from the admitted store when this policy admitted it
        # (`check` always runs every layer).
        if pull.admit and not pull.forced:
            data = await self.store.serve_cached(pull, staged.local_digest)
            if data is not None:
                return Served(data)
        report.waivers = manifest.waivers(pull, staged.local_digest)
        # 4. format, hashverify, signature, source (and the index unit).
        judged = await manifest.judge_manifest(pull, staged)
        # 5. fetcher stages the blobs; hashverify, source and format judge them.
        blobs = await stage_and_judge_blobs(pull, judged)
        # 5b. vulnerability judges what the layers hold (when the rule asks).
        await judge_vulnerabilities(pull, judged.summary, blobs.inventories, judged.sboms)
        # 6 and 7. moved into the admitted store and pushed to the target
        # (committed by _conclude), or only reported.
        admitting = await self.store.admit(pull, judged, blobs) if pull.admit else None
        return Verified(judged.staged.data, admitting)

    def _conclude(self, pull: Pull, outcome: Outcome) -> PullResult:
        """The one place a pull's verdict is set and recorded.

        It runs to its end once per pull (an admission whose commit fails is
        concluded again, as a denial: see :meth:`_decide`), so whatever should
        follow every decision (a metric, a log line, a notification) goes
        after the match. An allowing admission is recorded in the admission's
        own transaction; a refusal for the request's syntax is counted, not
        recorded one by one (disk).
        """
        report = pull.report
        match outcome:
            case Served(data):
                report.decision, report.cached, report.admitted = "ALLOW", True, True
                self.store.record(report)
                result = PullResult(report, manifest=data)
            case Verified(data, admitting):
                report.decision = "ALLOW"
                if admitting is None:
                    self.store.discard(pull)
                    self.store.record(report)
                else:
                    report.admitted = True
                    self.store.commit(pull, admitting)
                result = PullResult(report, manifest=data)
            case RefusedByPlan():
                report.decision = "DENY"
                code = manifest.syntax_refusal(pull)
                if code is not None:
                    self.syntax_refusals.count(code)
                else:
                    self.store.record(report)
                result = PullResult(report)
            case Refused():
                report.decision, report.admitted = "DENY", False
                self.store.quarantine_or_discard(pull)
                self.store.record(report)
                result = PullResult(report)
            case Outage(exc):
                # Not a verdict: nothing admitted, quarantined or cached; the
                # client is told to retry (the error's own status).
                layer = getattr(exc, "layer", "") or (
                    "target" if isinstance(exc, TargetError) else "fetcher"
                )
                report.set_outage(layer, exc.outage or "error", exc.message)
                self.store.discard(pull)
                self.store.record(report)
                result = PullResult(report, error=exc)
            case _:
                assert_never(outcome)
        return result

    async def _traced(
        self,
        name: str,
        reference: str,
        admit: bool,
        release: ReleaseOptions | None = None,
        reevaluation: ReevaluationOptions | None = None,
    ) -> PullResult:
        report = Report(decision_id=uuid.uuid4().hex, client_name=name, reference=reference)
        report.policy_version = self.config.policy_version
        report.release = release
        report.reevaluation = reevaluation
        pull = Pull(
            report,
            admit=admit,
            config=self.config,
            clients=self.clients,
            decisions=self.decisions,
            staging=self.staging,
        )
        with self._tracer.start_as_current_span(
            "pull",
            kind=SpanKind.INTERNAL,
            attributes={
                "pullguard.name": name,
                "pullguard.reference": reference,
                "pullguard.decision_id": report.decision_id,
            },
        ) as span:
            watch = self.observer.pull_started(pull_kind(report, admit))
            try:
                result = await self._decide(pull)
            except BaseException:
                watch.abandoned()
                raise
            # The decision is final here, whichever way it went (see observe.py).
            watch.finished(report, span)
            return result

    async def _decide(self, pull: Pull) -> PullResult:
        """Fail closed: a refusal or anything unforeseen denies; an outage is only an outage."""
        async with pull.held:
            try:
                outcome = await self.run(pull)
            except StepRefused:
                outcome = Refused()
            except OUTAGES as exc:
                outcome = Outage(exc)
            except Exception as exc:  # noqa: BLE001 - fail closed on anything unforeseen
                outcome = self._internal_error(pull, exc)
            try:
                return self._conclude(pull, outcome)
            except Exception as exc:
                if not isinstance(outcome, Verified):
                    raise
                # The admission's commit failed: nothing was admitted.
                return self._conclude(pull, self._internal_error(pull, exc))

    def _internal_error(self, pull: Pull, exc: Exception) -> Refused:
        log.exception("pull %s failed inside the gateway", pull.report.decision_id)
        pull.report.add_error(
            "gateway", StepName.INTERNAL, f"gateway: internal error ({type(exc).__name__})", 0.0
        )
        return Refused()

    @contextlib.asynccontextmanager
    async def _digest_lock(self, repository: str, digest: str) -> AsyncIterator[None]:
        key = (repository, digest)
        lock, users = self._digest_locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            # Then the cross-replica lease: replicas on one database fetch once.
            async with lock, self.decisions.leases.hold(f"{repository}@{digest}"):
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._digest_locks.pop(key, None)

    async def _repository_plan(self, name: str) -> common_pb2.Plan:
        """Analysis's plan for ``name`` alone; a refusal raises (400 for syntax, else 403)."""
        planned = await self.clients.call(
            "analysis",
            "Plan",
            analysis_pb2.PlanRequest(name=name, reference="", repository_only=True),
        )
        if not verdict_allows(planned.verdict):
            report = Report(decision_id="", client_name=name, reference="")
            report.add("analysis", StepName.PLAN, planned.verdict, 0.0)
            status = syntax_status(f["code"] for f in report.denial_findings())
            if status is not None:
                raise InvalidRequest(report.reason, oci_code=status[1])
            raise Denied(f"analysis: {report.reason}")
        plan: common_pb2.Plan = planned.plan
        return plan


Runner = Callable[[str, str], Awaitable[PullResult]]
