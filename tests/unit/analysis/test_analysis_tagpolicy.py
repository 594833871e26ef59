"""Tag rules, digest-pull modes, parent indexes and the deny database in the planner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pullguard.services.analysis.planner import DENIED_DIGEST, Planner
from pullguard.services.analysis.reference import INVALID_REFERENCE, Reference, Rejected
from pullguard.services.analysis.tagpolicy import (
    DIGEST_NOT_PINNED,
    DIGEST_PULL_DENIED,
    DIGEST_REQUIRED,
    TAG_DENIED,
    TAG_NOT_ALLOWED,
    TAG_NOT_PINNED,
    RuleReferences,
)
from pullguard.services.runtime.config import Config, Rule, TagRule
from pullguard.services.runtime.denylist import DenyListError
from pullguard.services.runtime.errors import PullguardError
from pullguard.services.runtime.findings import Severity
from tests.support.configs import make_config

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
PARENT = "sha256:" + "9" * 64


def lab_config(tmp_path: Path, tags: dict[str, Any] | None = None, **policy: Any) -> Config:
    rule: dict[str, Any] = {"match": "lab/**"}
    if tags is not None:
        rule["tags"] = tags
    return make_config(tmp_path, policy={"rules": [rule], **policy})


def outcome(planner: Planner, reference: str, parent_index: str = "") -> str:
    """The denying finding's code, or "allow"."""
    verdict, plan = planner.plan("lab/app", reference, parent_index=parent_index)
    if verdict.allowed:
        assert plan is not None
        return "allow"
    assert plan is None
    assert [f.severity for f in verdict.findings] == [Severity.ERROR]
    return verdict.findings[0].code


def rule_of(tmp_path: Path, tags: dict[str, Any]) -> Rule:
    return lab_config(tmp_path, tags).policy.rules[0]


# -- tags.deny ------------------------------------------------------------------------------


def test_denied_tag(tmp_path: Path) -> None:
    planner = Planner(lab_config(tmp_path, {"deny": ["latest", "edge"]}))
    verdict, _ = planner.plan("lab/app", "latest")
    assert [f.code for f in verdict.findings] == [TAG_DENIED]
    assert "tag 'latest' is in tags.deny of rule 0 'lab/**'" in verdict.reason
    assert verdict.findings[0].evidence == {"rule": "0", "tag": "latest"}
    assert outcome(planner, "edge") == TAG_DENIED
    assert outcome(planner, "v1") == "allow"


def test_denied_tags_are_exact(tmp_path: Path) -> None:
    # Tags are case-sensitive names: "Latest" is another tag. An allow-list is
    # the tool for "only these"; deny names exact tags.
    planner = Planner(lab_config(tmp_path, {"deny": ["latest"]}))
    assert outcome(planner, "Latest") == "allow"
    assert outcome(planner, "latest2") == "allow"


# -- tags.allow ------------------------------------------------------------------------------


def test_allowed_tags(tmp_path: Path) -> None:
    planner = Planner(lab_config(tmp_path, {"allow": [r"^v\d+\.\d+$", "^stable$"]}))
    assert outcome(planner, "v1.2") == "allow"
    assert outcome(planner, "stable") == "allow"
    for tag in ("v1.2-debug", "xv1.2", "v1", "stable2", "latest"):
        assert outcome(planner, tag) == TAG_NOT_ALLOWED, tag
    verdict, _ = planner.plan("lab/app", "latest")
    assert r"expected one of ^v\d+\.\d+$, ^stable$" in verdict.reason


def test_deny_wins_over_allow(tmp_path: Path) -> None:
    planner = Planner(lab_config(tmp_path, {"allow": ["^.*$"], "deny": ["latest"]}))
    assert outcome(planner, "latest") == TAG_DENIED
    assert outcome(planner, "v1") == "allow"


