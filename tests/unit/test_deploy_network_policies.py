"""The k8s network policies keep their promise: only fetcher reaches the
internet, and the opt-in target-egress component opens the gateway to the
target registry alone, to nothing routable until an operator names it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

COMPONENTS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "components"


def policies(component: str) -> list[dict[str, Any]]:
    directory = COMPONENTS / component
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    found = []
    for resource in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((directory / resource).read_text()) if d]
    assert all(d["kind"] == "NetworkPolicy" for d in found)
    return found


def egress_cidrs(policy: dict[str, Any]) -> list[str]:
    return [
        peer["ipBlock"]["cidr"]
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]


def component_of(policy: dict[str, Any]) -> str | None:
    labels: dict[str, str] = policy["spec"]["podSelector"].get("matchLabels", {})
    return labels.get("app.kubernetes.io/component")


def test_only_fetcher_may_reach_addresses_outside_the_cluster() -> None:
    for policy in policies("network-policies"):
        if egress_cidrs(policy):
            assert component_of(policy) == "fetcher", policy["metadata"]["name"]


def test_target_egress_opens_only_the_gateway_and_nothing_routable_by_default() -> None:
    (policy,) = policies("target-egress")

    assert component_of(policy) == "gateway"
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert "ingress" not in policy["spec"]
    for cidr in egress_cidrs(policy):
        # TEST-NET-1: documentation only, never routed.
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("192.0.2.0/24"))
    for rule in policy["spec"]["egress"]:
        assert rule["to"], "a rule without peers would allow every destination"
        assert rule.get("ports"), "a rule without ports would allow every port"
