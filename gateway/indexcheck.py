"""An index is one unit: every manifest it lists passes before the index does.

DESIGN "The flow of one pull": an index is admitted only when every manifest
it lists passes the checks that need no layer bytes, because a runtime runs
the first entry that matches its platform, and one bad child behind an
admitted index would be one ``docker pull`` away. So, once the index itself
passed format, hashverify, signature and source, :class:`IndexUnit` fetches
each listed manifest (bounded) and asks, for each:

- fetcher: the manifest by digest, size-limited like any manifest;
- format: its body (and, for a nested index, its own entries' platforms);
- hashverify: its digest against the index entry's digest and size, the
  deny database (inline and file); pins name tags, so they apply to the index;
- source: its provenance, under the index's signed provenance;
- signature: the index's own signature, verified before any child is looked
  at, covers the manifests it lists (``signature.covered_by_index``);
- the entry's ``mediaType`` must be the child's.

A child that is itself an index is checked the same way, its entries too,
while the nesting stays below MAX_INDEX_DEPTH levels under the tagged index
(``gateway.index_too_deep``). Every digest is checked once, and at most
MAX_CHILDREN manifests per index tree (``gateway.index_too_many_children``).
Entries for ``unknown/unknown`` (buildx's attestation manifests) name no
platform a runtime runs; they are judged when pulled on their own.

Any child that fails refuses the index with ``gateway.index_child_refused``
naming the child, its platform, the layer and the reason; a child the
upstream does not have is ``gateway.index_child_missing``. No layer blob is
downloaded here: each platform's blobs are fetched and verified when that
platform is first pulled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.report import first_error
from pullguard.services.runtime.config import Limits
from pullguard.services.runtime.errors import NotFound
from pullguard.services.runtime.protoconv import verdict_allows
from pullguard.services.runtime.tasks import gather_or_cancel
from pullguard.v1 import common_pb2, fetcher_pb2, format_pb2, hashverify_pb2, source_pb2

#: (layer, method, request, timeout) -> (response, milliseconds); failures raise.
Call = Callable[[str, str, Any, float | None], Awaitable[tuple[Any, float]]]
#: Records the fetcher's exchanges in the report.
Record = Callable[[common_pb2.Provenance], None]

#: Listed manifests checked per index tree at most (real indexes list a few dozen).
MAX_CHILDREN = 256
#: Children checked at once.
CONCURRENCY = 4
#: The platform buildx gives its attestation manifests; no runtime asks for it.
NOT_A_PLATFORM = "unknown/unknown"

CHILD_REFUSED = "gateway.index_child_refused"
CHILD_MISSING = "gateway.index_child_missing"
TOO_MANY_CHILDREN = "gateway.index_too_many_children"
TOO_DEEP = "gateway.index_too_deep"


@dataclass(frozen=True)
class Step:
    """One child check's verdict, for the report."""

    layer: str
    step: str
    verdict: common_pb2.Verdict
    duration_ms: float


@dataclass
class Outcome:
    """What checking an index's children found."""

    steps: list[Step] = field(default_factory=list)
    refusals: list[common_pb2.Finding] = field(default_factory=list)
    checked: int = 0
    skipped: int = 0


def child_plan(plan: common_pb2.Plan, parent: str, digest: str) -> common_pb2.Plan:
    """The plan of a listed manifest: by digest, under the index, without the tag's pin."""
    child = common_pb2.Plan()
    child.CopyFrom(plan)
    child.ref.tag = ""
    child.ref.digest = digest
    child.rule.pinned_digest = ""
    child.parent_index = parent
    return child


def referenced_descriptors(summary: format_pb2.ManifestSummary) -> list[common_pb2.Descriptor]:
    """Every descriptor a manifest names (config, layers, entries, subject): what the
    source layer judges."""
    named = (summary.config, *summary.layers, *summary.manifests, summary.subject)
    return [d for d in named if d.digest]


