"""deploy/k8s/examples/admitted-by-pullguard.yaml names what pullguard really writes.

No CRD schema of policy-controller or Kyverno is at hand offline, so this
checks the parts that must agree with pullguard's code: the predicate type
and the predicate fields a condition reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pullguard.gateway.attest import PREDICATE_TYPE, admission_predicate
from pullguard.gateway.report import Report
from pullguard.v1 import common_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy/k8s/examples/admitted-by-pullguard.yaml"


def _documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d}


def test_policy_controller_asks_for_pullguards_predicate_type() -> None:
    policy = _documents()["ClusterImagePolicy"]
    (authority,) = policy["spec"]["authorities"]
    assert "ctlog" not in authority  # no Rekor: pullguard writes no log entry
    assert [a["predicateType"] for a in authority["attestations"]] == [PREDICATE_TYPE]
    assert PREDICATE_TYPE in authority["attestations"][0]["policy"]["data"]


def test_kyverno_conditions_read_fields_the_predicate_has() -> None:
    rule = _documents()["ClusterPolicy"]["spec"]["rules"][0]
    (attestation,) = rule["verifyImages"][0]["attestations"]
    assert attestation["type"] == PREDICATE_TYPE
    plan = common_pb2.Plan(policy_version="v1")
    plan.upstream.alias = "docker.io"
    predicate = admission_predicate(Report("d", "lab/app", "v1"), plan, "sha256:" + "0" * 64, "")
    for condition in attestation["conditions"][0]["all"]:
        path = condition["key"].strip("{} ").split(".")
        value: Any = predicate
        for name in path:
            value = value[name]
        assert value == "docker.io"
