"""Image signature verification of one manifest digest, over every artifact found.

For each staged signature artifact (a ``.sig`` tag, a referrer, a referrers
fallback entry), its manifest is re-read from staging (bounded, digest
recomputed) and parsed (``attachments``). A referrer whose ``subject`` is
another manifest is ignored with a finding and never counted (THREATS F-15).
Then each layer, by media type:

- **simple-signing** (legacy cosign, ``.sig``): the signature annotation is
  decoded; the payload blob is read from staging (at most ``payload_bytes``)
  and its digest and size recomputed; ``trust.identify`` decides the signer
  (key, key + Rekor SET, keyless Fulcio + Rekor, own PKI); only then is the
  payload parsed, strictly, and it must name this digest (exact string) and
  this repository (or the rule's ``signed_identity``);
- **sigstore bundle** (cosign v3 referrers): ``bundles.verify_bundle`` for
  this digest; a DSSE statement must be an image signature
  (``https://sigstore.dev/cosign/sign/v1``, read from the SIGNED statement)
  and, when its subject has a name, name this repository. cosign v3 writes
  no name, so such a signature binds the digest only (said in the reason);
- DSSE attestations and other attachments are not signatures: skipped here
  (``attestations`` reads attestations).

Every count is bounded: artifacts, and signature layers in all of them
together, by ``limits.signatures`` (G-08); every blob by ``payload_bytes``
(G-09). :func:`policy.evaluate` turns the checks into the verdict. Nothing
here does I/O itself: the caller passes ``read_staged``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pullguard.services.runtime.digests import computed_digest, parse_digest
from pullguard.services.runtime.findings import Verdict
from pullguard.services.signature import bundles, dsse, policy, simplesigning
from pullguard.services.signature.attachments import (
    Attachment,
    AttachmentError,
    Layer,
    decode_signature,
    layer_kind,
    parse_attachment,
)
from pullguard.services.signature.notation import ARTIFACT_TYPE as NOTATION_ARTIFACT
from pullguard.services.signature.notation import layer as notation_layer
from pullguard.services.signature.policy import Requirement, SignatureCheck
from pullguard.services.signature.trust import Signer, Trust, identify, sha256_hex

#: ``read_staged(key, limit)`` returns the object staged under ``key``, or its
#: first ``limit + 1`` bytes when it is larger. It raises when nothing is
#: staged under ``key``: the check then cannot run.
ReadStaged = Callable[[str, int], bytes]


@dataclass(frozen=True)
class Subject:
    """What every accepted signature must name."""

    digest: str
    #: Repository names a payload's docker-reference may give (see
    #: :func:`simplesigning.expected_repositories`).
    repositories: tuple[str, ...]
    #: The manifest bytes, when staged: lets a statement's other digests
    #: (sha512) be checked too.
    content: bytes | None = None

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
    #: Largest payload, envelope or bundle blob read per signature (THREATS G-09).
    payload_bytes: int
    #: Most artifacts, and most signatures in all of them (THREATS G-08).
    signatures: int


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    checks: tuple[SignatureCheck, ...]


class Budget:
    """How many more signatures may be examined (G-08)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def budgeted_layers(
    attachment: Attachment, at: str, kinds: tuple[str, ...], budget: Budget, too_many: str
) -> tuple[list[tuple[str, str, Layer]], SignatureCheck | None]:
    """The layers of ``attachment`` of one of ``kinds``, as (location, kind,
    layer), each taking one from ``budget``; when it runs out, the rejection
    (``too_many``) at the first layer left unexamined."""
    chosen: list[tuple[str, str, Layer]] = []
    for layer in attachment.layers:
        kind = layer_kind(layer.media_type)
        if kind not in kinds:
            continue
        location = f"{at}/layers[{layer.index}]"
        if not budget.take():
            return chosen, SignatureCheck.reject(location, policy.TOO_MANY, too_many)
        chosen.append((location, kind, layer))
    return chosen, None


