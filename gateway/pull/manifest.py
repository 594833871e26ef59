"""Steps 1, 2 and 4 of a pull: plan, stage the manifest, judge the manifest.

Format and hashverify judge the manifest bytes; then signature and source,
which need format's parse and hashverify's digest. All of this happens
before any blob is downloaded, so a bad image costs no layer traffic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pullguard.gateway.indexcheck import TOO_DEEP, referenced_descriptors
from pullguard.gateway.pull.one import Pull, StepRefused
from pullguard.gateway.pull.signatures import check_index_unit, signatures
from pullguard.gateway.report import Phase
from pullguard.gateway.steps import StepName
from pullguard.gateway.syntax import syntax_status
from pullguard.services.runtime.digests import digest_bytes
from pullguard.v1 import (
    analysis_pb2,
    common_pb2,
    fetcher_pb2,
    format_pb2,
    hashverify_pb2,
    inventory_pb2,
    source_pb2,
)

#: Levels of index above an index that is still admitted (THREATS F-12: depth 2
#: must work, beyond 4 is refused).
MAX_INDEX_DEPTH = 4


@dataclass
class StagedManifest:
    """The manifest the fetcher staged, with the digest the gateway computed itself."""

    fetched: fetcher_pb2.FetchManifestResponse
    data: bytes
    local_digest: str

    @property
    def staged(self) -> common_pb2.StagedManifest:
        return self.fetched.manifest


@dataclass
class JudgedManifest:
    """A manifest every manifest-level layer allowed: its verified digest and parse."""

    staged: StagedManifest
    digest: str
    summary: format_pb2.ManifestSummary
    #: Signed SBOMs of an image manifest (verified under the rule's signers).
    sboms: list[inventory_pb2.Sbom] = field(default_factory=list)


async def plan(pull: Pull) -> bool:
    """Step 1: analysis plans the pull, or refuses it before any upstream traffic.

    Returns whether it planned; a refusal is already in the report.
    """
    report = pull.report
    planned, ms = await pull.call(
        "analysis",
        "Plan",
        analysis_pb2.PlanRequest(
            name=report.client_name,
            reference=report.reference,
            parent_index=_parent_index(pull),
        ),
    )
    if not pull.judge("analysis", StepName.PLAN, planned.verdict, ms):
        denial = report.denial_findings()
        # The full <alias>/<repository>, however the client spelled it.
        report.repository = next(
            (f["evidence"]["repository"] for f in denial if f["evidence"].get("repository")),
            "",
        )
        return False
    pull.plan = planned.plan
    report.repository = f"{pull.plan.ref.upstream_alias}/{pull.plan.ref.repository}"
    report.policy_version = pull.plan.policy_version
    return True


async def stage_manifest(pull: Pull) -> StagedManifest:
    """Step 2: the fetcher stages the manifest (a tag is resolved exactly once).

    The gateway hashes the staged manifest itself for the cache lookup: a
    cached image is only ever served as the bytes that were verified.
    """
    plan_ = pull.plan
    fetched, ms = await pull.call(
        "fetcher",
        "FetchManifest",
        fetcher_pb2.FetchManifestRequest(session=pull.session, plan=plan_),
        timeout=pull.limits.manifest_deadline + 5,
    )
    pull.record_provenance(fetched.provenance)
    pull.require("fetcher", StepName.MANIFEST, fetched.verdict, ms)
    algorithm = plan_.ref.digest.split(":", 1)[0] if plan_.ref.digest else "sha256"
    data = pull.staging.read(pull.session, fetched.manifest.staged_key, pull.limits.manifest_bytes)
    local_digest = digest_bytes(data, algorithm)
    return StagedManifest(fetched, data, local_digest)


async def judge_manifest(pull: Pull, staged: StagedManifest) -> JudgedManifest:
    """Step 4: format, hashverify, signature, source and, for an index, the index unit."""
    report = pull.report
    plan_ = pull.plan
    fmt, hv = await asyncio.gather(
        pull.call(
            "format",
            "CheckManifest",
            format_pb2.CheckManifestRequest(
                session=pull.session, plan=plan_, manifest=staged.staged
            ),
        ),
        pull.call(
            "hashverify",
            "VerifyManifest",
            hashverify_pb2.VerifyManifestRequest(
                session=pull.session,
                plan=plan_,
                manifest=staged.staged,
                provenance=staged.fetched.provenance,
                parent_descriptors=_parent_entries(pull),
            ),
        ),
    )
    format_ok = pull.judge("format", StepName.MANIFEST, fmt.response.verdict, fmt.ms)
    hash_ok = pull.judge("hashverify", StepName.MANIFEST, hv.response.verdict, hv.ms)
    if not (format_ok and hash_ok):
        report.digest = hv.response.digest or staged.local_digest
        raise StepRefused
    digest: str = hv.response.digest
    if digest != staged.local_digest:
        pull.fail(
            "hashverify",
            StepName.MANIFEST,
            f"hashverify: digest {digest} disagrees with the gateway's {staged.local_digest}",
        )
    report.digest = digest
    summary: format_pb2.ManifestSummary = fmt.response.summary
    report.media_type = summary.media_type
    is_index = summary.kind == format_pb2.IMAGE_INDEX
    depth = _check_nesting(pull) if is_index else 0

    # Signatures first: the source layer judges the signed provenance they yield.
    signed = await signatures(pull, digest, image=not is_index)
    signature_ok = pull.judge("signature", StepName.SIGNATURES, signed.verdict, signed.ms)
    src, src_ms = await pull.call(
        "source",
        "CheckSource",
        source_pb2.CheckSourceRequest(
            plan=plan_,
            provenance=staged.fetched.provenance,
            descriptors=referenced_descriptors(summary),
            annotations=dict(summary.annotations),
            stage=source_pb2.CheckSourceRequest.MANIFEST,
            manifest_digest=digest,
            verified_provenance=signed.statements,
        ),
    )
    source_ok = pull.judge("source", StepName.SOURCE, src.verdict, src_ms)
    if not (signature_ok and source_ok):
        raise StepRefused
    if is_index:
        await check_index_unit(pull, digest, summary, depth, signed, MAX_INDEX_DEPTH)
    report.mark(Phase.MANIFEST)
    return JudgedManifest(staged, digest, summary, signed.sboms)


def syntax_refusal(pull: Pull) -> str | None:
    """The code of a refusal for the request's syntax (counted, not recorded), if it is one."""
    codes = [f["code"] for f in pull.report.denial_findings()]
    return codes[0] if syntax_status(codes) is not None else None


