"""Transport-free values the fetcher's domain code passes around.

These mirror the protobuf messages in ``fetcher.proto`` and ``common.proto``
without importing them, so the domain modules stay testable without gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pullguard.services.runtime.descriptors import Descriptor as Descriptor
from pullguard.services.runtime.findings import Finding, Verdict

#: Layer name on every verdict the fetcher returns.
LAYER = "fetcher"


@dataclass(frozen=True)
class Exchange:
    """One HTTP request and its response head, as recorded for provenance."""

    method: str
    url: str  # query values redacted
    status: int
    purpose: str
    location: str = ""  # redacted, for redirects
    headers: Mapping[str, str] = field(default_factory=dict)
    digest: str = ""
    tls_spki_sha256: str = ""  # hex SHA-256 of the peer's SubjectPublicKeyInfo
    tls_version: str = ""  # e.g. "TLSv1.3"
    peer_address: str = ""  # "ip:port" or "[ipv6]:port"


@dataclass(frozen=True)
class StagedManifest:
    staged_key: str
    computed_digest: str
    size: int
    content_type: str
    docker_content_digest: str


@dataclass(frozen=True)
class StagedBlob:
    digest: str  # descriptor digest; also the staging key
    size: int  # bytes received
    computed_digest: str


@dataclass
class ManifestResult:
    verdict: Verdict
    manifest: StagedManifest | None
    exchanges: list[Exchange]


@dataclass
class BlobsResult:
    verdict: Verdict
    blobs: list[StagedBlob]
    exchanges: list[Exchange]


@dataclass
class ReferrersResult:
    #: False: neither the referrers API nor the fallback tag exists (both 404).
    supported: bool
    verdict: Verdict
    referrers: list[Descriptor]
    exchanges: list[Exchange]
    #: The referrers tag schema tag the list came from ("sha256-<hex>"), or "" for the API.
    fallback_tag: str = ""


@dataclass
class ArtifactResult:
    found: bool
    verdict: Verdict
    manifest: StagedManifest | None
    blobs: list[Descriptor]
    exchanges: list[Exchange]


class FetchDenied(Exception):
    """A fetch broke a limit or a transport rule; becomes a DENY finding.

    Raised inside the fetcher only and turned into a :class:`Verdict` at the
    operation boundary: a denial is data, not an RPC error.
    """

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding

    @classmethod
    def of(cls, code: str, message: str, **evidence: object) -> FetchDenied:
        return cls(Finding.error(code, message, **evidence))
