"""gRPC servicer of the signature layer: proto in, domain checks, proto out.

It owns the staging store (the domain reads staged bytes only through the
``read_staged`` function given here) and the trusted roots: each distinct
``trusted_root_json`` (or the production root shipped with sigstore, when
the rule gives none) is parsed once, for the legacy path and for the
sigstore library, and kept in a small cache. A request the check cannot run
on (an unset signature mode or rekor setting, a malformed digest, a key,
identity or trusted root that does not load, content missing from staging)
is a gRPC error, never an ALLOW.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from datetime import UTC, datetime

import grpc

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import ConfigError, InvalidRequest, StagingError
from pullguard.services.runtime.protoconv import (
    package_to_proto,
    rekor_required_from_proto,
    signature_limits_from_proto,
    signature_mode_from_proto,
    verdict_to_proto,
)
from pullguard.services.runtime.staging import StagingStore
from pullguard.services.signature import simplesigning
from pullguard.services.signature.attestations import AttestationOutcome, verify_attestations
from pullguard.services.signature.backend import BundleFailure
from pullguard.services.signature.identity import IdentityConfigError, load_signers
from pullguard.services.signature.keys import TrustMaterialError, load_trusted_keys
from pullguard.services.signature.notation.wire import notation_trust_from_proto
from pullguard.services.signature.policy import Mode, Requirement, SignatureCheck, evaluate
from pullguard.services.signature.sboms import SbomOutcome, VerifiedSbom, verify_sboms
from pullguard.services.signature.sigstore_adapter import SigstoreTrust, production_trust_root
from pullguard.services.signature.trust import Trust
from pullguard.services.signature.trustroot import TrustRoot, TrustRootError, parse_trust_root
from pullguard.services.signature.verifier import (
    Artifact,
    Limits,
    ReadStaged,
    Subject,
    content_mismatch,
    verify_signatures,
)
from pullguard.v1 import common_pb2, inventory_pb2, signature_pb2, signature_pb2_grpc

#: Distinct trusted roots kept parsed.
_ROOT_CACHE = 16


def requirement_from_proto(message: common_pb2.SignaturePolicy) -> Requirement:
    mode = signature_mode_from_proto(message)
    if message.threshold < 0:
        raise InvalidRequest(f"signature threshold {message.threshold} is negative")
    return Requirement(mode=mode, threshold=message.threshold)


def subject_repositories(plan: common_pb2.Plan) -> tuple[str, ...]:
    """Names a signed reference may give: the rule's signed_identity, else the upstream's."""
    identity = plan.rule.signature.signed_identity
    if identity:
        host, _, repository = identity.partition("/")
        if not host or not repository:
            raise InvalidRequest(f"signed_identity {identity[:100]!r} is not <host>/<repository>")
        return simplesigning.expected_repositories(host, repository)
    host = plan.upstream.canonical_host
    repository = plan.ref.repository
    if not host or not repository:
        raise InvalidRequest("the plan needs upstream.canonical_host and ref.repository")
    return simplesigning.expected_repositories(host, repository)


def checked_digest(digest: str) -> str:
    try:
        parse_digest(digest)
    except DigestSyntaxError as exc:
        raise InvalidRequest(f"digest: {exc}") from None
    return digest


def artifact_from_proto(message: signature_pb2.SignatureArtifact) -> Artifact:
    key = message.manifest.staged_key
    try:
        parse_digest(key)
    except DigestSyntaxError as exc:
        raise InvalidRequest(
            f"signature artifact {message.location!r}: staged key: {exc}"
        ) from None
    return Artifact(location=message.location or f"staged:{key}", manifest_key=key)


def results_to_proto(checks: tuple[SignatureCheck, ...]) -> list[signature_pb2.SignatureResult]:
    return [
        signature_pb2.SignatureResult(
            location=check.location,
            accepted=check.accepted,
            signer=check.signer,
            reason=check.reason,
            code=check.code,
        )
        for check in checks
    ]


def sbom_to_proto(sbom: VerifiedSbom) -> inventory_pb2.Sbom:
    return inventory_pb2.Sbom(
        format=sbom.format,
        predicate_type=sbom.predicate_type,
        signer=sbom.signer,
        found_at=sbom.found_at,
        digest=sbom.digest,
        packages=[package_to_proto(p) for p in sbom.packages],
        skipped=sbom.skipped,
        incomplete=list(sbom.incomplete),
    )


class TrustRoots:
    """Parsed trusted roots (legacy view and sigstore library), by document."""

    def __init__(self, size: int = _ROOT_CACHE) -> None:
        self._size = size
        self._cache: OrderedDict[bytes, tuple[TrustRoot, SigstoreTrust]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: bytes) -> tuple[TrustRoot, SigstoreTrust]:
        with self._lock:
            found = self._cache.get(text)
            if found is not None:
                self._cache.move_to_end(text)
                return found
        root = parse_trust_root(text)
        loaded = (root, SigstoreTrust(text))
        with self._lock:
            self._cache[text] = loaded
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return loaded


def trust_from_proto(message: common_pb2.SignaturePolicy, roots: TrustRoots, where: str) -> Trust:
    """The rule's trust material; ConfigError when some of it cannot be used."""
    rekor_required = rekor_required_from_proto(message, where)
    try:
        keys = load_trusted_keys((k.name, k.pem) for k in message.keys)
        signers = load_signers((k.issuer, k.subject, k.subject_regex) for k in message.keyless)
    except TrustMaterialError as exc:
        raise ConfigError(exc.name, f"{where}.keys", exc.problem) from None
    except IdentityConfigError as exc:
        raise ConfigError("policy", f"{where}.keyless", str(exc)) from None
    text = message.trusted_root_json.encode("utf-8") or production_trust_root()
    try:
        root, backend = roots.get(text)
    except (TrustRootError, BundleFailure) as exc:
        raise ConfigError("policy", f"{where}.trusted_root", str(exc)) from None
    return Trust(
        keys=keys,
        keyless=signers,
        root=root,
        rekor_required=rekor_required,
        now=datetime.now(UTC),
        bundles=backend,
        notation=notation_trust_from_proto(message, where),
    )


