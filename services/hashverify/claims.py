"""Claims about content, and how each is judged against computed digests.

A claim is anything someone other than this service says about bytes: a
digest asked for or pinned, a ``Docker-Content-Digest`` or ``Content-Length``
header, a descriptor's digest and size. Nothing here trusts a claim; these
helpers sort claims into those that can be checked and those that cannot,
and compare the checkable ones with digests computed over the staged bytes.

Digest strings fall into three classes (THREATS F-08, F-09):

- verifiable: ``sha256`` or ``sha512`` in exact lowercase hex;
- unverifiable: well-formed by the OCI grammar but in an algorithm this
  service cannot recompute (``sha384``, ``blake3``, ``sha256+b64u`` ...):
  ``hash.unverifiable_digest``, never a pass on syntax alone;
- invalid: anything else, including uppercase hex and trailing newlines:
  ``hash.invalid_digest``. Nothing is normalised.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pullguard.services.runtime.denylist import algorithms_in, algorithms_of
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.findings import Finding

#: The OCI image-spec digest grammar, registered algorithm or not.
_OCI_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_KNOWN = ("sha256", "sha512")
#: The algorithm every manifest and blob is also hashed with, whatever its
#: address: deny databases list sha256 digests, and a known-bad blob
#: re-addressed by sha512 must still match its sha256 entry.
CANONICAL = "sha256"
#: Responses examined per request; a pull of 1 000 layers makes a few thousand.
MAX_EXCHANGES = 20_000
#: A response with one of these statuses carries no content claim worth checking.
_CLAIM_STATUSES = range(200, 400)


class DigestKind(enum.Enum):
    VERIFIABLE = "verifiable"
    UNVERIFIABLE = "unverifiable"
    INVALID = "invalid"


def classify(digest: str) -> tuple[DigestKind, str]:
    """(kind, algorithm) of a digest string; the algorithm is "" when invalid."""
    try:
        algorithm, _ = parse_digest(digest)
    except DigestSyntaxError:
        algorithm = digest.split(":", 1)[0]
        # A known algorithm with a bad encoding (uppercase, wrong length) is
        # malformed, not merely unverifiable.
        if _OCI_DIGEST_RE.fullmatch(digest) and algorithm not in _KNOWN:
            return DigestKind.UNVERIFIABLE, algorithm
        return DigestKind.INVALID, ""
    return DigestKind.VERIFIABLE, algorithm


def algorithm_of(digest: str) -> str | None:
    """The algorithm of a verifiable digest, else None."""
    kind, algorithm = classify(digest)
    return algorithm if kind is DigestKind.VERIFIABLE else None


def unusable_claim(digest: str, what: str, **evidence: object) -> Finding | None:
    """The finding for a claimed digest that cannot be checked, or None if it can."""
    kind, algorithm = classify(digest)
    if kind is DigestKind.UNVERIFIABLE:
        return Finding.error(
            "hash.unverifiable_digest",
            f"{what} {digest[:140]}: got algorithm {algorithm[:40]}, expected sha256 or sha512",
            digest=digest,
            **evidence,
        )
    if kind is DigestKind.INVALID:
        return Finding.error(
            "hash.invalid_digest",
            f"{what} {digest[:140]!r}: not a lowercase sha256 or sha512 digest",
            digest=digest,
            **evidence,
        )
    return None


class DenySet:
    """The service's deny database plus one plan's inline digests.

    ``database`` is usually a :class:`pullguard.services.runtime.denylist.DenyList`,
    whose membership test raises when its file cannot be read: that error is
    left to propagate, because a check that cannot consult the deny database
    has not run.
    """

    def __init__(self, database: Container[str], extra: Iterable[str] = ()) -> None:
        self._database = database
        self._extra = frozenset(extra)

    def __contains__(self, digest: object) -> bool:
        return digest in self._extra or digest in self._database

    def denied(self, digests: Iterable[str]) -> list[str]:
        """The digests of ``digests`` that are denied, without repeats, in order."""
        return [d for d in dict.fromkeys(digests) if d in self]

    def algorithms(self) -> frozenset[str]:
        """Algorithms of its entries: a sha512 entry needs every blob's sha512 too."""
        return algorithms_in(self._database) | algorithms_of(self._extra)


