"""gRPC servicer of the analysis layer: proto in, planner, proto out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TypeVar

import grpc

from pullguard.services.analysis.planner import PlanData, Planner
from pullguard.services.runtime.config import (
    Config,
    KeylessIdentity,
    LayerRule,
    ProvenanceRule,
    SignatureRule,
    TagRule,
)
from pullguard.services.runtime.errors import PullguardError
from pullguard.services.runtime.protoconv import verdict_to_proto
from pullguard.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2

_SIGNATURE_MODES = {
    "none": common_pb2.SignaturePolicy.NONE,
    "enforce": common_pb2.SignaturePolicy.ENFORCE,
    "warn": common_pb2.SignaturePolicy.WARN,
}
_REKOR = {
    "required": common_pb2.SignaturePolicy.REQUIRED,
    "optional": common_pb2.SignaturePolicy.OPTIONAL,
}
_Enum = TypeVar("_Enum")
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _bounded(value: int, maximum: int) -> int:
    """A configured limit in the proto's range. A larger limit is cut to the
    largest the field holds, which is stricter, never looser."""
    return min(value, maximum)


def _known(table: Mapping[str, _Enum], value: str, what: str) -> _Enum:
    number = table.get(value)
    if number is None:
        # An unknown value must never travel as *_UNSPECIFIED, NONE or OPTIONAL.
        raise PullguardError(f"unknown {what} {value!r}")
    return number


def signature_to_proto(
    rule: SignatureRule, max_signatures: int, max_signature_bytes: int, where: str
) -> common_pb2.SignaturePolicy:
    """A rule's (or provenance signers') signature requirements, with the limits."""
    return common_pb2.SignaturePolicy(
        mode=_known(_SIGNATURE_MODES, rule.mode, f"{where} signature mode"),
        keys=[common_pb2.PublicKey(name=name, pem=pem) for name, pem in rule.keys],
        threshold=_bounded(rule.threshold, _INT32_MAX),
        keyless=[_keyless_to_proto(identity) for identity in rule.keyless],
        trusted_root_json=rule.trusted_root,
        rekor=_known(_REKOR, rule.rekor, f"{where} rekor setting"),
        signature_repository=rule.repository,
        signed_identity=rule.identity,
        max_signatures=_bounded(max_signatures, _INT32_MAX),
        max_signature_bytes=_bounded(max_signature_bytes, _INT64_MAX),
    )


def _keyless_to_proto(identity: KeylessIdentity) -> common_pb2.KeylessIdentity:
    return common_pb2.KeylessIdentity(
        issuer=identity.issuer, subject=identity.subject, subject_regex=identity.subject_regex
    )


def _tags_to_proto(tags: TagRule) -> common_pb2.TagPolicy:
    return common_pb2.TagPolicy(
        deny=list(tags.deny),
        allow=list(tags.allow),
        require_digest=tags.require_digest,
        digest_pulls=tags.digest_pulls,
    )


def _layers_to_proto(layers: LayerRule) -> common_pb2.LayerPolicy:
    return common_pb2.LayerPolicy(
        inspect=layers.inspect,
        setuid=layers.setuid,
        devices=layers.devices,
        max_uncompressed_bytes=_bounded(layers.max_uncompressed_bytes, _INT64_MAX),
        max_entries=_bounded(layers.max_entries, _INT64_MAX),
        max_ratio=_bounded(layers.max_ratio, _INT64_MAX),
    )


def _provenance_to_proto(
    provenance: ProvenanceRule, max_signatures: int, max_signature_bytes: int, where: str
) -> common_pb2.ProvenancePolicy:
    return common_pb2.ProvenancePolicy(
        required=provenance.required,
        builder_ids=list(provenance.builder_ids),
        source_repositories=list(provenance.source_repositories),
        signers=signature_to_proto(
            provenance.signers, max_signatures, max_signature_bytes, f"{where} provenance"
        ),
    )


def plan_to_proto(plan: PlanData) -> common_pb2.Plan:
    """The wire form of a plan. Credentials are not part of PlanData at all."""
    rule = plan.rule
    where = f"rule {rule.index}"
    return common_pb2.Plan(
        ref=common_pb2.ImageRef(
            upstream_alias=plan.upstream_alias,
            repository=plan.repository,
            tag=plan.tag,
            digest=plan.digest,
        ),
        upstream=common_pb2.UpstreamInfo(
            alias=plan.upstream.alias,
            url=plan.upstream.url,
            insecure=plan.upstream.insecure,
            redirect_hosts=list(plan.upstream.redirect_hosts),
            canonical_host=plan.upstream.canonical_host,
            realm_hosts=list(plan.upstream.realm_hosts),
            tls=common_pb2.TlsPolicy(
                spki_sha256=list(plan.upstream.tls_spki_sha256),
                custom_ca=plan.upstream.tls_custom_ca,
            ),
        ),
        rule=common_pb2.RulePolicy(
            index=rule.index,
            match=rule.match,
            signature=signature_to_proto(
                rule.signature, plan.max_signatures, plan.max_signature_bytes, where
            ),
            pinned_digest=rule.pinned_digest,
            foreign_url_hosts=list(rule.foreign_url_hosts),
            layer_media_types=list(rule.layer_media_types),
            tags=_tags_to_proto(rule.tags),
            layers=_layers_to_proto(rule.layers),
            approved_sources=list(rule.approved_sources),
            require_source_annotation=rule.require_source_annotation,
            provenance=_provenance_to_proto(
                rule.provenance, plan.max_signatures, plan.max_signature_bytes, where
            ),
            artifact_types=list(rule.artifact_types),
        ),
        policy_version=plan.policy_version,
        client_name=plan.client_name,
        deny_digests=list(plan.deny_digests),
        parent_index=plan.parent_index,
    )


class AnalysisServicer(analysis_pb2_grpc.AnalysisServicer):  # type: ignore[misc]
    """Plans pulls from the configuration and the deny database; no network."""

    def __init__(self, config: Config) -> None:
        self._planner = Planner(config)

    async def Plan(  # noqa: N802 - gRPC method name
        self, request: analysis_pb2.PlanRequest, context: grpc.aio.ServicerContext
    ) -> analysis_pb2.PlanResponse:
        # In a thread: the deny database file may be large, and re-reading it
        # after a change must not stall the event loop (health checks included).
        verdict, plan = await asyncio.to_thread(
            self._planner.plan,
            request.name,
            request.reference,
            request.repository_only,
            request.parent_index,
        )
        response = analysis_pb2.PlanResponse(verdict=verdict_to_proto(verdict))
        if plan is not None and verdict.allowed:
            response.plan.CopyFrom(plan_to_proto(plan))
        return response


def register(server: grpc.aio.Server, config: Config) -> list[str]:
    """Add the Analysis servicer to ``server``; returns its full service name."""
    analysis_pb2_grpc.add_AnalysisServicer_to_server(AnalysisServicer(config), server)  # type: ignore[no-untyped-call]
    return [analysis_pb2.DESCRIPTOR.services_by_name["Analysis"].full_name]
