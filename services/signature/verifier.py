"""Key-based cosign signature verification of one manifest digest.

For each staged signature artifact (a ``sha256-<hex>.sig`` manifest), and in
it each layer of media type ``application/vnd.dev.cosign.simplesigning.v1+json``:

1. the signature annotation is decoded (strict base64);
2. the payload blob is read from staging, at most ``payload_bytes``, and its
   digest and size recomputed and compared with the layer descriptor;
3. the signature is checked over the exact payload bytes by a
   :class:`SignerIdentifier` (configured keys today; keyless later);
4. only then is the payload parsed, strictly, and it must name this digest
   (exact string) and this repository.

Each step that fails rejects that signature with a stable finding code;
:func:`policy.evaluate` turns the checks into the verdict. Nothing here does
I/O itself: the caller passes ``read_staged``, so the module stays pure and
the servicer owns the staging store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pullguard.services.runtime.digests import digest_bytes, parse_digest
from pullguard.services.runtime.findings import Verdict
from pullguard.services.signature import policy, simplesigning
from pullguard.services.signature.attachments import (
    AttachmentError,
    Layer,
    decode_signature,
    parse_signature_manifest,
)
from pullguard.services.signature.policy import Requirement, SignatureCheck

#: ``read_staged(key, limit)`` returns the object staged under ``key``, or its
#: first ``limit + 1`` bytes when it is larger. It raises when nothing is
#: staged under ``key``: the check then cannot run.
ReadStaged = Callable[[str, int], bytes]


class SignerIdentifier(Protocol):
    """Decides who, among the trusted signers, made a signature."""

    def identify(
        self, signature: bytes, payload: bytes, annotations: Mapping[str, str]
    ) -> str | None:
        """The trusted signer's name when ``signature`` verifies over ``payload``, else None."""
        ...


@dataclass(frozen=True)
class Subject:
    """What every accepted signature must name."""

    digest: str
    #: Repository names the payload's docker-reference may give (see
    #: :func:`simplesigning.expected_repositories`).
    repositories: tuple[str, ...]

    def __post_init__(self) -> None:
        parse_digest(self.digest)  # DigestSyntaxError (a ValueError) when not exact
        if not self.repositories or not all(self.repositories):
            raise ValueError("a subject needs the repository its signatures must name")


@dataclass(frozen=True)
class Artifact:
    """A staged signature artifact: where it was found and its manifest's staging key."""

    location: str
    manifest_key: str


@dataclass(frozen=True)
class Limits:
    manifest_bytes: int
    #: Largest payload blob read per signature (THREATS G-09).
    payload_bytes: int
    #: Most layers per signature manifest, and most artifacts (THREATS G-08).
    signatures: int


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    checks: tuple[SignatureCheck, ...]


def verify_signatures(
    requirement: Requirement,
    subject: Subject,
    artifacts: Sequence[Artifact],
    identifier: SignerIdentifier,
    limits: Limits,
    read_staged: ReadStaged,
) -> Outcome:
    """Check every signature in ``artifacts`` and evaluate ``requirement``."""
    if requirement.mode is policy.Mode.NONE:
        return Outcome(policy.evaluate(requirement, ()), ())
    checks: list[SignatureCheck] = []
    if len(artifacts) > limits.signatures:
        checks.append(
            SignatureCheck.reject(
                "request",
                policy.TOO_MANY,
                f"got {len(artifacts)} signature artifacts, expected at most {limits.signatures}",
            )
        )
    else:
        for artifact in artifacts:
            checks.extend(_artifact_checks(artifact, subject, identifier, limits, read_staged))
    return Outcome(policy.evaluate(requirement, checks), tuple(checks))


def _artifact_checks(
    artifact: Artifact,
    subject: Subject,
    identifier: SignerIdentifier,
    limits: Limits,
    read_staged: ReadStaged,
) -> list[SignatureCheck]:
    data = read_staged(artifact.manifest_key, limits.manifest_bytes)
    if len(data) > limits.manifest_bytes:
        return [
            SignatureCheck.reject(
                artifact.location,
                policy.TOO_LARGE,
                f"signature manifest is larger than {limits.manifest_bytes} bytes",
            )
        ]
    mismatch = _content_mismatch(data, artifact.manifest_key, None)
    if mismatch:
        return [SignatureCheck.reject(artifact.location, policy.BLOB_MISMATCH, mismatch)]
    try:
        layers = parse_signature_manifest(data, limits.signatures)
    except AttachmentError as exc:
        return [SignatureCheck.reject(artifact.location, exc.code, exc.message)]
    return [
        _layer_check(artifact, layer, subject, identifier, limits, read_staged)
        for layer in layers
        if layer.media_type == simplesigning.MEDIA_TYPE
    ]


def _layer_check(
    artifact: Artifact,
    layer: Layer,
    subject: Subject,
    identifier: SignerIdentifier,
    limits: Limits,
    read_staged: ReadStaged,
) -> SignatureCheck:
    location = f"{artifact.location}/layers[{layer.index}]"
    encoded = layer.annotations.get(simplesigning.SIGNATURE_ANNOTATION)
    if encoded is None:
        return SignatureCheck.reject(
            location,
            policy.INVALID,
            f"layer has no {simplesigning.SIGNATURE_ANNOTATION} annotation",
        )
    try:
        signature = decode_signature(encoded)
    except AttachmentError as exc:
        return SignatureCheck.reject(location, exc.code, exc.message)
    if layer.size > limits.payload_bytes:
        return SignatureCheck.reject(
            location,
            policy.TOO_LARGE,
            f"got a payload of {layer.size} bytes, expected at most {limits.payload_bytes}",
        )
    payload = read_staged(layer.digest, limits.payload_bytes)
    if len(payload) > limits.payload_bytes:
        return SignatureCheck.reject(
            location,
            policy.TOO_LARGE,
            f"staged payload is larger than {limits.payload_bytes} bytes",
        )
    mismatch = _content_mismatch(payload, layer.digest, layer.size)
    if mismatch:
        return SignatureCheck.reject(location, policy.BLOB_MISMATCH, mismatch)
    signer = identifier.identify(signature, payload, layer.annotations)
    if signer is None:
        return SignatureCheck.reject(
            location, policy.UNTRUSTED_KEY, "signature verifies under no trusted key"
        )
    try:
        claims = simplesigning.parse_payload(payload)
    except simplesigning.PayloadError as exc:
        return SignatureCheck.reject(location, policy.INVALID, str(exc), signer)
    if claims.manifest_digest != subject.digest:
        return SignatureCheck.reject(
            location,
            policy.WRONG_DIGEST,
            f"got signed digest {claims.manifest_digest[:140]}, expected {subject.digest}",
            signer,
        )
    if not simplesigning.names_repository(claims.docker_reference, subject.repositories):
        return SignatureCheck.reject(
            location,
            policy.WRONG_REPOSITORY,
            f"got signed reference {claims.docker_reference[:200]},"
            f" expected {subject.repositories[0]}",
            signer,
        )
    return SignatureCheck.accept(
        location,
        signer,
        f"signed by {signer} for {subject.digest} in {subject.repositories[0]}"
        " (transparency log not checked)",
    )


def _content_mismatch(data: bytes, digest: str, size: int | None) -> str:
    """Empty when ``data`` is ``size`` bytes hashing to ``digest``; else the problem."""
    if size is not None and len(data) != size:
        return f"got {len(data)} staged bytes for {digest}, expected {size}"
    algorithm, _ = parse_digest(digest)
    computed = digest_bytes(data, algorithm)
    if computed != digest:
        return f"got {computed} for the staged bytes, expected {digest}"
    return ""
