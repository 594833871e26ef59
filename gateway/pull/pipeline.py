"""The pipeline: entry points for pulls, releases and re-evaluations, and :meth:`Pipeline.run`.

:meth:`Pipeline.run` reads as the seven steps of one pull (see the package
docstring); each step is a function of its own module, given the one
:class:`~pullguard.gateway.pull.one.Pull` that holds the pull's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from opentelemetry.trace import SpanKind

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.observe import PullObserver, pull_kind
from pullguard.gateway.publish import Publisher
from pullguard.gateway.pull import manifest
from pullguard.gateway.pull.admission import Admissions
from pullguard.gateway.pull.blobs import StagedBlobs, stage_and_judge_blobs
from pullguard.gateway.pull.manifest import JudgedManifest
from pullguard.gateway.pull.one import LayerClients, Pull, PullResult, StepRefused
from pullguard.gateway.pull.reevaluate import Reevaluated, reevaluate
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
    PullguardError,
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
            "fetcher", "ListTags", fetcher_pb2.ListTagsRequest(plan=plan, n=0, last=last)
        )
        return list(listed.tags)

    # -- one pull ---------------------------------------------------------------

    async def run(self, pull: Pull) -> PullResult:
        """The seven steps of one pull; a step that refuses raises StepRefused."""
        report = pull.report
        # 1. analysis makes a plan, or refuses before any upstream traffic.
        if not await manifest.plan(pull):
            return self._refused_by_plan(pull)
        plan = pull.plan
        # 3 (by digest). A digest names immutable content: what this policy
        # admitted is served without asking upstream, so it serves in an outage.
        if pull.admit and plan.ref.digest and not pull.forced:
            data = await self.store.serve_cached(pull, plan.ref.digest)
            if data is not None:
                return self._allow(pull, data)
        # 2. fetcher stages the manifest (a tag is resolved exactly once).
        try:
            staged = await manifest.stage_manifest(pull)
        except UpstreamUnreachable as exc:
            data = await self.store.serve_offline_tag(pull, exc) if pull.admit else None
            if data is None:
                raise
            return self._allow(pull, data)
        # Tags that resolve to one digest are verified once: the second pull
        # waits for the first and then finds the admission.
        async with self._digest_lock(report.repository, staged.local_digest):
            # 3. served from the admitted store when this policy admitted it
            # (`check` always runs every layer).
            if pull.admit and not pull.forced:
                data = await self.store.serve_cached(pull, staged.local_digest)
                if data is not None:
                    return self._allow(pull, data)
            report.waivers = manifest.waivers(pull, staged.local_digest)
            # 4. format, hashverify, signature, source (and the index unit).
            judged = await manifest.judge_manifest(pull, staged)
            # 5. fetcher stages the blobs; hashverify, source and format judge them.
            blobs = await stage_and_judge_blobs(pull, judged)
            # 6 and 7. admitted (pushed to the target first), or only reported.
            return await self._allow_verified(pull, judged, blobs)

    def _allow(self, pull: Pull, data: bytes) -> PullResult:
        """Serve what this policy admitted earlier."""
        report = pull.report
        report.decision = "ALLOW"
        report.cached = True
        report.admitted = True
        self.store.record(report)
        return PullResult(report, manifest=data)

    async def _allow_verified(
        self, pull: Pull, judged: JudgedManifest, blobs: StagedBlobs
    ) -> PullResult:
        """Every step allowed: admit (recording in the admission's transaction) or report."""
        report = pull.report
        report.decision = "ALLOW"
        if pull.admit:
            await self.store.admit(pull, judged, blobs)
        else:
            self.store.discard(pull)
            self.store.record(report)
        return PullResult(report, manifest=judged.staged.data)

    def _refused_by_plan(self, pull: Pull) -> PullResult:
        """Refused before any upstream traffic: nothing to quarantine.

        A refusal for the request's syntax is counted, not recorded one by one (disk).
        """
        pull.report.decision = "DENY"
        code = manifest.syntax_refusal(pull)
        if code is not None:
            self.syntax_refusals.count(code)
        else:
            self.store.record(pull.report)
        return PullResult(pull.report)

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
                result = await self._guarded(pull)
            except BaseException:
                watch.abandoned()
                raise
            # The decision is final here, whichever way it went (see observe.py).
            watch.finished(report, span)
            return result

    async def _guarded(self, pull: Pull) -> PullResult:
        """Fail closed: a refusal or anything unforeseen denies; an outage is only an outage."""
        report = pull.report
        try:
            return await self.run(pull)
        except StepRefused:
            pass
        except OUTAGES as exc:
            return self._outage(pull, exc)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unforeseen
            log.exception("pull %s failed inside the gateway", report.decision_id)
            report.add_error(
                "gateway", StepName.INTERNAL, f"gateway: internal error ({type(exc).__name__})", 0.0
            )
        report.decision = "DENY"
        report.admitted = False
        self.store.quarantine_or_discard(pull)
        self.store.record(report)
        return PullResult(report)

    def _outage(self, pull: Pull, exc: PullguardError) -> PullResult:
        """No verdict was reached: a layer, the upstream or the target failed.

        Recorded as an outage, not a verdict: nothing is admitted, quarantined
        or cached, and the client is told to retry (the error's own status).
        """
        layer = getattr(exc, "layer", "") or (
            "target" if isinstance(exc, TargetError) else "fetcher"
        )
        pull.report.set_outage(layer, exc.outage or "error", exc.message)
        self.store.discard(pull)
        self.store.record(pull.report)
        return PullResult(pull.report, error=exc)

    @contextlib.asynccontextmanager
    async def _digest_lock(self, repository: str, digest: str) -> AsyncIterator[None]:
        key = (repository, digest)
        lock, users = self._digest_locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
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