@dataclass(frozen=True)
class ResponseClaim:
    """What one upstream response said about the content it carried."""

    where: str  # "GET <url>", for messages
    status: int
    docker_content_digest: str = ""
    #: The Content-Length header as received, "" when absent.
    content_length: str = ""
    #: A Content-Encoding other than identity: Content-Length then counts
    #: encoded bytes, so it says nothing about the content's size.
    encoded: bool = False


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange from the fetcher's provenance, as far as it matters here."""

    method: str
    url: str
    status: int
    purpose: str = ""
    digest: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def claim(self) -> ResponseClaim:
        headers = {name.lower(): value for name, value in self.headers.items()}
        encoding = headers.get("content-encoding", "").strip().lower()
        return ResponseClaim(
            where=f"{self.method or 'GET'} {self.url[:200]}",
            status=self.status,
            docker_content_digest=headers.get("docker-content-digest", ""),
            content_length=headers.get("content-length", ""),
            encoded=encoding not in ("", "identity"),
        )


def claims_by_digest(exchanges: Sequence[Exchange], purpose: str) -> dict[str, list[ResponseClaim]]:
    """Response claims of ``purpose`` exchanges, grouped by the digest requested."""
    grouped: dict[str, list[ResponseClaim]] = {}
    for exchange in exchanges[:MAX_EXCHANGES]:
        if exchange.purpose == purpose and exchange.status in _CLAIM_STATUSES:
            grouped.setdefault(exchange.digest, []).append(exchange.claim())
    return grouped


def header_algorithms(claims: Iterable[ResponseClaim]) -> set[str]:
    """Algorithms needed to check the headers' digest claims."""
    found = set()
    for claim in claims:
        algorithm = algorithm_of(claim.docker_content_digest)
        if algorithm is not None:
            found.add(algorithm)
    return found


def response_findings(
    claims: Iterable[ResponseClaim],
    what: str,
    computed: Mapping[str, str],
    size: int,
    already_checked: str = "",
) -> list[Finding]:
    """Findings for the headers of responses that carried one object.

    ``computed`` maps algorithm -> digest over the object's bytes; ``size`` is
    their length. ``Docker-Content-Digest`` is checked on every non-error
    response (a redirect that names another digest lies too); ``Content-Length``
    only on 200 responses without a transport encoding. ``already_checked`` is
    a header value reported elsewhere, not reported twice.
    """
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for claim in claims:
        header = claim.docker_content_digest
        if header and header != already_checked and ("dcd", header) not in seen:
            seen.add(("dcd", header))
            problem = unusable_claim(header, f"{what}: Docker-Content-Digest", response=claim.where)
            algorithm = algorithm_of(header)
            if problem is not None:
                findings.append(problem)
            elif algorithm is not None and computed.get(algorithm) != header:
                findings.append(
                    Finding.error(
                        "hash.header_mismatch",
                        f"{what}: got {computed.get(algorithm, '(not computed)')},"
                        f" expected Docker-Content-Digest {header}",
                        header=header,
                        response=claim.where,
                    )
                )
        length = claim.content_length.strip()
        if claim.status == 200 and length and not claim.encoded and ("cl", length) not in seen:
            seen.add(("cl", length))
            if not (length.isascii() and length.isdigit() and len(length) < 20):
                findings.append(
                    Finding.error(
                        "hash.size_mismatch",
                        f"{what}: Content-Length {length[:40]!r} is not a number",
                        response=claim.where,
                    )
                )
            elif int(length) != size:
                findings.append(
                    Finding.error(
                        "hash.size_mismatch",
                        f"{what}: got {size} bytes, expected Content-Length {int(length)}",
                        actual=size,
                        claimed=int(length),
                        response=claim.where,
                    )
                )
    return findings
