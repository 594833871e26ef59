"""Where signatures and attestations live, fetched through the fetcher.

Issue 4 asks for all three places at once:

- the legacy tags ``sha256-<hex>.sig`` (signatures) and ``sha256-<hex>.att``
  (attestations) that cosign 2 writes;
- the OCI 1.1 referrers API, where cosign 3 and ``--registry-referrers-mode``
  put signature and bundle manifests;
- the referrers fallback tag ``sha256-<hex>``, an index of the same
  referrers, for registries without the API (the fetcher's ListReferrers
  tries the API and falls back to the tag).

Everything is looked up in the rule's signature repository when it names one
(cosign's COSIGN_REPOSITORY), else in the image's own. Referrers are
discovery hints only: the signature layer checks each one's subject and
signature. Each place is an artifact source (zot's ``references.go`` keeps
its reference kinds the same way): it yields candidates, and :data:`SOURCES`
lists them. A lookup that fails raises (the pull is refused as retryable),
so a broken registry never reads as "unsigned but fine" (G-01).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pullguard.gateway.steps import StepName
from pullguard.services.runtime.config import Limits
from pullguard.v1 import common_pb2, fetcher_pb2, signature_pb2

#: (layer, method, request, timeout) -> (response, milliseconds); failures raise.
Call = Callable[[str, str, Any, float | None], Awaitable[tuple[Any, float]]]
#: (layer, step, verdict, milliseconds) -> allowed; a refusal raises.
Require = Callable[[str, str, common_pb2.Verdict, float], None]
#: Records the fetcher's exchanges in the report.
Record = Callable[[common_pb2.Provenance], None]

#: Referrer manifests fetched at most at once.
CONCURRENCY = 4


class Kind(enum.Enum):
    """What a found artifact may be; the signature layer decides from its signed content."""

    SIGNATURE = "signature"
    ATTESTATION = "attestation"


@dataclass
class Found:
    signatures: list[signature_pb2.SignatureArtifact] = field(default_factory=list)
    attestations: list[signature_pb2.SignatureArtifact] = field(default_factory=list)

    def add(self, kinds: frozenset[Kind], artifacts: list[signature_pb2.SignatureArtifact]) -> None:
        if Kind.SIGNATURE in kinds:
            self.signatures.extend(artifacts)
        if Kind.ATTESTATION in kinds:
            self.attestations.extend(artifacts)


@dataclass(frozen=True)
class Lookup:
    """One search: where to look, for which digest, under which plan."""

    session: str
    plan: common_pb2.Plan
    repository: str
    digest: str


@dataclass(frozen=True)
class CosignTag:
    """cosign 2's legacy tag ``sha256-<hex><suffix>``.

    ``.sig`` holds signatures, ``.att`` attestations.
    """

    suffix: str
    kinds: frozenset[Kind]

    async def candidates(
        self, discovery: Discovery, lookup: Lookup
    ) -> list[signature_pb2.SignatureArtifact]:
        tag = lookup.digest.replace(":", "-") + self.suffix
        return await discovery.artifact(
            lookup, f"tag:{lookup.repository}:{tag}", f"artifact {lookup.repository}:{tag}", tag=tag
        )


@dataclass(frozen=True)
class Referrers:
    """The OCI 1.1 referrers API, or its fallback tag schema ``sha256-<hex>`` (the fetcher
    tries both). A referrer may be a signature, an attestation or a sigstore bundle."""

    kinds: frozenset[Kind] = frozenset(Kind)

    async def candidates(
        self, discovery: Discovery, lookup: Lookup
    ) -> list[signature_pb2.SignatureArtifact]:
        return await discovery.referrers(lookup)


ArtifactSource = CosignTag | Referrers

#: Every place a signature or attestation may live, in the order their
#: candidates are handed to the signature layer.
SOURCES: tuple[ArtifactSource, ...] = (
    CosignTag(".sig", frozenset({Kind.SIGNATURE})),
    CosignTag(".att", frozenset({Kind.ATTESTATION})),
    Referrers(),
)


class Discovery:
    def __init__(self, call: Call, require: Require, record: Record, limits: Limits) -> None:
        self._call = call
        self._require = require
        self._record = record
        self._limits = limits

    def _bounds(self, plan: common_pb2.Plan) -> tuple[int, int]:
        """Largest blob and most blobs per artifact manifest: the signatures plus its config."""
        policy = plan.rule.signature
        size = policy.max_signature_bytes or self._limits.signature_bytes
        count = policy.max_signatures or self._limits.signatures
        return size, count + 1

    async def find(
        self,
        session: str,
        plan: common_pb2.Plan,
        digest: str,
        *,
        signatures: bool,
        attestations: bool,
    ) -> Found:
        """Every candidate of the wanted kinds, from every source that may hold them."""
        wanted = frozenset(
            kind
            for kind, want in ((Kind.SIGNATURE, signatures), (Kind.ATTESTATION, attestations))
            if want
        )
        repository = plan.rule.signature.signature_repository or plan.ref.repository
        lookup = Lookup(session, plan, repository, digest)
        sources = [source for source in SOURCES if source.kinds & wanted]
        results = await asyncio.gather(*(source.candidates(self, lookup) for source in sources))
        found = Found()
        for source, artifacts in zip(sources, results, strict=True):
            found.add(source.kinds & wanted, artifacts)
        return found

    async def artifact(
        self, lookup: Lookup, location: str, step: str, tag: str = "", reference: str = ""
    ) -> list[signature_pb2.SignatureArtifact]:
        """One artifact manifest and its blobs, staged; none when it is absent."""
        size, count = self._bounds(lookup.plan)
        response, ms = await self._call(
            "fetcher",
            "FetchArtifact",
            fetcher_pb2.FetchArtifactRequest(
                session=lookup.session,
                plan=lookup.plan,
                tag=tag,
                reference=reference,
                repository=lookup.repository,
                max_blob_size=size,
                max_blobs=count,
            ),
            self._limits.manifest_deadline + 5,
        )
        self._record(response.provenance)
        if not response.found:
            return []
        self._require("fetcher", step, response.verdict, ms)
        return [
            signature_pb2.SignatureArtifact(
                location=location, manifest=response.manifest, blobs=response.blobs
            )
        ]

    async def referrers(self, lookup: Lookup) -> list[signature_pb2.SignatureArtifact]:
        """Every listed referrer of the digest, each fetched (bounded)."""
        listed, ms = await self._call(
            "fetcher",
            "ListReferrers",
            fetcher_pb2.ListReferrersRequest(
                plan=lookup.plan, digest=lookup.digest, repository=lookup.repository
            ),
            self._limits.manifest_deadline + 5,
        )
        self._record(listed.provenance)
        if not listed.supported:
            return []
        self._require("fetcher", StepName.REFERRERS, listed.verdict, ms)
        _size, count = self._bounds(lookup.plan)
        # Bounded before anything is fetched: each referrer costs requests.
        descriptors = list(listed.referrers)[: count - 1]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fetch(descriptor: common_pb2.Descriptor) -> list[signature_pb2.SignatureArtifact]:
            # Listed but gone is no error: a referrer is only a hint; nothing to verify.
            async with gate:
                return await self.artifact(
                    lookup,
                    f"referrer:{lookup.repository}@{descriptor.digest}",
                    f"referrer {descriptor.digest}",
                    reference=descriptor.digest,
                )

        fetched = await asyncio.gather(*(fetch(d) for d in descriptors))
        return [artifact for artifacts in fetched for artifact in artifacts]