class SignatureServicer(signature_pb2_grpc.SignatureServicer):  # type: ignore[misc]
    """Verifies staged signatures and attestations offline against the rule's trust."""

    def __init__(self, config: Config) -> None:
        self._staging_store = StagingStore(config.state_dir / "staging")
        self._config_limits = config.limits
        self._roots = TrustRoots()

    def _limits(self, message: common_pb2.SignaturePolicy) -> Limits:
        signatures, payload_bytes = signature_limits_from_proto(message)
        return Limits(
            manifest_bytes=self._config_limits.manifest_bytes,
            payload_bytes=payload_bytes,
            signatures=signatures,
        )

    def _subject(self, session: str, plan: common_pb2.Plan, digest: str) -> Subject:
        content = None
        limit = self._config_limits.manifest_bytes
        if self._staging_store.exists(session, digest):
            try:
                data = self._staging_store.read(session, digest, limit)
            except StagingError:
                data = b""
            if data and not content_mismatch(data, digest, None):
                content = data
        return Subject(checked_digest(digest), subject_repositories(plan), content)

    def _reader(self, session: str) -> ReadStaged:
        store = self._staging_store

        def read_staged(key: str, limit: int) -> bytes:
            with store.open(session, key) as handle:
                return handle.read(limit + 1)

        return read_staged

    async def VerifySignatures(  # noqa: N802 - gRPC method name
        self, request: signature_pb2.VerifySignaturesRequest, context: grpc.aio.ServicerContext
    ) -> signature_pb2.VerifySignaturesResponse:
        message = request.plan.rule.signature
        requirement = requirement_from_proto(message)
        if requirement.mode is Mode.NONE:
            # Nothing is read: a rule without signatures needs no artifacts.
            return signature_pb2.VerifySignaturesResponse(
                verdict=verdict_to_proto(evaluate(requirement, ()))
            )
        if not request.session:
            raise InvalidRequest("VerifySignatures needs a staging session")
        subject = self._subject(request.session, request.plan, checked_digest(request.digest))
        artifacts = [artifact_from_proto(a) for a in request.artifacts]
        trust = await asyncio.to_thread(trust_from_proto, message, self._roots, "signature")
        outcome = await asyncio.to_thread(
            verify_signatures,
            requirement,
            subject,
            artifacts,
            trust,
            self._limits(message),
            self._reader(request.session),
        )
        return signature_pb2.VerifySignaturesResponse(
            verdict=verdict_to_proto(outcome.verdict),
            signatures=results_to_proto(outcome.checks),
        )

    async def VerifyAttestations(  # noqa: N802 - gRPC method name
        self, request: signature_pb2.VerifyAttestationsRequest, context: grpc.aio.ServicerContext
    ) -> signature_pb2.VerifyAttestationsResponse:
        message = request.plan.rule.provenance.signers
        requirement = requirement_from_proto(message)
        if not request.session:
            raise InvalidRequest("VerifyAttestations needs a staging session")
        digest = checked_digest(request.digest)
        subject = self._subject(request.session, request.plan, digest)
        artifacts = [artifact_from_proto(a) for a in request.artifacts]
        trust = None
        if requirement.mode is not Mode.NONE:
            trust = await asyncio.to_thread(
                trust_from_proto, message, self._roots, "provenance.signers"
            )
        outcome: AttestationOutcome = await asyncio.to_thread(
            verify_attestations,
            subject,
            artifacts,
            trust,
            self._limits(message),
            self._reader(request.session),
        )
        return signature_pb2.VerifyAttestationsResponse(
            verdict=verdict_to_proto(outcome.verdict),
            statements=[
                common_pb2.VerifiedProvenance(
                    predicate_type=s.predicate_type,
                    builder_id=s.builder_id,
                    source_repository=s.source_repository,
                    source_digest=s.source_digest,
                    signer=s.signer,
                    found_at=s.found_at,
                    subject_digest=digest,
                )
                for s in outcome.statements
            ],
            attestations=results_to_proto(outcome.checks),
        )

    async def VerifySboms(  # noqa: N802 - gRPC method name
        self, request: signature_pb2.VerifySbomsRequest, context: grpc.aio.ServicerContext
    ) -> signature_pb2.VerifySbomsResponse:
        """SBOM attestations verified under the rule's signature trust (not provenance's)."""
        message = request.plan.rule.signature
        requirement = requirement_from_proto(message)
        if not request.session:
            raise InvalidRequest("VerifySboms needs a staging session")
        digest = checked_digest(request.digest)
        subject = self._subject(request.session, request.plan, digest)
        artifacts = [artifact_from_proto(a) for a in request.artifacts]
        trust = None
        if requirement.mode is not Mode.NONE:
            trust = await asyncio.to_thread(trust_from_proto, message, self._roots, "signature")
        outcome: SbomOutcome = await asyncio.to_thread(
            verify_sboms,
            subject,
            artifacts,
            trust,
            self._limits(message),
            self._reader(request.session),
        )
        return signature_pb2.VerifySbomsResponse(
            verdict=verdict_to_proto(outcome.verdict),
            sboms=[sbom_to_proto(s) for s in outcome.sboms],
            attestations=results_to_proto(outcome.checks),
        )


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Signature servicer to ``server``; returns its full service name."""
    signature_pb2_grpc.add_SignatureServicer_to_server(  # type: ignore[no-untyped-call]
        SignatureServicer(config), server
    )
    return [signature_pb2.DESCRIPTOR.services_by_name["Signature"].full_name]