def covered_by_index(index: str) -> common_pb2.Finding:
    """The finding of a manifest whose signature is the signed ``index`` listing it."""
    return common_pb2.Finding(
        code="signature.covered_by_index",
        severity=common_pb2.INFO,
        message=f"the signed index {index} lists this manifest",
        evidence={"index": index},
    )


class IndexUnit:
    """Checks the manifests one index lists; see the module docstring."""

    def __init__(
        self,
        call: Call,
        record: Record,
        limits: Limits,
        session: str,
        *,
        depth: int,
        max_depth: int,
        signed: bool,
        statements: list[common_pb2.VerifiedProvenance],
    ) -> None:
        self._call = call
        self._record = record
        self._limits = limits
        self._session = session
        #: Admitted indexes above the one being checked.
        self._depth = depth
        self._max_depth = max_depth
        #: Whether the index's own signature verified under the rule.
        self._signed = signed
        self._statements = statements
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._seen: set[str] = set()
        self.outcome = Outcome()

    async def check(
        self, plan: common_pb2.Plan, digest: str, summary: format_pb2.ManifestSummary
    ) -> common_pb2.Verdict:
        """The gateway's verdict on the unit: ALLOW, or DENY naming each failed child."""
        self._seen.add(digest)
        await self._entries(plan, digest, list(summary.manifests), "", 1)
        outcome = self.outcome
        verdict = common_pb2.Verdict(layer="gateway")
        if outcome.refusals:
            verdict.decision = common_pb2.DENY
            verdict.findings.extend(outcome.refusals)
            return verdict
        verdict.decision = common_pb2.ALLOW
        verdict.findings.add(
            code="gateway.index_children_checked",
            severity=common_pb2.INFO,
            message=f"{outcome.checked} listed manifests passed"
            + (
                f"; {outcome.skipped} {NOT_A_PLATFORM} entries left to their own pulls"
                if outcome.skipped
                else ""
            ),
        )
        return verdict

    def _refuse(self, code: str, message: str, **evidence: str) -> None:
        self.outcome.refusals.append(
            common_pb2.Finding(
                code=code, severity=common_pb2.ERROR, message=message, evidence=evidence
            )
        )

    async def _entries(
        self,
        plan: common_pb2.Plan,
        parent: str,
        entries: list[common_pb2.Descriptor],
        path: str,
        level: int,
    ) -> None:
        todo: list[tuple[str, common_pb2.Descriptor]] = []
        for position, entry in enumerate(entries):
            where = f"{path}manifests[{position}]"
            if entry.platform == NOT_A_PLATFORM:
                self.outcome.skipped += 1
                continue
            if entry.digest in self._seen:
                continue
            self._seen.add(entry.digest)
            if len(self._seen) - 1 > MAX_CHILDREN:
                self._refuse(
                    TOO_MANY_CHILDREN,
                    f"got more than {MAX_CHILDREN} manifests listed under this index, expected"
                    f" at most {MAX_CHILDREN}",
                    entry=where,
                )
                return
            todo.append((where, entry))
        nested = await gather_or_cancel(
            [self._child(plan, parent, entry, where) for where, entry in todo]
        )
        for (where, entry), summary in zip(todo, nested, strict=True):
            if summary is None or summary.kind != format_pb2.IMAGE_INDEX:
                continue
            if self._depth + level >= self._max_depth:
                self._refuse(
                    TOO_DEEP,
                    f"{where} {entry.digest} is an index nested {self._depth + level} levels"
                    f" deep, expected fewer than {self._max_depth}",
                    child=entry.digest,
                    entry=where,
                )
                continue
            await self._entries(
                child_plan(plan, parent, entry.digest),
                entry.digest,
                list(summary.manifests),
                f"{where} > ",
                level + 1,
            )

    def _judge(
        self,
        entry: common_pb2.Descriptor,
        where: str,
        layer: str,
        step: str,
        verdict: Any,
        ms: float,
    ) -> bool:
        """Record one check of a child; a refusal names the child."""
        self.outcome.steps.append(Step(layer, f"{step} {entry.digest}", verdict, ms))
        if verdict_allows(verdict):
            return True
        codes = ",".join(f.code for f in verdict.findings if f.severity != common_pb2.INFO)
        self._refuse(
            CHILD_REFUSED,
            f"{where} {entry.digest} ({entry.platform or 'no platform'}) refused by {layer}:"
            f" {first_error(verdict)}",
            child=entry.digest,
            entry=where,
            platform=entry.platform,
            layer=layer,
            codes=codes[:500],
        )
        return False

    async def _child(
        self,
        plan: common_pb2.Plan,
        parent: str,
        entry: common_pb2.Descriptor,
        where: str,
    ) -> format_pb2.ManifestSummary | None:
        """Check one listed manifest; its summary when every check passed."""
        async with self._gate:
            return await self._check_child(child_plan(plan, parent, entry.digest), entry, where)

    async def _check_child(
        self, plan: common_pb2.Plan, entry: common_pb2.Descriptor, where: str
    ) -> format_pb2.ManifestSummary | None:
        session = self._session
        try:
            fetched, ms = await self._call(
                "fetcher",
                "FetchManifest",
                fetcher_pb2.FetchManifestRequest(session=session, plan=plan),
                self._limits.manifest_deadline + 5,
            )
        except NotFound as exc:
            self._refuse(
                CHILD_MISSING,
                f"{where} {entry.digest} ({entry.platform or 'no platform'}) is not in the"
                f" upstream: {exc.message}",
                child=entry.digest,
                entry=where,
                platform=entry.platform,
            )
            return None
        self._record(fetched.provenance)
        if not self._judge(entry, where, "fetcher", "index child", fetched.verdict, ms):
            return None
        staged = fetched.manifest
        (fmt, fmt_ms), (hv, hv_ms) = await asyncio.gather(
            self._call(
                "format",
                "CheckManifest",
                format_pb2.CheckManifestRequest(session=session, plan=plan, manifest=staged),
                None,
            ),
            self._call(
                "hashverify",
                "VerifyManifest",
                hashverify_pb2.VerifyManifestRequest(
                    session=session,
                    plan=plan,
                    manifest=staged,
                    provenance=fetched.provenance,
                    parent_descriptors=[
                        common_pb2.Descriptor(
                            digest=entry.digest, media_type=entry.media_type, size=entry.size
                        )
                    ],
                ),
                None,
            ),
        )
        format_ok = self._judge(entry, where, "format", "index child", fmt.verdict, fmt_ms)
        hash_ok = self._judge(entry, where, "hashverify", "index child", hv.verdict, hv_ms)
        if not (format_ok and hash_ok):
            return None
        summary: format_pb2.ManifestSummary = fmt.summary
        if summary.media_type != entry.media_type:
            self._refuse(
                CHILD_REFUSED,
                f"{where} {entry.digest}: got a {summary.media_type} body, expected the"
                f" entry's mediaType {entry.media_type}",
                child=entry.digest,
                entry=where,
                layer="gateway",
                codes="gateway.index_child_media_type",
            )
            return None
        src, src_ms = await self._call(
            "source",
            "CheckSource",
            source_pb2.CheckSourceRequest(
                plan=plan,
                provenance=fetched.provenance,
                descriptors=referenced_descriptors(summary),
                annotations=dict(summary.annotations),
                stage=source_pb2.CheckSourceRequest.MANIFEST,
                manifest_digest=hv.digest,
                verified_provenance=self._statements,
            ),
            None,
        )
        if not self._judge(entry, where, "source", "index child", src.verdict, src_ms):
            return None
        if self._signed:
            covered = common_pb2.Verdict(
                decision=common_pb2.ALLOW,
                layer="signature",
                findings=[covered_by_index(plan.parent_index)],
            )
            self.outcome.steps.append(
                Step("signature", f"index child {entry.digest}", covered, 0.0)
            )
        self.outcome.checked += 1
        return summary
