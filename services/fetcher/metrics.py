"""The fetcher's metrics: requests to each upstream by status, bytes read from it.

Labelled by the upstream's configured alias (a bounded set), never by URL,
host a redirect named, or repository.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter

from pullguard.services.runtime.metrics import PROCESS_REGISTRY, bounded

UPSTREAM_REQUESTS = Counter(
    "pullguard_upstream_requests",
    "HTTP requests the fetcher sent for an upstream (its redirects and token realm"
    " included), by HTTP status, or 'error' when no response came.",
    ("upstream", "status"),
    registry=PROCESS_REGISTRY,
)
UPSTREAM_BYTES = Counter(
    "pullguard_upstream_fetched_bytes",
    "Body bytes the fetcher read from an upstream (manifests, blobs, documents), as sent.",
    ("upstream",),
    registry=PROCESS_REGISTRY,
)


def count_request(alias: str, status: int | None) -> None:
    UPSTREAM_REQUESTS.labels(bounded(alias), str(status) if status else "error").inc()


def counted(alias: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` unchanged, each one's size added to the upstream's fetched bytes."""
    bytes_read = UPSTREAM_BYTES.labels(bounded(alias))
    for chunk in chunks:
        bytes_read.inc(len(chunk))
        yield chunk