def test_allow_uses_fullmatch(tmp_path: Path) -> None:
    # "$" matches before a trailing newline under re.match/search; the grammar
    # keeps newlines out, and fullmatch keeps them out again.
    references = RuleReferences(rule_of(tmp_path, {"allow": ["^v1$"]}))
    assert references.check("lab/app", Reference(tag="v1"), "") == ""
    with pytest.raises(Rejected) as info:
        references.check("lab/app", Reference(tag="v1\n"), "")
    assert info.value.finding.code == TAG_NOT_ALLOWED


def test_tag_length_is_bounded_before_any_regex(tmp_path: Path) -> None:
    references = RuleReferences(rule_of(tmp_path, {"allow": ["^a*$"]}))
    with pytest.raises(Rejected) as info:
        references.check("lab/app", Reference(tag="a" * 129), "")
    assert info.value.finding.code == INVALID_REFERENCE
    assert references.check("lab/app", Reference(tag="a" * 128), "") == ""


# -- tags.require_digest ---------------------------------------------------------------------


def test_require_digest(tmp_path: Path) -> None:
    planner = Planner(lab_config(tmp_path, {"require_digest": True, "allow": ["^v1$"]}))
    verdict, _ = planner.plan("lab/app", "v1")
    assert [f.code for f in verdict.findings] == [DIGEST_REQUIRED]
    assert "got a pull by tag, expected a pull by digest" in verdict.reason
    assert outcome(planner, D1) == "allow"


# -- tags.digest_pulls -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digest_pulls", "pins", "expected"),
    [
        # allow: any digest, unless the rule has pins (then as pinned)
        ("allow", {}, {D1: "allow", D3: "allow"}),
        ("allow", {"v1": D1}, {D1: "allow", D3: DIGEST_NOT_PINNED}),
        # pinned: only pinned digests; without pins, none
        ("pinned", {}, {D1: DIGEST_NOT_PINNED, D3: DIGEST_NOT_PINNED}),
        ("pinned", {"v1": D1}, {D1: "allow", D3: DIGEST_NOT_PINNED}),
        # deny: none, pinned or not
        ("deny", {}, {D1: DIGEST_PULL_DENIED, D3: DIGEST_PULL_DENIED}),
        ("deny", {"v1": D1}, {D1: DIGEST_PULL_DENIED, D3: DIGEST_PULL_DENIED}),
    ],
)
def test_digest_pull_modes(
    tmp_path: Path, digest_pulls: str, pins: dict[str, str], expected: dict[str, str]
) -> None:
    rule: dict[str, Any] = {"match": "lab/**", "tags": {"digest_pulls": digest_pulls}}
    if pins:
        (tmp_path / "pins.yaml").write_text("".join(f"'{t}': '{d}'\n" for t, d in pins.items()))
        rule["pins"] = "pins.yaml"
    planner = Planner(make_config(tmp_path, policy={"rules": [rule]}))
    for digest, code in expected.items():
        assert outcome(planner, digest) == code, digest
        # A child of an admitted index passes in every mode.
        assert outcome(planner, digest, parent_index=PARENT) == "allow", digest
    assert outcome(planner, "v1") == "allow"  # tag pulls are untouched by the mode


def test_digest_pull_messages(tmp_path: Path) -> None:
    planner = Planner(lab_config(tmp_path, {"digest_pulls": "deny"}))
    verdict, _ = planner.plan("lab/app", D1)
    assert "got a pull by digest, expected a pull by tag" in verdict.reason
    assert verdict.findings[0].evidence == {"rule": "0", "digest": D1}
    planner = Planner(lab_config(tmp_path, {"digest_pulls": "pinned"}))
    verdict, _ = planner.plan("lab/app", D1)
    assert "nor listed by an admitted index" in verdict.reason


def test_tag_rules_of_one_rule_do_not_apply_to_another(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        policy={
            "rules": [
                {"match": "lab/strict/*", "tags": {"deny": ["latest"], "digest_pulls": "deny"}},
                {"match": "lab/**"},
            ]
        },
    )
    planner = Planner(config)
    assert planner.plan("lab/strict/app", "latest")[0].findings[0].code == TAG_DENIED
    assert planner.plan("lab/other/app", "latest")[0].allowed
    assert planner.plan("lab/other/app", D1)[0].allowed


