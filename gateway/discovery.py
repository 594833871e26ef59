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
signature. A lookup that fails raises (the pull is refused as retryable),
so a broken registry never reads as "unsigned but fine" (G-01).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Found:
    signatures: list[signature_pb2.SignatureArtifact] = field(default_factory=list)
    attestations: list[signature_pb2.SignatureArtifact] = field(default_factory=list)


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
        repository = plan.rule.signature.signature_repository or plan.ref.repository
        hex_tag = digest.replace(":", "-")
        lookups: list[Awaitable[list[signature_pb2.SignatureArtifact]]] = []
        if signatures:
            lookups.append(self._tagged(session, plan, repository, f"{hex_tag}.sig"))
        if attestations:
            lookups.append(self._tagged(session, plan, repository, f"{hex_tag}.att"))
        lookups.append(self._referrers(session, plan, repository, digest))
        results = await asyncio.gather(*lookups)
        found = Found()
        index = 0
        if signatures:
            found.signatures.extend(results[index])
            index += 1
        if attestations:
            found.attestations.extend(results[index])
            index += 1
        # A referrer may be a signature or an attestation; the signature layer
        # tells them apart from their signed content, never from a label.
        referrers = results[index]
        if signatures:
            found.signatures.extend(referrers)
        if attestations:
            found.attestations.extend(referrers)
        return found

    async def _tagged(
        self, session: str, plan: common_pb2.Plan, repository: str, tag: str
    ) -> list[signature_pb2.SignatureArtifact]:
        return await self._artifact(
            session,
            plan,
            repository,
            f"tag:{repository}:{tag}",
            f"artifact {repository}:{tag}",
            tag=tag,
        )

    async def _by_digest(
        self, session: str, plan: common_pb2.Plan, repository: str, digest: str
    ) -> list[signature_pb2.SignatureArtifact]:
        # Listed but gone is no error: a referrer is only a hint; nothing to verify.
        return await self._artifact(
            session,
            plan,
            repository,
            f"referrer:{repository}@{digest}",
            f"referrer {digest}",
            reference=digest,
        )

    async def _artifact(
        self,
        session: str,
        plan: common_pb2.Plan,
        repository: str,
        location: str,
        step: str,
        tag: str = "",
        reference: str = "",
    ) -> list[signature_pb2.SignatureArtifact]:
        """One artifact manifest and its blobs, staged; none when it is absent."""
        size, count = self._bounds(plan)
        response, ms = await self._call(
            "fetcher",
            "FetchArtifact",
            fetcher_pb2.FetchArtifactRequest(
                session=session,
                plan=plan,
                tag=tag,
                reference=reference,
                repository=repository,
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

    async def _referrers(
        self, session: str, plan: common_pb2.Plan, repository: str, digest: str
    ) -> list[signature_pb2.SignatureArtifact]:
        listed, ms = await self._call(
            "fetcher",
            "ListReferrers",
            fetcher_pb2.ListReferrersRequest(plan=plan, digest=digest, repository=repository),
            self._limits.manifest_deadline + 5,
        )
        self._record(listed.provenance)
        if not listed.supported:
            return []
        self._require("fetcher", "referrers", listed.verdict, ms)
        _size, count = self._bounds(plan)
        # Bounded before anything is fetched: each referrer costs requests.
        descriptors = list(listed.referrers)[: count - 1]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fetch(descriptor: common_pb2.Descriptor) -> list[signature_pb2.SignatureArtifact]:
            async with gate:
                return await self._by_digest(session, plan, repository, descriptor.digest)

        fetched = await asyncio.gather(*(fetch(d) for d in descriptors))
        return [artifact for artifacts in fetched for artifact in artifacts]
