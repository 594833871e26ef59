"""The vulnerabilities: key and its per-rule override, read strictly; what the plan carries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.protoconv import rule_to_proto, vulnerabilities_from_proto
from pullguard.v1 import common_pb2
from tests.support.configs import make_config

TOP = {
    "osv": "osv/",
    "deny": {"cvss_min": 7.0, "ids": ["CVE-2024-3094"]},
    "max_age": "7d",
    "allow": [
        {"id": "CVE-2023-4911", "repository": "lab/legacy/*", "until": "2027-01-01", "reason": "x"}
    ],
}


def config(tmp_path: Path, rules: list[dict[str, Any]], top: Any = TOP) -> Config:
    extra: dict[str, Any] = {"policy": {"rules": rules}}
    if top is not None:
        extra["vulnerabilities"] = top
    return make_config(tmp_path, **extra)


def test_every_rule_gets_the_top_level_gate(tmp_path: Path) -> None:
    loaded = config(tmp_path, [{"match": "lab/**", "signature": "none"}])
    assert loaded.vulnerability_database is not None
    assert loaded.vulnerability_database.osv == tmp_path / "osv"
    gate = loaded.policy.rules[0].vulnerabilities
    assert gate.enabled and gate.cvss_min == 7.0 and gate.ids == ("CVE-2024-3094",)
    assert gate.max_age_seconds == 7 * 86400 and gate.on_new == "revoke"
    assert gate.allow[0].until == "2027-01-01"


def test_a_rule_overrides_the_keys_it_gives_or_turns_the_gate_off(tmp_path: Path) -> None:
    loaded = config(
        tmp_path,
        [
            {
                "match": "lab/strict/**",
                "signature": "none",
                "vulnerabilities": {
                    "deny": {"cvss_min": 4.0, "fixed_only": True, "incomplete": False},
                    "on_new": "warn",
                },
            },
            {"match": "lab/tools/**", "signature": "none", "vulnerabilities": "none"},
        ],
    )
    strict, tools = (r.vulnerabilities for r in loaded.policy.rules)
    assert strict.cvss_min == 4.0 and strict.fixed_only and strict.ids == ()  # deny replaced whole
    assert not strict.deny_incomplete and loaded.policy.rules[1].vulnerabilities.enabled is False
    assert (
        config(tmp_path, [{"match": "lab/**", "signature": "none"}])
        .policy.rules[0]
        .vulnerabilities.deny_incomplete
    )  # fail closed unless said otherwise
    assert strict.max_age_seconds == 7 * 86400 and strict.on_new == "warn"  # the rest inherited
    assert not tools.enabled


def test_the_plan_carries_the_gate_and_asks_format_for_an_inventory(tmp_path: Path) -> None:
    loaded = config(tmp_path, [{"match": "lab/**", "signature": "none"}])
    message = rule_to_proto(loaded.policy.rules[0], 10, 1024)
    assert message.layers.inventory and message.vulnerabilities.enabled
    assert (
        vulnerabilities_from_proto(message.vulnerabilities)
        == loaded.policy.rules[0].vulnerabilities
    )
    accepting = replace(
        loaded.policy.rules[0],
        vulnerabilities=replace(loaded.policy.rules[0].vulnerabilities, deny_incomplete=False),
    )
    carried = rule_to_proto(accepting, 10, 1024).vulnerabilities
    assert carried.allow_incomplete and not vulnerabilities_from_proto(carried).deny_incomplete
    plain = config(tmp_path, [{"match": "lab/**", "signature": "none"}], top=None)
    bare = rule_to_proto(plain.policy.rules[0], 10, 1024)
    assert not bare.layers.inventory and not bare.vulnerabilities.enabled


def test_the_gate_is_part_of_the_policy_version(tmp_path: Path) -> None:
    rules = [{"match": "lab/**", "signature": "none"}]
    versions = {
        config(tmp_path, rules).policy_version,
        config(tmp_path, rules, top={**TOP, "deny": {"cvss_min": 9.0}}).policy_version,
        config(tmp_path, rules, top=None).policy_version,
    }
    assert len(versions) == 3


@pytest.mark.parametrize(
    ("top", "rule", "error"),
    [
        ({**TOP, "deny": {"cvss_min": 11}}, None, "vulnerabilities.deny.cvss_min"),
        ({**TOP, "deny": {"ids": ["not an id!"]}}, None, "vulnerabilities.deny.ids[0]"),
        ({**TOP, "max_age": "7 weeks"}, None, "vulnerabilities.max_age"),
        ({**TOP, "max_age": "0d"}, None, "vulnerabilities.max_age"),
        ({**TOP, "max_age": 0}, None, "vulnerabilities.max_age"),
        ({**TOP, "max_age": 1.5}, None, "vulnerabilities.max_age"),
        ({**TOP, "on_new": "ignore"}, None, "vulnerabilities.on_new"),
        ({**TOP, "surprise": 1}, None, "vulnerabilities.surprise"),
        ({"deny": {"cvss_min": 7}}, None, "vulnerabilities.osv"),
        (
            {**TOP, "allow": [{"id": "CVE-1", "until": "someday", "reason": "x"}]},
            None,
            "vulnerabilities.allow[0].until",
        ),
        (
            {**TOP, "allow": [{"id": "CVE-1", "until": "2027-01-01"}]},
            None,
            "vulnerabilities.allow[0].reason",
        ),
        (None, {"deny": {"cvss_min": 7}}, "needs the top-level vulnerabilities key"),
        (TOP, {"osv": "other/"}, "policy.rules[0].vulnerabilities.osv"),
        ({**TOP, "sbom": {"use": "yes"}}, None, "vulnerabilities.sbom.use"),
        ({**TOP, "sbom": {"disagreement": "ignore"}}, None, "vulnerabilities.sbom.disagreement"),
        ({**TOP, "sbom": {"signers": []}}, None, "vulnerabilities.sbom.signers"),
        (TOP, {"sbom": "off"}, "policy.rules[0].vulnerabilities.sbom"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, top: Any, rule: Any, error: str) -> None:
    entry: dict[str, Any] = {"match": "lab/**", "signature": "none"}
    if rule is not None:
        entry["vulnerabilities"] = rule
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, [entry], top=top)
    assert error in raised.value.message


def test_a_gate_needs_layer_inspection(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy.rules\[0\].layers.inspect"):
        config(tmp_path, [{"match": "lab/**", "signature": "none", "layers": {"inspect": False}}])
    # ...unless the rule turns its gate off.
    config(
        tmp_path,
        [
            {
                "match": "lab/**",
                "signature": "none",
                "layers": {"inspect": False},
                "vulnerabilities": "none",
            }
        ],
    )


def test_signed_sboms_are_used_by_default_and_a_rule_may_change_either_key(
    tmp_path: Path,
) -> None:
    loaded = config(
        tmp_path,
        [
            {
                "match": "lab/strict/**",
                "signature": "none",
                "vulnerabilities": {"sbom": {"disagreement": "deny"}},
            },
            {"match": "lab/**", "signature": "none", "vulnerabilities": {"sbom": {"use": False}}},
        ],
        top={**TOP, "sbom": {"disagreement": "warn"}},
    )
    strict, plain = (r.vulnerabilities for r in loaded.policy.rules)
    assert strict.use_sboms and strict.sbom_disagreement == "deny"
    assert not plain.use_sboms and plain.sbom_disagreement == "warn"
    for rule in loaded.policy.rules:
        carried = rule_to_proto(rule, 10, 1024).vulnerabilities
        assert vulnerabilities_from_proto(carried) == rule.vulnerabilities
    # A plan that says nothing reads SBOMs (they can only add packages) and warns.
    bare = vulnerabilities_from_proto(common_pb2.VulnerabilityPolicy(enabled=True))
    assert bare.use_sboms and bare.sbom_disagreement == "warn"
