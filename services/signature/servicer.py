"""gRPC servicer of the signature layer: proto in, domain checks, proto out.

It owns the staging store: the domain reads staged bytes only through the
``read_staged`` function given here. A request the check cannot run on (an
unset signature mode, a malformed digest, a key that does not load, content
missing from staging) is a gRPC error, never an ALLOW.
"""

from __future__ import annotations

import asyncio

import grpc

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import ConfigError, InvalidRequest
from pullguard.services.runtime.protoconv import verdict_to_proto
from pullguard.services.runtime.staging import StagingStore
from pullguard.services.signature import simplesigning
from pullguard.services.signature.keys import KeyTrust, TrustMaterialError, load_trusted_keys
from pullguard.services.signature.policy import Mode, Requirement, evaluate
from pullguard.services.signature.verifier import (
    Artifact,
    Limits,
    Outcome,
    Subject,
    verify_signatures,
)
from pullguard.v1 import common_pb2, signature_pb2, signature_pb2_grpc

_MODES = {
    common_pb2.SignaturePolicy.NONE: Mode.NONE,
    common_pb2.SignaturePolicy.ENFORCE: Mode.ENFORCE,
    common_pb2.SignaturePolicy.WARN: Mode.WARN,
}


def requirement_from_proto(message: common_pb2.SignaturePolicy) -> Requirement:
    mode = _MODES.get(message.mode)
    if mode is None:
        # An unset or unknown mode must never pass as "nothing required".
        raise InvalidRequest(f"signature policy has no known mode (got {message.mode})")
    if message.threshold < 0:
        raise InvalidRequest(f"signature threshold {message.threshold} is negative")
    return Requirement(mode=mode, threshold=message.threshold)


def subject_from_request(request: signature_pb2.VerifySignaturesRequest) -> Subject:
    host = request.plan.upstream.canonical_host
    repository = request.plan.ref.repository
    if not host or not repository:
        raise InvalidRequest(
            "VerifySignatures needs plan.upstream.canonical_host and plan.ref.repository"
        )
    try:
        parse_digest(request.digest)
    except DigestSyntaxError as exc:
        raise InvalidRequest(f"VerifySignatures digest: {exc}") from None
    return Subject(request.digest, simplesigning.expected_repositories(host, repository))


def artifact_from_proto(message: signature_pb2.SignatureArtifact) -> Artifact:
    key = message.manifest.staged_key
    try:
        parse_digest(key)
    except DigestSyntaxError as exc:
        raise InvalidRequest(
            f"signature artifact {message.location!r}: staged key: {exc}"
        ) from None
    return Artifact(location=message.location or f"staged:{key}", manifest_key=key)


def results_to_proto(outcome: Outcome) -> list[signature_pb2.SignatureResult]:
    return [
        signature_pb2.SignatureResult(
            location=check.location,
            accepted=check.accepted,
            signer=check.signer,
            reason=check.reason,
            code=check.code,
        )
        for check in outcome.checks
    ]


class SignatureServicer(signature_pb2_grpc.SignatureServicer):  # type: ignore[misc]
    """Verifies staged cosign signatures offline against the rule's keys."""

    def __init__(self, config: Config) -> None:
        self._staging_store = StagingStore(config.state_dir / "staging")
        self._limits = Limits(
            manifest_bytes=config.limits.manifest_bytes,
            payload_bytes=config.limits.signature_bytes,
            signatures=config.limits.signatures,
        )

    async def VerifySignatures(  # noqa: N802 - gRPC method name
        self, request: signature_pb2.VerifySignaturesRequest, context: grpc.aio.ServicerContext
    ) -> signature_pb2.VerifySignaturesResponse:
        requirement = requirement_from_proto(request.plan.rule.signature)
        if requirement.mode is Mode.NONE:
            # Nothing is read: a rule without signatures needs no artifacts.
            return signature_pb2.VerifySignaturesResponse(
                verdict=verdict_to_proto(evaluate(requirement, ()))
            )
        if not request.session:
            raise InvalidRequest("VerifySignatures needs a staging session")
        subject = subject_from_request(request)
        artifacts = [artifact_from_proto(a) for a in request.artifacts]
        try:
            keys = load_trusted_keys((k.name, k.pem) for k in request.plan.rule.signature.keys)
        except TrustMaterialError as exc:
            raise ConfigError(exc.name, "", exc.problem) from None
        session = request.session

        def read_staged(key: str, limit: int) -> bytes:
            with self._staging_store.open(session, key) as handle:
                return handle.read(limit + 1)

        outcome = await asyncio.to_thread(
            verify_signatures,
            requirement,
            subject,
            artifacts,
            KeyTrust(keys),
            self._limits,
            read_staged,
        )
        return signature_pb2.VerifySignaturesResponse(
            verdict=verdict_to_proto(outcome.verdict), signatures=results_to_proto(outcome)
        )


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Signature servicer to ``server``; returns its full service name."""
    signature_pb2_grpc.add_SignatureServicer_to_server(  # type: ignore[no-untyped-call]
        SignatureServicer(config), server
    )
    return [signature_pb2.DESCRIPTOR.services_by_name["Signature"].full_name]
