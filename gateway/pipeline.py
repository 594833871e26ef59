"""One pull through the six layers.

Order matters for cost and for safety:

1. analysis makes a plan, or refuses before any upstream traffic;
2. fetcher stages the manifest (a tag is resolved exactly once);
3. a manifest already admitted under this policy is served without
   verifying again;
4. format and hashverify judge the manifest bytes; then source and
   signature, which need format's parse and hashverify's digest. All of this
   happens before any blob is downloaded, so a bad image costs no layer traffic;
5. fetcher stages the blobs; hashverify and format re-read them;
6. only when every step allowed, and the digests the fetcher streamed equal
   the descriptors, are the staged objects hashed again and moved into the
   admitted store, manifest last; the admission and its decision row then
   commit in one transaction, and index.json comes last. A refusal whose
   every step ran sends the staging session to quarantine with its report;
   a pull that could not finish (layer error, full disk) is discarded;
7. with a registry target, the admitted content is pushed there (blobs,
   then the manifest) before the admission is recorded: a pull whose push
   failed is a retryable error (503), never served as published.

Any exception, timeout or missing service ends in a refusal (fail closed).
Outages — a layer down, hung, crashing or not serving, an upstream down or
without the content, a target that refused — are reported as such
(retryable), never as a verdict: never cached, never quarantined.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from pullguard.gateway import failpoints
from pullguard.gateway.clients import LayerClients, LayerFailure
from pullguard.gateway.decisions import Admission, DecisionLog
from pullguard.gateway.discovery import Discovery, Found
from pullguard.gateway.indexcheck import IndexUnit
from pullguard.gateway.publish import Publisher
from pullguard.gateway.release import ReleasePlan
from pullguard.gateway.report import Report
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
from pullguard.v1 import (
    analysis_pb2,
    common_pb2,
    fetcher_pb2,
    format_pb2,
    hashverify_pb2,
    signature_pb2,
    source_pb2,
)

log = logging.getLogger("pullguard.gateway")

#: Levels of index above an index that is still admitted (THREATS F-12: depth 2
#: must work, beyond 4 is refused).
MAX_INDEX_DEPTH = 4

#: Refusals of how a re-evaluation asks (by digest), not of the image: they
#: cannot revoke an image that rules admit by tag.
_REQUEST_SHAPE_CODES = frozenset({"analysis.digest_pull_denied"})


@dataclass
class PullResult:
    """The outcome of one pull. ``manifest`` is set only when allowed."""

    report: Report
    manifest: bytes | None = None
    error: PullguardError | None = None

    @property
    def allowed(self) -> bool:
        return self.report.decision == "ALLOW" and self.error is None


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


class _Denied(Exception):
    """Internal control flow: a step refused; the report says which."""


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
    ) -> None:
        self.config = config
        #: Pushes admitted images to the target registry; None for an embedded target.
        self.publisher = publisher
        self.clients = clients
        self.decisions = decisions
        self.admitted = admitted
        self.quarantine = quarantine
        self.staging = staging
        self._tracer = tracer("gateway")
        self._inflight: dict[tuple[str, str, bool], asyncio.Task[PullResult]] = {}
        self._digest_locks: dict[tuple[str, str], list[Any]] = {}
        self.syntax_refusals = SyntaxRefusals()

    async def pull(self, name: str, reference: str, *, admit: bool = True) -> PullResult:
        """Run (or join) the pipeline for ``name`` at ``reference``.

        Concurrent pulls of the same reference share one run, so a stampede
        costs the upstream one fetch.
        """
        key = (name, reference, admit)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._run(name, reference, admit))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def release(self, plan: ReleasePlan, reason: str, operator: str) -> PullResult:
        """Verify a quarantined image again with its reviewed findings waived; admit if it passes.

        Not shared with concurrent pulls: a release's waivers apply to this run
        (and, once it passes, to the digest) only.
        """
        return await self._run(
            plan.client_name,
            plan.digest,
            admit=True,
            release={
                "quarantine_id": plan.quarantine_id,
                "digest": plan.digest,
                "waivers": sorted(plan.waivers),
                "reason": reason,
                "operator": operator,
            },
        )

    async def reevaluate(self, *, force: bool, limit: int) -> list[Reevaluated]:
        """Verify every admitted image again under the current policy (O-07).

        An image still admitted under this policy is left alone unless
        ``force``. One that now passes is admitted under this policy. One that
        a layer now refuses with findings is revoked: no longer served, its
        names dropped from the admitted layout, its content quarantined with
        the new report, which names the admission it replaces. A run that
        could not decide (upstream down, a layer failing) revokes nothing.
        Images are verified one at a time, to spare the upstreams.
        """
        outcomes: list[Reevaluated] = []
        for admission, policy_version in self.decisions.admissions(limit):
            result = await self._run(
                admission.repository,
                admission.digest,
                admit=True,
                reevaluation={
                    "previous_decision": admission.decision_id,
                    "previous_policy": policy_version,
                    "force": force,
                },
            )
            report = result.report
            seen = Reevaluated(
                admission.repository,
                admission.digest,
                "revoked",
                report.policy_version,
                decision_id=report.decision_id,
                previous_decision=admission.decision_id,
                previous_policy=policy_version,
                denied_by=report.denied_by,
                reason=report.reason,
            )
            if result.allowed:
                seen.outcome = "current" if report.cached else "readmitted"
            elif (
                report.transient
                or any(step.error for step in report.steps)
                or {f["code"] for f in report.denial_findings()} & _REQUEST_SHAPE_CODES
            ):
                seen.outcome = "undecided"
            else:
                self.decisions.revoke(admission.repository, admission.digest)
                self.admitted.remove_references(admission.repository, admission.digest)
                seen.target = await self._withdraw(admission.repository, admission.digest)
            outcomes.append(seen)
        # Revoked earlier, but the target could not be told then: try again.
        if self.publisher is not None:
            for repository, digest in self.decisions.published_without_admission(
                self.publisher.key, limit
            ):
                outcomes.append(
                    Reevaluated(
                        repository,
                        digest,
                        "revoked",
                        self.config.policy_version,
                        reason="revoked earlier; still in the target",
                        target=await self._withdraw(repository, digest),
                    )
                )
        return outcomes

    async def _withdraw(self, repository: str, digest: str) -> str:
        """Take a revoked image out of the registry target; say what happened."""
        if self.publisher is None:
            return ""
        try:
            references = await self.publisher.withdraw(repository, digest)
        except TargetError as exc:
            log.error("revoked %s@%s is still in the target: %s", repository, digest, exc.message)
            return f"failed: {exc.message}"
        return f"withdrawn: {', '.join(references)}" if references else ""

    async def _run(
        self,
        name: str,
        reference: str,
        admit: bool,
        release: dict[str, Any] | None = None,
        reevaluation: dict[str, Any] | None = None,
    ) -> PullResult:
        report = Report(decision_id=uuid.uuid4().hex, client_name=name, reference=reference)
        report.policy_version = self.config.policy_version
        report.release = release
        report.reevaluation = reevaluation
        with self._tracer.start_as_current_span(
            "pull",
            kind=SpanKind.INTERNAL,
            attributes={
                "pullguard.name": name,
                "pullguard.reference": reference,
                "pullguard.decision_id": report.decision_id,
            },
        ) as span:
            result = await self._guarded(report, admit)
            span.set_attribute("pullguard.decision", report.decision)
            if report.denied_by:
                span.set_attribute("pullguard.denied_by", report.denied_by)
            return result

    async def _guarded(self, report: Report, admit: bool) -> PullResult:
        fetched = False
        try:
            return await self._evaluate(report, admit)
        except _Denied:
            fetched = True
            result = PullResult(report)
        except (LayerUnavailable, UpstreamError, NotFound, TargetError, StagingFull) as exc:
            return self._outage(report, exc)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unforeseen
            log.exception("pull %s failed inside the gateway", report.decision_id)
            fetched = True
            report.add_error(
                "gateway", "internal", f"gateway: internal error ({type(exc).__name__})", 0.0
            )
            result = PullResult(report)
        report.decision = "DENY"
        report.admitted = False
        if self._quarantines(report, admit, fetched):
            self.quarantine.put(self.staging, report.decision_id, report.as_json())
            self.decisions.quarantined(
                report.decision_id, report.time, report.reference_text, report.digest, report.reason
            )
        else:
            self.staging.discard(report.decision_id)
        self._record(report)
        return result

    def _quarantines(self, report: Report, admit: bool, fetched: bool) -> bool:
        """Whether a refused pull's staged content goes to quarantine.

        A quarantine entry is a verdict: only a refusal every step of which
        ran (no layer error, no internal error, no full disk) keeps its bytes.
        Partial content of a pull that could not finish is discarded.
        """
        return (
            admit
            and fetched
            and not any(step.error for step in report.steps)
            and self.staging.session_dir(report.decision_id).exists()
        )

    def _outage(self, report: Report, exc: PullguardError) -> PullResult:
        """No verdict was reached: a layer, the upstream or the target failed.

        Recorded as an outage, not a verdict: nothing is admitted, quarantined
        or cached, and the client is told to retry (the error's own status).
        """
        layer = getattr(exc, "layer", "") or (
            "target" if isinstance(exc, TargetError) else "fetcher"
        )
        report.set_outage(layer, exc.outage or "error", exc.message)
        self.staging.discard(report.decision_id)
        self._record(report)
        return PullResult(report, error=exc)

    def _record(self, report: Report) -> None:
        self.decisions.record(report.as_json())

    async def _call(
        self, report: Report, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            response = await self.clients.call(layer, method, request, timeout=timeout)
        except LayerFailure as exc:
            # An outage, not a verdict: the step is kept in the report, and
            # _guarded records the pull as an outage.
            report.add_error(layer, method, exc.message, (time.monotonic() - started) * 1000)
            raise
        return response, (time.monotonic() - started) * 1000

    def _require(
        self, report: Report, layer: str, step: str, verdict: common_pb2.Verdict, duration_ms: float
    ) -> None:
        if not report.add(layer, step, verdict, duration_ms):
            raise _Denied

    async def _evaluate(self, report: Report, admit: bool) -> PullResult:
        session = report.decision_id
        limits = self.config.limits

        planned, ms = await self._call(
            report,
            "analysis",
            "Plan",
            analysis_pb2.PlanRequest(
                name=report.client_name,
                reference=report.reference,
                parent_index=self._parent_index(report.client_name, report.reference),
            ),
        )
        if not report.add("analysis", "plan", planned.verdict, ms):
            # Refused before any upstream traffic: nothing to quarantine.
            report.decision = "DENY"
            denial = report.denial_findings()
            # The full <alias>/<repository>, however the client spelled it.
            report.repository = next(
                (f["evidence"]["repository"] for f in denial if f["evidence"].get("repository")),
                "",
            )
            codes = [f["code"] for f in denial]
            if syntax_status(codes) is not None:
                # Refused by syntax: counted, not recorded one by one (disk).
                self.syntax_refusals.count(codes[0])
            else:
                self._record(report)
            return PullResult(report)
        plan: common_pb2.Plan = planned.plan
        report.repository = f"{plan.ref.upstream_alias}/{plan.ref.repository}"
        report.policy_version = plan.policy_version

        # A digest names immutable content: what this policy admitted is served
        # without asking upstream, so admitted images keep serving in an outage.
        forced = bool(report.reevaluation and report.reevaluation["force"])
        if admit and plan.ref.digest and not forced:
            cached = await self._cached(report, plan, plan.ref.digest)
            if cached is not None:
                return cached

        try:
            fetched, ms = await self._call(
                report,
                "fetcher",
                "FetchManifest",
                fetcher_pb2.FetchManifestRequest(session=session, plan=plan),
                timeout=limits.manifest_deadline + 5,
            )
        except UpstreamUnreachable as exc:
            stale = await self._offline_tag(report, plan, exc) if admit else None
            if stale is None:
                raise
            return stale
        self._provenance(report, fetched.provenance)
        self._require(report, "fetcher", "manifest", fetched.verdict, ms)
        staged: common_pb2.StagedManifest = fetched.manifest

        # The gateway hashes the staged manifest itself for the cache lookup:
        # a cached image is only ever served as the bytes that were verified.
        algorithm = plan.ref.digest.split(":", 1)[0] if plan.ref.digest else "sha256"
        data = self.staging.read(session, staged.staged_key, limits.manifest_bytes)
        local_digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        # Tags that resolve to one digest are verified once: the second pull
        # waits for the first and then finds the admission.
        async with self._digest_lock(report.repository, local_digest):
            # `check` always runs every layer; pulls and `admit` reuse an admission.
            cached = (
                await self._cached(report, plan, local_digest) if admit and not forced else None
            )
            if cached is not None:
                return cached
            report.waivers = self._waivers(report, local_digest)
            return await self._verify(report, admit, plan, fetched, staged, data, local_digest)

    def _waivers(self, report: Report, digest: str) -> frozenset[str]:
        """Codes released for exactly this repository and digest, and a release's own."""
        codes = set(self.decisions.waivers(report.repository, digest))
        release = report.release
        if release is not None and release["digest"] == digest:
            codes.update(release["waivers"])
        return frozenset(codes)

    def _parent_index(self, name: str, reference: str) -> str:
        """An admitted index of this repository that lists ``reference``, if any."""
        if ":" not in reference:
            return ""
        repository = self.decisions.repository_for(name)
        if repository is None:
            return ""
        parents = self.decisions.parent_indexes(repository, reference, self.config.policy_version)
        return parents[0] if parents else ""

    def _check_nesting(self, report: Report, plan: common_pb2.Plan) -> int:
        """Refuse an index nested MAX_INDEX_DEPTH or more levels below a tagged one (F-12).

        Depth above this index shows through the chain of admitted parents;
        the walk up it is bounded. Returns that depth: the indexes this one
        lists are checked with it (see :mod:`indexcheck`).
        """
        depth, parent = 0, plan.parent_index
        while parent and depth <= MAX_INDEX_DEPTH:
            depth += 1
            parents = self.decisions.parent_indexes(report.repository, parent, plan.policy_version)
            parent = parents[0] if parents else ""
        if depth >= MAX_INDEX_DEPTH:
            verdict = common_pb2.Verdict(decision=common_pb2.DENY, layer="gateway")
            verdict.findings.add(
                code="gateway.index_too_deep",
                severity=common_pb2.ERROR,
                message=f"got an index nested {depth} levels deep, expected fewer than"
                f" {MAX_INDEX_DEPTH}",
                evidence={"parent_index": plan.parent_index},
            )
            self._require(report, "gateway", "index depth", verdict, 0.0)
        return depth

    def _parent_entries(self, report: Report, plan: common_pb2.Plan) -> list[common_pb2.Descriptor]:
        """The parent index's entry for this manifest: its digest and size are claims too."""
        if not plan.parent_index or not plan.ref.digest:
            return []
        return [
            common_pb2.Descriptor(digest=plan.ref.digest, media_type=media_type, size=size)
            for parent, media_type, size in self.decisions.index_entries(
                report.repository, plan.ref.digest, plan.policy_version
            )
            if parent == plan.parent_index
        ]

    @contextlib.asynccontextmanager
    async def _digest_lock(self, repository: str, digest: str) -> AsyncIterator[None]:
        key = (repository, digest)
        entry = self._digest_locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._digest_locks.pop(key, None)

    async def _verify(
        self,
        report: Report,
        admit: bool,
        plan: common_pb2.Plan,
        fetched: fetcher_pb2.FetchManifestResponse,
        staged: common_pb2.StagedManifest,
        data: bytes,
        local_digest: str,
    ) -> PullResult:
        session = report.decision_id
        limits = self.config.limits
        fmt, hv = await asyncio.gather(
            self._call(
                report,
                "format",
                "CheckManifest",
                format_pb2.CheckManifestRequest(session=session, plan=plan, manifest=staged),
            ),
            self._call(
                report,
                "hashverify",
                "VerifyManifest",
                hashverify_pb2.VerifyManifestRequest(
                    session=session,
                    plan=plan,
                    manifest=staged,
                    provenance=fetched.provenance,
                    parent_descriptors=self._parent_entries(report, plan),
                ),
            ),
        )
        format_ok = report.add("format", "manifest", fmt[0].verdict, fmt[1])
        hash_ok = report.add("hashverify", "manifest", hv[0].verdict, hv[1])
        if not (format_ok and hash_ok):
            report.digest = hv[0].digest or local_digest
            raise _Denied
        digest: str = hv[0].digest
        if digest != local_digest:
            report.add_error(
                "hashverify",
                "manifest",
                f"hashverify: digest {digest} disagrees with the gateway's {local_digest}",
                0.0,
            )
            raise _Denied
        report.digest = digest
        summary: format_pb2.ManifestSummary = fmt[0].summary
        report.media_type = summary.media_type
        depth = self._check_nesting(report, plan) if summary.kind == format_pb2.IMAGE_INDEX else 0

        descriptors = [
            d
            for d in (summary.config, *summary.layers, *summary.manifests, summary.subject)
            if d.digest
        ]
        # Signatures first: the source layer judges the signed provenance they yield.
        sig, sig_ms, statements = await self._signatures(report, plan, digest)
        signature_ok = report.add("signature", "signatures", sig, sig_ms)
        src, src_ms = await self._call(
            report,
            "source",
            "CheckSource",
            source_pb2.CheckSourceRequest(
                plan=plan,
                provenance=fetched.provenance,
                descriptors=descriptors,
                annotations=dict(summary.annotations),
                stage=source_pb2.CheckSourceRequest.MANIFEST,
                manifest_digest=digest,
                verified_provenance=statements,
            ),
        )
        source_ok = report.add("source", "source", src.verdict, src_ms)
        if not (signature_ok and source_ok):
            raise _Denied
        if summary.kind == format_pb2.IMAGE_INDEX:
            await self._check_index_unit(report, plan, digest, summary, depth, sig, statements)

        blob_keys: list[str] = []
        streamed: dict[str, str] = {}
        if summary.kind == format_pb2.IMAGE_MANIFEST:
            blobs = [summary.config, *summary.layers]
            got, ms = await self._call(
                report,
                "fetcher",
                "FetchBlobs",
                fetcher_pb2.FetchBlobsRequest(session=session, plan=plan, blobs=blobs),
                timeout=limits.blob_deadline + 5,
            )
            self._provenance(report, got.provenance)
            self._require(report, "fetcher", "blobs", got.verdict, ms)
            # Blob downloads have their own redirects (CDNs): source judges them too.
            (vb, vb_ms), (bsrc, bsrc_ms) = await asyncio.gather(
                self._call(
                    report,
                    "hashverify",
                    "VerifyBlobs",
                    hashverify_pb2.VerifyBlobsRequest(
                        session=session, plan=plan, blobs=blobs, provenance=got.provenance
                    ),
                    timeout=limits.blob_deadline,
                ),
                self._call(
                    report,
                    "source",
                    "CheckSource",
                    source_pb2.CheckSourceRequest(
                        plan=plan,
                        provenance=got.provenance,
                        descriptors=blobs,
                        stage=source_pb2.CheckSourceRequest.BLOBS,
                        manifest_digest=digest,
                    ),
                ),
            )
            blobs_ok = report.add("hashverify", "blobs", vb.verdict, vb_ms)
            blob_source_ok = report.add("source", "blob source", bsrc.verdict, bsrc_ms)
            if not (blobs_ok and blob_source_ok):
                raise _Denied
            # Decompression only after the compressed digests verified (L-06):
            # heavy processing of unverified bytes is what bombs count on.
            (cfg, cfg_ms), (layers, layers_ms) = await asyncio.gather(
                self._call(
                    report,
                    "format",
                    "CheckConfig",
                    format_pb2.CheckConfigRequest(session=session, plan=plan, summary=summary),
                ),
                self._call(
                    report,
                    "format",
                    "InspectLayers",
                    format_pb2.InspectLayersRequest(session=session, plan=plan, summary=summary),
                    timeout=limits.blob_deadline,
                ),
            )
            config_ok = report.add("format", "config", cfg.verdict, cfg_ms)
            layers_ok = report.add("format", "layers", layers.verdict, layers_ms)
            report.layers = [
                {
                    "digest": stats.digest,
                    "compression": stats.compression,
                    "compressed_bytes": stats.compressed_bytes,
                    "uncompressed_bytes": stats.uncompressed_bytes,
                    "entries": stats.entries,
                    "diff_id": stats.diff_id,
                    "duration_ms": stats.duration_ms,
                }
                for stats in layers.layers
            ]
            if not (config_ok and layers_ok):
                raise _Denied
            blob_keys = [b.digest for b in blobs]
            streamed = {b.digest: b.computed_digest for b in got.blobs}
        elif summary.kind != format_pb2.IMAGE_INDEX:
            report.add_error("format", "manifest", "format: manifest kind not stated", 0.0)
            raise _Denied

        report.decision = "ALLOW"
        if admit:
            if report.release is not None and report.waived:
                # Before the admission: a released image keeps its waivers
                # for every later verification of this digest.
                self.decisions.add_waivers(
                    report.repository,
                    digest,
                    sorted({w["code"] for w in report.waived}),
                    report.decision_id,
                    {**report.release, "time": report.time},
                )
            # The decision is recorded in the admission's own transaction.
            await self._admit(report, plan, staged, summary, blob_keys, streamed)
            self.staging.discard(session)
            return PullResult(report, manifest=data)
        self.staging.discard(session)
        self._record(report)
        return PullResult(report, manifest=data)

    async def _repository_plan(self, name: str) -> common_pb2.Plan:
        """Analysis's plan for ``name`` alone; a refusal raises (400 for syntax, else 403)."""
        planned = await self.clients.call(
            "analysis",
            "Plan",
            analysis_pb2.PlanRequest(name=name, reference="", repository_only=True),
        )
        if not verdict_allows(planned.verdict):
            report = Report(decision_id="", client_name=name, reference="")
            report.add("analysis", "plan", planned.verdict, 0.0)
            status = syntax_status(f["code"] for f in report.denial_findings())
            if status is not None:
                raise InvalidRequest(report.reason, oci_code=status[1])
            raise Denied(f"analysis: {report.reason}")
        plan: common_pb2.Plan = planned.plan
        return plan

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

    async def _cached(
        self, report: Report, plan: common_pb2.Plan, digest: str
    ) -> PullResult | None:
        if plan.ref.digest and plan.ref.digest != digest:
            return None
        if plan.rule.pinned_digest and plan.rule.pinned_digest != digest:
            return None
        admission = self.decisions.admitted(report.repository, digest, plan.policy_version)
        if admission is None or not self.admitted.has(digest):
            return None
        data = self.admitted.read_manifest(digest, self.config.limits.manifest_bytes)
        if hashlib.new(digest.split(":")[0], data).hexdigest() != digest.split(":", 1)[1]:
            log.error("admitted store object %s does not match its digest", digest)
            self.admitted.move_aside(digest)
            return None
        if not await self._blobs_intact(report.repository, digest):
            return None
        report.digest = digest
        report.media_type = admission.media_type
        # Admitted earlier, but perhaps not yet under this tag (or this target).
        await self._publish(report, plan, digest, admission.media_type)
        self.staging.discard(report.decision_id)
        report.decision = "ALLOW"
        report.cached = True
        report.admitted = True
        self.decisions.link_name(report.client_name, report.repository)
        if plan.ref.tag:
            self.admitted.add_reference(
                digest,
                admission.media_type,
                admission.size,
                [f"{report.repository}:{plan.ref.tag}"],
            )
        self._record(report)
        return PullResult(report, manifest=data)

    async def _check_index_unit(
        self,
        report: Report,
        plan: common_pb2.Plan,
        digest: str,
        summary: format_pb2.ManifestSummary,
        depth: int,
        signature: common_pb2.Verdict,
        statements: list[source_pb2.VerifiedProvenance],
    ) -> None:
        """Refuse the index unless every manifest it lists passes (see :mod:`indexcheck`)."""

        async def call(
            layer: str, method: str, request: Any, timeout: float | None
        ) -> tuple[Any, float]:
            return await self._call(report, layer, method, request, timeout=timeout)

        started = time.monotonic()
        unit = IndexUnit(
            call,
            lambda p: self._provenance(report, p),
            self.config.limits,
            report.decision_id,
            depth=depth,
            max_depth=MAX_INDEX_DEPTH,
            signed=plan.rule.signature.mode != common_pb2.SignaturePolicy.NONE
            and verdict_allows(signature)
            and all(f.severity == common_pb2.INFO for f in signature.findings),
            statements=statements,
        )
        verdict = await unit.check(plan, digest, summary)
        # The unit's verdict first: a refusal names the child, then each child's steps.
        allowed = report.add("gateway", "index unit", verdict, (time.monotonic() - started) * 1000)
        for step in unit.outcome.steps:
            report.add(step.layer, step.step, step.verdict, step.duration_ms)
        if not allowed:
            raise _Denied

    async def _blobs_intact(self, repository: str, digest: str) -> bool:
        """Whether every blob of an admitted manifest is present and still verified.

        A damaged or missing blob makes the pull verify and fetch again, which
        replaces it with verified bytes (see stores.AdmittedStore).
        """
        for blob in self.decisions.manifest_blobs(repository, digest):
            if await asyncio.to_thread(self.admitted.verified_blob, blob) is None:
                log.error("admitted %s of %s is damaged or missing: verifying again", blob, digest)
                return False
        return True

    async def _offline_tag(
        self, report: Report, plan: common_pb2.Plan, exc: UpstreamUnreachable
    ) -> PullResult | None:
        """While the upstream is down, serve the tag's last admitted digest (``offline_tags``).

        Only a digest still admitted under the current policy, with its bytes
        intact, is served (``_cached``); the pull is recorded as an outage.
        """
        upstream = self.config.upstreams.get(plan.ref.upstream_alias)
        if not plan.ref.tag or upstream is None or upstream.offline_tags != "serve":
            return None
        digest = self.decisions.last_admitted_for_tag(
            report.repository, plan.ref.tag, report.reference_text
        )
        if digest is None:
            return None
        report.outage = {
            "layer": "fetcher",
            "kind": "stale_tag",
            "message": f"upstream unreachable; serving last admitted digest {digest}:"
            f" {exc.message}",
        }
        cached = await self._cached(report, plan, digest)
        if cached is None:
            report.outage = {}
        return cached

    def _discovery(self, report: Report) -> Discovery:
        async def call(
            layer: str, method: str, request: Any, timeout: float | None
        ) -> tuple[Any, float]:
            return await self._call(report, layer, method, request, timeout=timeout)

        def require(layer: str, step: str, verdict: common_pb2.Verdict, ms: float) -> None:
            self._require(report, layer, step, verdict, ms)

        return Discovery(call, require, lambda p: self._provenance(report, p), self.config.limits)

    async def _signatures(
        self, report: Report, plan: common_pb2.Plan, digest: str
    ) -> tuple[common_pb2.Verdict, float, list[source_pb2.VerifiedProvenance]]:
        """The signature verdict, and the signed provenance statements for source."""
        started = time.monotonic()
        verdict, statements = await self._verify_signed(report, plan, digest)
        none = common_pb2.SignaturePolicy.NONE
        if plan.rule.signature.mode != none and not verdict_allows(verdict):
            covered = await self._covered_by_index(report, plan, digest)
            if covered is not None:
                verdict = covered
        if self._wants_provenance(plan) and not statements and plan.parent_index:
            # A platform manifest's provenance may be attested on its index.
            _parent_verdict, statements = await self._verify_signed(
                report, plan, plan.parent_index, signatures=False
            )
        return verdict, (time.monotonic() - started) * 1000, statements

    @staticmethod
    def _wants_provenance(plan: common_pb2.Plan) -> bool:
        provenance = plan.rule.provenance
        return provenance.required or provenance.signers.mode not in (
            common_pb2.SignaturePolicy.MODE_UNSPECIFIED,
            common_pb2.SignaturePolicy.NONE,
        )

    async def _verify_signed(
        self, report: Report, plan: common_pb2.Plan, digest: str, signatures: bool = True
    ) -> tuple[common_pb2.Verdict, list[source_pb2.VerifiedProvenance]]:
        session = report.decision_id
        need_signatures = signatures and plan.rule.signature.mode != common_pb2.SignaturePolicy.NONE
        need_attestations = self._wants_provenance(plan)
        found = Found()
        if need_signatures or need_attestations:
            found = await self._discovery(report).find(
                session,
                plan,
                digest,
                signatures=need_signatures,
                attestations=need_attestations,
            )
        verdict = common_pb2.Verdict(decision=common_pb2.ALLOW)
        if signatures:
            response, _ms = await self._call(
                report,
                "signature",
                "VerifySignatures",
                signature_pb2.VerifySignaturesRequest(
                    session=session, plan=plan, digest=digest, artifacts=found.signatures
                ),
            )
            verdict = response.verdict
            report.signatures.extend(_results(response.signatures, digest, "signature"))
        statements: list[source_pb2.VerifiedProvenance] = []
        if need_attestations:
            attested, ms = await self._call(
                report,
                "signature",
                "VerifyAttestations",
                signature_pb2.VerifyAttestationsRequest(
                    session=session, plan=plan, digest=digest, artifacts=found.attestations
                ),
            )
            report.add("signature", f"attestations {digest}", attested.verdict, ms)
            report.signatures.extend(_results(attested.attestations, digest, "attestation"))
            statements = [
                source_pb2.VerifiedProvenance(
                    predicate_type=s.predicate_type,
                    builder_id=s.builder_id,
                    source_repository=s.source_repository,
                    source_digest=s.source_digest,
                    signer=s.signer,
                    found_at=s.found_at,
                    subject_digest=digest,
                )
                for s in attested.statements
            ]
        return verdict, statements

    async def _covered_by_index(
        self, report: Report, plan: common_pb2.Plan, digest: str
    ) -> common_pb2.Verdict | None:
        """A signature on an admitted index covers the manifests it lists."""
        parents = self.decisions.parent_indexes(report.repository, digest, plan.policy_version)
        for parent in parents[:4]:
            verdict, _statements = await self._verify_signed(report, plan, parent)
            if verdict_allows(verdict):
                verdict.findings.append(
                    common_pb2.Finding(
                        code="signature.covered_by_index",
                        severity=common_pb2.INFO,
                        message=f"signed index {parent} lists this manifest",
                        evidence={"index": parent},
                    )
                )
                return verdict
        return None

    async def _admit(
        self,
        report: Report,
        plan: common_pb2.Plan,
        staged: common_pb2.StagedManifest,
        summary: format_pb2.ManifestSummary,
        blob_keys: list[str],
        streamed: dict[str, str],
    ) -> None:
        """Move the verified content in, then admit and record in one transaction.

        ``streamed`` maps each blob to the digest the fetcher computed while
        writing it. Order (each step a failpoint, see :mod:`failpoints`): blobs,
        manifest, then the admission with its decision row (one commit), the
        audit line, and index.json last. A crash before the commit leaves
        only unreferenced content; after it, start-up reconciles the rest.
        """
        session = report.decision_id
        if staged.staged_key != report.digest:
            raise PullguardError("staged manifest key differs from the verified digest")
        verdict = _streamed_verdict(report, staged, blob_keys, streamed)
        if not verdict_allows(verdict):
            self._require(report, "gateway", "staged digests", verdict, 0.0)
        await asyncio.to_thread(self._take_staged, session, blob_keys, streamed)
        failpoints.hit("admit.after_blobs")
        await asyncio.to_thread(self._take_staged, session, [staged.staged_key], {})
        failpoints.hit("admit.after_manifest")
        size = self.admitted.blob_path(report.digest).stat().st_size
        # Published before the admission is recorded: if the push fails, the
        # image is not admitted and its next pull verifies and pushes again.
        await self._publish(report, plan, report.digest, summary.media_type)
        report.admitted = True
        self.decisions.admit_and_record(
            Admission(report.repository, report.digest, summary.media_type, size, session),
            plan.policy_version,
            blobs=blob_keys,
            children=[(m.digest, m.media_type, m.size) for m in summary.manifests],
            client_name=report.client_name,
            report=report.as_json(),
        )
        ref_names = [f"{report.repository}@{report.digest}"]
        if plan.ref.tag:
            ref_names.append(f"{report.repository}:{plan.ref.tag}")
        try:
            self.admitted.add_reference(report.digest, summary.media_type, size, ref_names)
        except OSError as exc:
            # Admitted and recorded: start-up reconciles index.json with the database.
            log.error("index.json not updated for %s: %s", report.digest, exc)
        failpoints.hit("admit.after_index")

    def _take_staged(self, session: str, keys: list[str], streamed: dict[str, str]) -> None:
        for key in keys:
            self.admitted.take_from_staging(self.staging, session, key, streamed.get(key, ""))

    async def _publish(
        self, report: Report, plan: common_pb2.Plan, digest: str, media_type: str
    ) -> None:
        """Push an admitted manifest to the target registry, if there is one.

        Raises TargetError (recorded as the ``target`` step) when the target
        did not take it.
        """
        if self.publisher is None:
            return
        started = time.monotonic()
        try:
            outcome = await self.publisher.publish(
                report.repository,
                digest,
                media_type,
                [plan.ref.tag] if plan.ref.tag else [],
                plan.policy_version,
            )
        except TargetError as exc:
            report.add_error("target", "publish", exc.message, (time.monotonic() - started) * 1000)
            raise
        report.target = outcome.as_json()
        verdict = common_pb2.Verdict(decision=common_pb2.ALLOW, layer="target")
        if outcome.state == "pending":
            verdict.findings.add(
                code="target.index_pending",
                severity=common_pb2.INFO,
                message=f"index waits for {len(outcome.pending)} listed manifests to be"
                f" admitted before it is pushed to {outcome.url}",
                evidence={"pending": ",".join(outcome.pending[:20])},
            )
        else:
            pushed = ", ".join(outcome.pushed) or "nothing new"
            verdict.findings.add(
                code="target.published",
                severity=common_pb2.INFO,
                message=f"in {outcome.url} ({outcome.blobs_uploaded} blobs uploaded,"
                f" {outcome.blobs_present} present; pushed {pushed})",
            )
        for index, state in outcome.indexes.items():
            if state.startswith("failed"):
                verdict.findings.add(
                    code="target.index_failed",
                    severity=common_pb2.WARNING,
                    message=f"index {index} could not be pushed yet: {state}",
                )
        report.add("target", "publish", verdict, (time.monotonic() - started) * 1000)

    @staticmethod
    def _provenance(report: Report, provenance: common_pb2.Provenance) -> None:
        for exchange in provenance.exchanges:
            report.provenance.append(
                {
                    "method": exchange.method,
                    "url": exchange.url,
                    "status": exchange.status,
                    "location": exchange.location,
                    "purpose": exchange.purpose,
                    "digest": exchange.digest,
                    "headers": dict(exchange.headers),
                }
            )


def _streamed_verdict(
    report: Report,
    staged: common_pb2.StagedManifest,
    blob_keys: list[str],
    streamed: dict[str, str],
) -> common_pb2.Verdict:
    """The gateway's own check that the fetcher streamed exactly the verified digests."""
    verdict = common_pb2.Verdict(decision=common_pb2.ALLOW, layer="gateway")
    claims = [(report.digest, staged.computed_digest)]
    claims += [(key, streamed.get(key, "")) for key in blob_keys]
    for expected, got in claims:
        if got != expected:
            verdict.decision = common_pb2.DENY
            verdict.findings.add(
                code="gateway.staged_digest_mismatch",
                severity=common_pb2.ERROR,
                message=f"got {got or 'no digest'} from the fetcher's stream, expected {expected}",
                evidence={"descriptor": expected, "streamed": got},
            )
    return verdict


def _results(results: Any, digest: str, kind: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": kind,
            "location": r.location,
            "accepted": r.accepted,
            "signer": r.signer,
            "reason": r.reason,
            "code": r.code,
            "digest": digest,
        }
        for r in results
    ]


Runner = Callable[[str, str], Awaitable[PullResult]]
