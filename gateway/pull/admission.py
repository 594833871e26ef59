"""Steps 3, 6 and 7 of a pull: serve cached, admit or quarantine, publish.

:class:`Admissions` puts the admitted store, the decision database, the
quarantine and the target registry behind one interface (distribution's
``registry/proxy`` keeps its local and remote stores the same way), so the
pull's steps never touch a file, a table or the target directly.

Admission order (each step a failpoint, see :mod:`failpoints`): blobs,
manifest, the push to a registry target, then the admission with its
decision row (one commit), and index.json last. A crash before the commit
leaves only unreferenced content; after it, start-up reconciles the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pullguard.gateway import failpoints
from pullguard.gateway.attest import Attester
from pullguard.gateway.decisions import Admission, DecisionLog
from pullguard.gateway.gc.gate import AdmissionGate
from pullguard.gateway.publish import Publication, Publisher
from pullguard.gateway.pull.blobs import StagedBlobs, streamed_verdict
from pullguard.gateway.pull.manifest import JudgedManifest
from pullguard.gateway.pull.one import Pull, Stopwatch
from pullguard.gateway.pull.restore import restore_from_target
from pullguard.gateway.report import Phase, Report
from pullguard.gateway.steps import StepName
from pullguard.gateway.stores import AdmittedStore, Quarantine
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.digests import computed_digest
from pullguard.services.runtime.errors import PullguardError, TargetError, UpstreamUnreachable
from pullguard.services.runtime.protoconv import verdict_allows
from pullguard.services.runtime.staging import FileStamp, StagingStore
from pullguard.v1 import common_pb2

log = logging.getLogger("pullguard.gateway")
#: Staged objects hashed and moved into the admitted store at once.
PARALLEL_TAKES = 4


@dataclass(frozen=True)
class Admitting:
    """Verified content moved into the admitted store (and published), not yet admitted."""

    admission: Admission
    blobs: list[str]
    #: An index's entries: (digest, media type, size).
    children: list[tuple[str, str, int]]


class Admissions:
    """Where verified content goes, and where a pull's decision is kept."""

    def __init__(
        self,
        config: Config,
        decisions: DecisionLog,
        admitted: AdmittedStore,
        quarantine: Quarantine,
        staging: StagingStore,
        publisher: Publisher | None,
    ) -> None:
        self.config = config
        self.decisions = decisions
        self.admitted = admitted
        self.quarantine = quarantine
        self.staging = staging
        #: Pushes admitted images to the target registry; None for an embedded target.
        self.publisher = publisher
        #: Keeps the garbage collector off the blobs an admission is moving in.
        self.gate = AdmissionGate(admitted.root)
        #: Signs every admission (``attest:``); None without. The key is loaded here, once.
        self.attester = Attester.for_config(config, publisher)

    # -- the decision -------------------------------------------------------

    def record(self, report: Report) -> None:
        """Record a decision that admits nothing (an admission records its own)."""
        self.decisions.record(report.as_json())

    def discard(self, pull: Pull) -> None:
        """Drop whatever the pull staged."""
        self.staging.discard(pull.session)

    def quarantine_or_discard(self, pull: Pull) -> None:
        """Keep a refused pull's staged content in quarantine, or discard it.

        A quarantine entry is a verdict: only a refusal every step of which
        ran (no layer error, no internal error, no full disk) keeps its bytes.
        Partial content of a pull that could not finish is discarded.
        """
        report = pull.report
        if (
            pull.admit
            and not any(step.error for step in report.steps)
            and self.staging.session_dir(pull.session).exists()
        ):
            self.quarantine.put(self.staging, pull.session, report.as_json(), report.decision_id)
            self.decisions.quarantined(
                report.decision_id, report.time, report.reference_text, report.digest, report.reason
            )
        else:
            self.discard(pull)

    # -- step 3: serve cached -------------------------------------------------

    async def serve_cached(self, pull: Pull, digest: str) -> bytes | None:
        """The manifest of ``digest`` if this policy admitted it and its bytes are intact."""
        report = pull.report
        plan = pull.plan
        if plan.ref.digest and plan.ref.digest != digest:
            return None
        if plan.rule.pinned_digest and plan.rule.pinned_digest != digest:
            return None
        admission = self.decisions.admitted(report.repository, digest, plan.policy_version)
        if admission is None:
            return None
        if not self.admitted.has(digest) and not await self._restore(pull, digest):
            return None
        data = self.admitted.read_manifest(digest, self.config.limits.manifest_bytes)
        if computed_digest(data, digest) != digest:
            log.error("admitted store object %s does not match its digest", digest)
            self.admitted.move_aside(digest)
            return None
        if not await self._blobs_intact(report.repository, digest):
            return None
        if await self._withdrawn_elsewhere(pull, digest):
            return None
        report.digest = digest
        report.media_type = admission.media_type
        # Admitted earlier, but perhaps not yet under this tag (or this target).
        await self.publish(pull, digest, admission.media_type)
        self.discard(pull)
        self.decisions.link_name(report.client_name, report.repository)
        if plan.ref.tag:
            self.admitted.add_reference(
                digest,
                admission.media_type,
                admission.size,
                [f"{report.repository}:{plan.ref.tag}"],
            )
        return data

    async def serve_offline_tag(self, pull: Pull, exc: UpstreamUnreachable) -> bytes | None:
        """While the upstream is down, serve the tag's last admitted digest (``offline_tags``).

        Only a digest still admitted under the current policy, with its bytes
        intact, is served (:meth:`serve_cached`); the pull is recorded as an outage.
        """
        report = pull.report
        plan = pull.plan
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
        data = await self.serve_cached(pull, digest)
        if data is None:
            report.outage = {}
        return data

    async def _withdrawn_elsewhere(self, pull: Pull, digest: str) -> bool:
        """Whether the registry target no longer holds this published image.

        The target is the store of record: gone from it means revoked, here
        too. The admission is revoked and its publication forgotten, and the
        pull verifies again (under the current policy; admitted again, it is
        pushed again). A target that cannot answer fails the pull (the
        ``target`` step), as a failed publish does.
        """
        if self.publisher is None:
            return False
        report = pull.report
        watch = Stopwatch()
        try:
            gone = await self.publisher.withdrawn_elsewhere(report.repository, digest)
        except TargetError as exc:
            report.add_error("target", StepName.PUBLISH, exc.message, watch.ms)
            raise
        if gone:
            log.warning(
                "%s@%s is gone from the target: revoked here too, verifying again",
                report.repository,
                digest,
            )
            self.revoke(report.repository, digest)
            self.decisions.forget_published(self.publisher.key, report.repository, digest)
            try:
                await self._unsign_withdrawn(report.repository, digest)
            except TargetError as exc:
                report.add_error("target", StepName.ATTEST, exc.message, watch.ms)
                raise
        return gone

    async def _restore(self, pull: Pull, digest: str) -> bool:
        """Admitted by another replica: bring it from the registry target, verified here.

        Not when the target no longer holds it (revoked everywhere, see
        :meth:`_withdrawn_elsewhere`), nor when there is no registry target.
        """
        if self.publisher is None or await self._withdrawn_elsewhere(pull, digest):
            return False
        return await restore_from_target(
            self.publisher,
            self.decisions,
            self.admitted,
            self.staging,
            # Its own session: the pull's may hold the manifest step 2 staged.
            f"{pull.session}-restore",
            pull.report.repository,
            digest,
        )

    async def _unsign_withdrawn(self, repository: str, digest: str) -> None:
        """Take pullguard's signature off an image someone else removed from the target.

        Left there, it would vouch for whatever is pushed under that digest
        next, behind pullguard's back. A failure fails the pull (retry): the
        next pull tries again before admitting anything.
        """
        if self.attester is None:
            return
        try:
            await self.attester.withdraw(repository, digest)
        except TargetError as exc:
            raise TargetError(
                f"attest: cannot remove the signature of {digest}: {exc.message}"
            ) from None

    async def _blobs_intact(self, repository: str, digest: str) -> bool:
        """Whether every blob of an admitted manifest is present and still verified.

        A damaged or missing blob makes the pull verify and fetch again, which
        replaces it with verified bytes (see stores.AdmittedStore).
        """
        blobs = self.decisions.manifest_blobs(repository, digest)
        # One thread hop for all of them: on a cached serve each is usually one stat().
        damaged = await asyncio.to_thread(self._first_damaged, blobs)
        if damaged is not None:
            log.error("admitted %s of %s is damaged or missing: verifying again", damaged, digest)
            return False
        return True

    def _first_damaged(self, blobs: list[str]) -> str | None:
        return next((b for b in blobs if self.admitted.verified_blob(b) is None), None)

    # -- step 6: admit --------------------------------------------------------

    async def admit(self, pull: Pull, judged: JudgedManifest, blobs: StagedBlobs) -> Admitting:
        """Move the verified content in and publish it; :meth:`commit` then admits it.

        Only when the digests the fetcher streamed equal the descriptors are
        the staged objects moved in, manifest last: each is hashed again
        unless it is, by its stamp, the unchanged file hashverify hashed.
        """
        report = pull.report
        session = pull.session
        staged = judged.staged.staged
        summary = judged.summary
        release = report.release
        if release is not None and report.waived:
            # Before the admission: a released image keeps its waivers
            # for every later verification of this digest.
            self.decisions.add_waivers(
                report.repository,
                judged.digest,
                sorted({w["code"] for w in report.waived}),
                report.decision_id,
                {**release.as_json(), "time": report.time},
            )
        if staged.staged_key != report.digest:
            raise PullguardError("staged manifest key differs from the verified digest")
        verdict = streamed_verdict(report.digest, staged, blobs)
        if not verdict_allows(verdict):
            pull.require("gateway", StepName.STAGED_DIGESTS, verdict, 0.0)
        # Moved in but not yet committed, the content is referenced by nothing:
        # the garbage collector keeps off it until the verdict is recorded (Pull.held).
        await pull.held.enter_async_context(self.gate.admitting([*blobs.keys, staged.staged_key]))
        await asyncio.to_thread(
            self._take_staged, session, blobs.keys, blobs.streamed, blobs.stamps
        )
        failpoints.hit("admit.after_blobs")
        await asyncio.to_thread(self._take_staged, session, [staged.staged_key], {}, {})
        failpoints.hit("admit.after_manifest")
        report.mark(Phase.ADMISSION)
        size = self.admitted.blob_path(report.digest).stat().st_size
        # Published before the admission is recorded: if the push fails, the
        # image is not admitted and its next pull verifies and pushes again.
        await self.publish(pull, report.digest, summary.media_type)
        # Signed last, still before the commit: a failure here admits nothing.
        await self.attest(pull, report.digest, summary.media_type, size)
        return Admitting(
            Admission(
                report.repository, report.digest, summary.media_type, size, report.decision_id
            ),
            blobs.keys,
            [(m.digest, m.media_type, m.size) for m in summary.manifests],
        )

    def commit(self, pull: Pull, admitting: Admitting) -> None:
        """Admit and record the (allowing) decision in one transaction; index.json last."""
        report = pull.report
        plan = pull.plan
        admission = admitting.admission
        self.decisions.admit_and_record(
            admission,
            plan.policy_version,
            blobs=admitting.blobs,
            children=admitting.children,
            client_name=report.client_name,
            report=report.as_json(),
        )
        ref_names = [f"{report.repository}@{admission.digest}"]
        if plan.ref.tag:
            ref_names.append(f"{report.repository}:{plan.ref.tag}")
        try:
            self.admitted.add_reference(
                admission.digest, admission.media_type, admission.size, ref_names
            )
        except OSError as exc:
            # Admitted and recorded: start-up reconciles index.json with the database.
            log.error("index.json not updated for %s: %s", admission.digest, exc)
        failpoints.hit("admit.after_index")
        self.discard(pull)

    def _take_staged(
        self,
        session: str,
        keys: list[str],
        streamed: dict[str, str],
        stamps: Mapping[str, FileStamp],
    ) -> None:
        """Move each staged object in, a few at once; each is hashed unless
        hashverify's stamp shows the very file it hashed (hashlib releases the GIL).

        A digest listed twice is one staged file, taken once.
        """

        def take(key: str) -> None:
            self.admitted.take_from_staging(
                self.staging, session, key, streamed.get(key, ""), stamps.get(key)
            )

        with ThreadPoolExecutor(PARALLEL_TAKES, thread_name_prefix="admit") as pool:
            for _ in pool.map(take, dict.fromkeys(keys)):
                pass

    # -- step 7: publish ------------------------------------------------------

    async def publish(self, pull: Pull, digest: str, media_type: str) -> None:
        """Push an admitted manifest to the target registry, if there is one.

        Raises TargetError (recorded as the ``target`` step) when the target
        did not take it.
        """
        if self.publisher is None:
            return
        report = pull.report
        plan = pull.plan
        tags = [plan.ref.tag] if plan.ref.tag else []
        if self.attester is not None:
            # cosign finds signatures by these tags: only pullguard writes them
            # (an upstream "image" tagged so could replay a revoked signature).
            tags = [tag for tag in tags if not self.attester.owns_tag(tag)]
        watch = Stopwatch()
        try:
            outcome = await self.publisher.publish(
                report.repository, digest, media_type, tags, plan.policy_version
            )
        except TargetError as exc:
            report.add_error("target", StepName.PUBLISH, exc.message, watch.ms)
            raise
        report.target = outcome.as_json()
        report.add("target", StepName.PUBLISH, _publication_verdict(outcome), watch.ms)

    async def attest(self, pull: Pull, digest: str, media_type: str, size: int) -> None:
        """Sign the admission being made and store it (``attest:``).

        Raises TargetError (recorded as the ``target`` step) when it could not
        be signed or stored: the image is then not admitted (fail closed).
        """
        if self.attester is None:
            return
        report = pull.report
        watch = Stopwatch()
        try:
            tags = await self.attester.attach(report, pull.plan, digest, media_type, size)
        except TargetError as exc:
            report.add_error("target", StepName.ATTEST, exc.message, watch.ms)
            raise
        verdict = common_pb2.Verdict(decision=common_pb2.ALLOW, layer="target")
        verdict.findings.add(
            code="target.attested",
            severity=common_pb2.INFO,
            message=f"signed by pullguard: {', '.join(tags)}",
        )
        report.add("target", StepName.ATTEST, verdict, watch.ms)

    # -- re-evaluation --------------------------------------------------------

    def revoke(self, repository: str, digest: str, because: Report | None = None) -> None:
        """No longer admitted: not served, its names dropped from the admitted layout.

        ``because``: the re-evaluation's report, for the ``revoke`` notification.
        """
        self.decisions.revoke(
            repository, digest, because.as_json() if because is not None else None
        )
        self.admitted.remove_references(repository, digest)
        if self.attester is not None:
            self.attester.local.remove(repository, digest)

    async def withdraw(self, repository: str, digest: str) -> str:
        """Take a revoked image out of the registry target; say what happened."""
        if self.publisher is None:
            return ""
        try:
            # pullguard's signature first: never "admitted" on an image that is not.
            signed = await self.attester.withdraw(repository, digest) if self.attester else []
            references = signed + await self.publisher.withdraw(repository, digest)
        except TargetError as exc:
            log.error("revoked %s@%s is still in the target: %s", repository, digest, exc.message)
            return f"failed: {exc.message}"
        return f"withdrawn: {', '.join(references)}" if references else ""


def _publication_verdict(outcome: Publication) -> common_pb2.Verdict:
    """The ``target`` step's verdict: always ALLOW, with what the push did as findings."""
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
    return verdict