def waivers(pull: Pull, digest: str) -> frozenset[str]:
    """Codes released for exactly this repository and digest, and a release's own."""
    codes = set(pull.decisions.waivers(pull.report.repository, digest))
    release = pull.report.release
    if release is not None and release.digest == digest:
        codes.update(release.waivers)
    return frozenset(codes)


def _parent_index(pull: Pull) -> str:
    """An admitted index of this repository that lists the reference, if any."""
    reference = pull.report.reference
    if ":" not in reference:
        return ""
    repository = pull.decisions.repository_for(pull.report.client_name)
    if repository is None:
        return ""
    parents = pull.decisions.parent_indexes(repository, reference, pull.config.policy_version)
    return parents[0] if parents else ""


def _check_nesting(pull: Pull) -> int:
    """Refuse an index nested MAX_INDEX_DEPTH or more levels below a tagged one (F-12).

    Depth above this index shows through the chain of admitted parents;
    the walk up it is bounded. Returns that depth: the indexes this one
    lists are checked with it (see :mod:`indexcheck`).
    """
    plan_ = pull.plan
    depth, parent = 0, plan_.parent_index
    while parent and depth <= MAX_INDEX_DEPTH:
        depth += 1
        parents = pull.decisions.parent_indexes(
            pull.report.repository, parent, plan_.policy_version
        )
        parent = parents[0] if parents else ""
    if depth >= MAX_INDEX_DEPTH:
        verdict = common_pb2.Verdict(decision=common_pb2.DENY, layer="gateway")
        verdict.findings.add(
            code=TOO_DEEP,
            severity=common_pb2.ERROR,
            message=f"got an index nested {depth} levels deep, expected fewer than"
            f" {MAX_INDEX_DEPTH}",
            evidence={"parent_index": plan_.parent_index},
        )
        pull.require("gateway", StepName.INDEX_DEPTH, verdict, 0.0)
    return depth


def _parent_entries(pull: Pull) -> list[common_pb2.Descriptor]:
    """The parent index's entry for this manifest: its digest and size are claims too."""
    plan_ = pull.plan
    if not plan_.parent_index or not plan_.ref.digest:
        return []
    return [
        common_pb2.Descriptor(digest=plan_.ref.digest, media_type=media_type, size=size)
        for parent, media_type, size in pull.decisions.index_entries(
            pull.report.repository, plan_.ref.digest, plan_.policy_version
        )
        if parent == plan_.parent_index
    ]