def test_unknown_digest_pull_mode_stops_the_service(tmp_path: Path) -> None:
    from dataclasses import replace

    rule = replace(rule_of(tmp_path, {}), tags=TagRule(digest_pulls="sometimes"))
    with pytest.raises(PullguardError, match="digest_pulls 'sometimes'"):
        RuleReferences(rule)


def test_pins_apply_after_tag_rules(tmp_path: Path) -> None:
    (tmp_path / "pins.yaml").write_text(f"'v1': '{D1}'\n'latest': '{D2}'\n")
    config = make_config(
        tmp_path,
        policy={"rules": [{"match": "lab/**", "pins": "pins.yaml", "tags": {"deny": ["latest"]}}]},
    )
    planner = Planner(config)
    assert outcome(planner, "latest") == TAG_DENIED  # pinned, but denied by tag
    assert outcome(planner, "v2") == TAG_NOT_PINNED
    verdict, plan = planner.plan("lab/app", "v1")
    assert verdict.allowed and plan is not None and plan.rule.pinned_digest == D1


# -- the deny database -----------------------------------------------------------------------


def deny_file_config(tmp_path: Path, lines: str) -> tuple[Config, Path]:
    path = tmp_path / "deny.txt"
    path.write_text(lines)
    return lab_config(tmp_path, deny_digests=[D3], deny_digests_file="deny.txt"), path


def test_deny_file_refuses_a_digest_pull(tmp_path: Path) -> None:
    config, _ = deny_file_config(tmp_path, f"# known bad\n{D1}  # incident 42\n\n")
    planner = Planner(config)
    verdict, _ = planner.plan("lab/app", D1)
    assert [f.code for f in verdict.findings] == [DENIED_DIGEST]
    assert f"digest {D1} is in the deny database" in verdict.reason
    assert outcome(planner, D3) == DENIED_DIGEST  # the inline list still counts
    assert outcome(planner, D2) == "allow"
    assert outcome(planner, D2, parent_index=D1) == DENIED_DIGEST


def test_deny_file_is_reloaded_on_change(tmp_path: Path) -> None:
    config, path = deny_file_config(tmp_path, f"{D1}\n")
    planner = Planner(config)
    assert outcome(planner, D2) == "allow"
    path.write_text(f"{D1}\n{D2}\n")
    os.utime(path, ns=(1, 1))  # a different stamp even within one clock tick
    assert outcome(planner, D2) == DENIED_DIGEST


def test_plan_carries_only_the_inline_deny_digests(tmp_path: Path) -> None:
    config, _ = deny_file_config(tmp_path, f"{D1}\n")
    verdict, plan = Planner(config).plan("lab/app", "v1")
    assert verdict.allowed and plan is not None
    assert plan.deny_digests == (D3,)


def test_unreadable_deny_file_is_an_error_not_an_allow(tmp_path: Path) -> None:
    config, path = deny_file_config(tmp_path, f"{D1}\n")
    planner = Planner(config)
    path.unlink()
    with pytest.raises(DenyListError, match="deny database"):
        planner.plan("lab/app", D2)


def test_malformed_deny_file_is_an_error_not_an_allow(tmp_path: Path) -> None:
    config, _ = deny_file_config(tmp_path, f"{D1}\nsha256:not-hex\n")
    with pytest.raises(DenyListError, match="deny.txt:2"):
        Planner(config).plan("lab/app", D2)


def test_deny_file_is_not_read_for_tag_pulls(tmp_path: Path) -> None:
    # A tag's digest is known only after the fetch; hashverify checks it then,
    # against the same file.
    config, path = deny_file_config(tmp_path, f"{D1}\n")
    path.unlink()
    assert outcome(Planner(config), "v1") == "allow"