def verify_signatures(
    requirement: Requirement,
    subject: Subject,
    artifacts: Sequence[Artifact],
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> Outcome:
    """Check every signature in ``artifacts`` and evaluate ``requirement``."""
    if requirement.mode is policy.Mode.NONE:
        return Outcome(policy.evaluate(requirement, ()), ())
    checks: list[SignatureCheck] = []
    if len(artifacts) > limits.signatures:
        checks.append(too_many_artifacts(len(artifacts), limits, "signature"))
    else:
        budget = Budget(limits.signatures)
        for artifact in artifacts:
            checks.extend(_artifact_checks(artifact, subject, trust, limits, read_staged, budget))
    return Outcome(policy.evaluate(requirement, checks), tuple(checks))


def too_many_artifacts(count: int, limits: Limits, kind: str) -> SignatureCheck:
    """The refusal of a request naming more ``kind`` artifacts than the limit (G-08)."""
    return SignatureCheck.reject(
        "request",
        policy.TOO_MANY,
        f"got {count} {kind} artifacts, expected at most {limits.signatures}",
    )


def read_attachment(
    artifact: Artifact, subject: Subject, limits: Limits, read_staged: ReadStaged
) -> Attachment | SignatureCheck:
    """The artifact's parsed manifest, or why it is unusable or not about ``subject``."""
    location = artifact.location
    data = read_staged(artifact.manifest_key, limits.manifest_bytes)
    if len(data) > limits.manifest_bytes:
        return SignatureCheck.reject(
            location,
            policy.TOO_LARGE,
            f"signature manifest is larger than {limits.manifest_bytes} bytes",
        )
    mismatch = content_mismatch(data, artifact.manifest_key, None)
    if mismatch:
        return SignatureCheck.reject(location, policy.BLOB_MISMATCH, mismatch)
    try:
        attachment = parse_attachment(data, limits.signatures)
    except AttachmentError as exc:
        return SignatureCheck.reject(location, exc.code, exc.message)
    if attachment.subject_digest and attachment.subject_digest != subject.digest:
        return SignatureCheck.reject(
            location,
            policy.SUBJECT_MISMATCH,
            f"referrer's subject is {attachment.subject_digest[:140]}, expected"
            f" {subject.digest}; ignored",
        )
    return attachment


def read_blob(
    location: str, layer: Layer, limits: Limits, read_staged: ReadStaged
) -> bytes | SignatureCheck:
    """A layer's staged blob, bounded and checked against its descriptor."""
    if layer.size > limits.payload_bytes:
        return SignatureCheck.reject(
            location,
            policy.TOO_LARGE,
            f"got a {layer.size}-byte blob, expected at most {limits.payload_bytes}",
        )
    data = read_staged(layer.digest, limits.payload_bytes)
    if len(data) > limits.payload_bytes:
        return SignatureCheck.reject(
            location, policy.TOO_LARGE, f"staged blob is larger than {limits.payload_bytes} bytes"
        )
    mismatch = content_mismatch(data, layer.digest, layer.size)
    if mismatch:
        return SignatureCheck.reject(location, policy.BLOB_MISMATCH, mismatch)
    return data


def _artifact_checks(
    artifact: Artifact,
    subject: Subject,
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
    budget: Budget,
) -> list[SignatureCheck]:
    attachment = read_attachment(artifact, subject, limits, read_staged)
    if isinstance(attachment, SignatureCheck):
        return [attachment]
    notary = attachment.artifact_type == NOTATION_ARTIFACT
    chosen, overflow = budgeted_layers(
        attachment,
        artifact.location,
        ("notation",) if notary else ("signature", "bundle"),
        budget,
        f"more than {budget.limit} signatures; the rest were not examined",
    )
    checks: list[SignatureCheck] = []
    for location, kind, layer in chosen:
        if kind == "signature":
            checks.extend(_simple_signing(location, layer, subject, trust, limits, read_staged))
        elif kind == "notation":
            envelope = read_blob(location, layer, limits, read_staged)
            if isinstance(envelope, SignatureCheck):
                checks.append(envelope)
                continue
            checks.extend(
                notation_layer.check_layer(
                    location,
                    layer.media_type,
                    envelope,
                    subject.digest,
                    attachment.subject_digest,
                    subject.content,
                    trust.notation,
                    trust.now,
                )
            )
        else:
            checks.append(_bundle_signature(location, layer, subject, trust, limits, read_staged))
    if overflow is not None:
        checks.append(overflow)
    return checks


def _simple_signing(
    location: str,
    layer: Layer,
    subject: Subject,
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> list[SignatureCheck]:
    encoded = layer.annotations.get(simplesigning.SIGNATURE_ANNOTATION)
    if encoded is None:
        return [
            SignatureCheck.reject(
                location,
                policy.INVALID,
                f"layer has no {simplesigning.SIGNATURE_ANNOTATION} annotation",
            )
        ]
    try:
        signature = decode_signature(encoded)
    except AttachmentError as exc:
        return [SignatureCheck.reject(location, exc.code, exc.message)]
    payload = read_blob(location, layer, limits, read_staged)
    if isinstance(payload, SignatureCheck):
        return [payload]
    signer = identify(location, payload, signature, sha256_hex(payload), layer.annotations, trust)
    if isinstance(signer, SignatureCheck):
        return [signer]
    try:
        claims = simplesigning.parse_payload(payload)
    except simplesigning.PayloadError as exc:
        return [SignatureCheck.reject(location, exc.code or policy.INVALID, str(exc), signer.name)]
    if claims.manifest_digest != subject.digest:
        return [
            SignatureCheck.reject(
                location,
                policy.WRONG_DIGEST,
                f"got signed digest {claims.manifest_digest[:140]}, expected {subject.digest}",
                signer.name,
            )
        ]
    if not simplesigning.names_repository(claims.docker_reference, subject.repositories):
        return [
            SignatureCheck.reject(
                location,
                policy.WRONG_REPOSITORY,
                f"got signed reference {claims.docker_reference[:200]},"
                f" expected {subject.repositories[0]}",
                signer.name,
            )
        ]
    return _accepted(location, signer, subject, f"in {subject.repositories[0]}")


def _accepted(location: str, signer: Signer, subject: Subject, where: str) -> list[SignatureCheck]:
    checks = [
        SignatureCheck.accept(
            location,
            signer.name,
            f"signed by {signer.name} for {subject.digest} {where} ({signer.describe()})",
        )
    ]
    if signer.tlog_problem:
        # rekor: optional: the key signature stands, but a bad promise in
        # its annotations is worth knowing about (THREATS G-06).
        checks.append(
            SignatureCheck.reject(
                location,
                policy.TLOG_INVALID,
                f"transparency log promise ignored: {signer.tlog_problem}",
                signer.name,
            )
        )
    return checks


def verified_bundle(
    location: str,
    layer: Layer,
    subject: Subject,
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> bundles.VerifiedBundle | SignatureCheck:
    """A bundle layer read within limits and verified against the subject, or why not."""
    data = read_blob(location, layer, limits, read_staged)
    if isinstance(data, SignatureCheck):
        return data
    try:
        return bundles.verify_bundle(
            data, bundles.ArtifactRef(subject.digest, subject.content), trust
        )
    except bundles.BundleRejected as exc:
        return SignatureCheck.reject(location, exc.code, exc.message, exc.signer)


def _bundle_signature(
    location: str,
    layer: Layer,
    subject: Subject,
    trust: Trust,
    limits: Limits,
    read_staged: ReadStaged,
) -> SignatureCheck:
    verified = verified_bundle(location, layer, subject, trust, limits, read_staged)
    if isinstance(verified, SignatureCheck):
        return verified
    if verified.kind == "message":
        where = "(a message signature over the manifest digest; no repository is signed)"
    elif verified.statement is None or verified.subject is None:
        return SignatureCheck.reject(location, policy.INVALID, "bundle statement is missing")
    else:
        if verified.statement.predicate_type != dsse.COSIGN_SIGN_PREDICATE:
            return SignatureCheck.reject(
                location,
                policy.WRONG_TYPE,
                f"signed statement is a {verified.statement.predicate_type[:120]} attestation,"
                f" expected an image signature ({dsse.COSIGN_SIGN_PREDICATE})",
                verified.signer,
            )
        name = verified.subject.name
        if name and not simplesigning.names_repository(name, subject.repositories):
            return SignatureCheck.reject(
                location,
                policy.WRONG_REPOSITORY,
                f"got signed subject {name[:200]}, expected {subject.repositories[0]}",
                verified.signer,
            )
        where = f"in {subject.repositories[0]}" if name else "(the statement names no repository)"
    signer = Signer(verified.signer, verified.signer_kind, verified.tlog)
    return _accepted(location, signer, subject, where)[0]


def content_mismatch(data: bytes, digest: str, size: int | None) -> str:
    """Empty when ``data`` is ``size`` bytes hashing to ``digest``; else the problem."""
    if size is not None and len(data) != size:
        return f"got {len(data)} staged bytes for {digest}, expected {size}"
    computed = computed_digest(data, digest)
    if computed != digest:
        return f"got {computed} for the staged bytes, expected {digest}"
    return ""
