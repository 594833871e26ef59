"""Gateway units of one pull, against a typed LayerClients, without services.

Signature discovery asks each artifact source for candidates (cosign's
``.sig`` and ``.att`` tags, the referrers API or its tag schema) and hands
them to the signature layer by kind; a pull's step names are one enum that
release rules key on. The fake below answers only what a fetcher would
answer to these lookups: it is a typed ``LayerClients``, no ``type: ignore``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.discovery import Discovery
from pullguard.gateway.pull import LayerClients, Pull
from pullguard.gateway.release import WAIVABLE, ReevaluationOptions, ReleaseOptions
from pullguard.gateway.report import Report, report_to_proto
from pullguard.gateway.steps import StepName
from pullguard.services.runtime.staging import StagingStore
from pullguard.v1 import common_pb2, fetcher_pb2
from tests.support.configs import make_config

DIGEST = "sha256:" + "a" * 64
REFERRER = "sha256:" + "b" * 64
GONE = "sha256:" + "c" * 64
ALLOW = common_pb2.Verdict(decision=common_pb2.ALLOW)


class FetcherLookups:
    """The fetcher's answers: which tags and referrers exist; every call is logged."""

    def __init__(self, tags: set[str], referrers: list[str] | None) -> None:
        self.tags = tags
        self.referrers = referrers
        self.calls: list[str] = []

    async def call(
        self, layer: str, method: str, request: Any, timeout: float | None = None
    ) -> Any:
        if method == "ListReferrers":
            self.calls.append("referrers")
            if self.referrers is None:
                return fetcher_pb2.ListReferrersResponse(supported=False)
            return fetcher_pb2.ListReferrersResponse(
                supported=True,
                verdict=ALLOW,
                referrers=[common_pb2.Descriptor(digest=d) for d in self.referrers],
            )
        assert (layer, method) == ("fetcher", "FetchArtifact")
        name = request.tag or request.reference
        self.calls.append(name)
        found = name in self.tags or name == REFERRER
        return fetcher_pb2.FetchArtifactResponse(found=found, verdict=ALLOW)

    async def close(self) -> None:
        return None


def _pull(tmp_path: Path, clients: LayerClients) -> Pull:
    config = make_config(tmp_path)
    report = Report(decision_id="d1", client_name="lab/app", reference="v1")
    pull = Pull(
        report,
        admit=True,
        config=config,
        clients=clients,
        decisions=DecisionLog(config.state_dir),
        staging=StagingStore(config.state_dir / "staging"),
    )
    pull.plan = common_pb2.Plan(ref=common_pb2.ImageRef(upstream_alias="lab", repository="app"))
    return pull


async def _find(
    tmp_path: Path, fetcher: FetcherLookups, *, signatures: bool, attestations: bool
) -> tuple[list[str], list[str]]:
    pull = _pull(tmp_path, fetcher)
    discovery = Discovery(pull.call_tuple, pull.require, pull.record_provenance, pull.limits)
    found = await discovery.find(
        pull.session, pull.plan, DIGEST, signatures=signatures, attestations=attestations
    )
    return [a.location for a in found.signatures], [a.location for a in found.attestations]


async def test_signatures_come_from_the_sig_tag_and_the_referrers(tmp_path: Path) -> None:
    tag = DIGEST.replace(":", "-")
    fetcher = FetcherLookups({f"{tag}.sig", f"{tag}.att"}, [REFERRER, GONE])
    sigs, atts = await _find(tmp_path, fetcher, signatures=True, attestations=False)
    assert sigs == [f"tag:app:{tag}.sig", f"referrer:app@{REFERRER}"]
    assert atts == []
    # The .att tag is not looked up when no attestation is wanted; a listed
    # referrer that is gone is no candidate and no error.
    assert f"{tag}.att" not in fetcher.calls and GONE in fetcher.calls


async def test_a_referrer_is_a_candidate_of_every_wanted_kind(tmp_path: Path) -> None:
    tag = DIGEST.replace(":", "-")
    fetcher = FetcherLookups({f"{tag}.att"}, [REFERRER])
    sigs, atts = await _find(tmp_path, fetcher, signatures=True, attestations=True)
    assert sigs == [f"referrer:app@{REFERRER}"]
    assert atts == [f"tag:app:{tag}.att", f"referrer:app@{REFERRER}"]


async def test_no_referrers_support_yields_only_tags(tmp_path: Path) -> None:
    tag = DIGEST.replace(":", "-")
    fetcher = FetcherLookups({f"{tag}.sig"}, None)
    sigs, atts = await _find(tmp_path, fetcher, signatures=True, attestations=False)
    assert sigs == [f"tag:app:{tag}.sig"] and atts == []


def test_waivable_steps_are_step_names() -> None:
    for layer, step in WAIVABLE:
        assert isinstance(step, StepName), (layer, step)


def test_report_carries_typed_options_and_converts_once(tmp_path: Path) -> None:
    report = Report(decision_id="d2", client_name="lab/app", reference="v1")
    report.release = ReleaseOptions("q1", DIGEST, frozenset({"b.x", "a.y"}), "ok", "ops")
    report.reevaluation = ReevaluationOptions("d0", "p0", force=True)
    verdict = common_pb2.Verdict(decision=common_pb2.DENY)
    verdict.findings.add(code="format.setuid", severity=common_pb2.ERROR, message="setuid")
    assert not report.add("format", StepName.LAYERS, verdict, 1.0)
    data = report.as_json()
    assert data["release"]["waivers"] == ["a.y", "b.x"]
    assert data["reevaluation"] == {
        "previous_decision": "d0",
        "previous_policy": "p0",
        "force": True,
    }
    assert data["layers"][0]["step"] == "layers"
    proto = report_to_proto(data)
    assert proto.denied_by == "format" and proto.reason == "setuid"
    assert proto.layers[0].verdict.findings[0].severity == common_pb2.ERROR
