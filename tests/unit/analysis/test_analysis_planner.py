"""Planner: alias resolution, deny globs, first-match rules, pins (THREATS P-01..P-03)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.services.analysis.planner import (
    DENIED_DIGEST,
    DENIED_REPOSITORY,
    NO_RULE,
    RULE,
    UNKNOWN_UPSTREAM,
    PlanData,
    Planner,
)
from pullguard.services.analysis.reference import (
    INVALID_NAME,
    INVALID_REFERENCE,
    UNSUPPORTED_DIGEST,
)
from pullguard.services.analysis.tagpolicy import DIGEST_NOT_PINNED, TAG_NOT_PINNED
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.findings import Severity, Verdict
from tests.support.configs import make_config

PIN_72 = "sha256:" + "a" * 64
PIN_724 = "sha256:" + "b" * 64
UNPINNED = "sha256:" + "c" * 64
BAD = "sha256:" + "d" * 64


def write_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def policy_config(tmp_path: Path, **overrides: Any) -> Config:
    """Docker Hub's official images and a lab registry; nothing else has a rule."""
    (tmp_path / "pins.yaml").write_text(f"'7.2': '{PIN_72}'\n'7.2.4': '{PIN_724}'\n")
    write_key(tmp_path / "cosign.pub")
    settings: dict[str, Any] = {
        "upstreams": {
            "docker.io": {"url": "https://registry-1.docker.io"},
            "ghcr.io": {"url": "https://ghcr.io"},
            "registry.k8s.io": {"url": "https://registry.k8s.io"},
            "lab": {"url": "http://127.0.0.1:5001", "insecure": True},
            "127.0.0.1:5002": {"url": "http://127.0.0.1:5002", "insecure": True},
        },
        "default_upstream": "docker.io",
        "policy": {
            "rules": [
                {"match": "docker.io/library/redis", "pins": "pins.yaml"},
                {"match": "docker.io/library/*", "signature": "none"},
                {
                    "match": "lab/signed/*",
                    "signature": {"keys": ["cosign.pub"], "mode": "warn"},
                    "foreign_urls": ["*.example.com"],
                    "layer_media_types": ["application/vnd.oci.image.layer.v1.tar+zstd"],
                },
                {"match": "lab/**", "signature": "none"},
                {"match": "127.0.0.1:5002/**"},
                {"match": "registry.k8s.io/**"},
            ],
            "deny": ["**/evil/**", "lab/forbidden"],
            "deny_digests": [BAD, PIN_724],
        },
    }
    settings.update(overrides)
    return make_config(tmp_path, **settings)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return policy_config(tmp_path_factory.mktemp("analysis"))


@pytest.fixture(scope="module")
def planner(config: Config) -> Planner:
    return Planner(config)


def allowed(planner: Planner, name: str, reference: str = "v1") -> PlanData:
    verdict, plan = planner.plan(name, reference)
    assert verdict.allowed, verdict.findings
    assert plan is not None
    return plan


def denied(planner: Planner, name: str, reference: str = "v1") -> Verdict:
    verdict, plan = planner.plan(name, reference)
    assert not verdict.allowed
    assert plan is None
    assert verdict.layer == "analysis"
    assert [f.severity for f in verdict.findings] == [Severity.ERROR]
    return verdict


def code_of(verdict: Verdict) -> str:
    return verdict.findings[0].code


# -- hosts (the catalogue's own P-01 cases are in test_analysis_catalogue.py) ----------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("localhost/library/nginx", UNKNOWN_UPSTREAM),
        ("localhost:5000/library/nginx", UNKNOWN_UPSTREAM),
        ("127.0.0.1:5001/library/nginx", UNKNOWN_UPSTREAM),
        ("Docker.io/library/nginx", INVALID_NAME),
        (" docker.io/library/nginx", INVALID_NAME),
    ],
)
def test_host_like_first_components_are_refused(planner: Planner, name: str, code: str) -> None:
    verdict = denied(planner, name)
    assert code_of(verdict) == code
    assert "position" in verdict.findings[0].message or "not a configured" in verdict.reason


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("docker.io/someone/nginx", NO_RULE),
        ("someone/nginx", NO_RULE),
    ],
)
def test_other_docker_hub_namespaces_are_denied(planner: Planner, name: str, code: str) -> None:
    assert code_of(denied(planner, name)) == code


def test_legacy_docker_hub_spelling_needs_a_single_docker_hub(tmp_path: Path) -> None:
    config = policy_config(
        tmp_path,
        upstreams={
            "hub": {"url": "https://registry-1.docker.io"},
            "mirror": {"url": "https://mirror.example.com", "canonical_host": "docker.io"},
        },
        default_upstream="hub",
        policy={"rules": [{"match": "**"}]},
    )
    verdict = denied(Planner(config), "index.docker.io/library/nginx")
    assert code_of(verdict) == UNKNOWN_UPSTREAM


def test_an_explicit_alias_wins_over_the_legacy_spelling(tmp_path: Path) -> None:
    config = policy_config(
        tmp_path,
        upstreams={
            "docker.io": {"url": "https://registry-1.docker.io"},
            "index.docker.io": {"url": "https://index.example.com"},
        },
        policy={"rules": [{"match": "**"}]},
    )
    plan = allowed(Planner(config), "index.docker.io/library/nginx")
    assert plan.upstream_alias == "index.docker.io"


# -- alias resolution --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "alias", "repository"),
    [
        ("alpine", "docker.io", "library/alpine"),
        ("docker.io/alpine", "docker.io", "library/alpine"),
        ("docker.io/library/alpine", "docker.io", "library/alpine"),
        ("library/alpine", "docker.io", "library/alpine"),
        ("lab/team/app", "lab", "team/app"),
        ("lab/app", "lab", "app"),  # no library/ outside Docker Hub
        ("lab/a.b/c__d/e--f", "lab", "a.b/c__d/e--f"),
        ("127.0.0.1:5002/x/y", "127.0.0.1:5002", "x/y"),
        ("127.0.0.1:5002/x", "127.0.0.1:5002", "x"),
        ("registry.k8s.io/pause", "registry.k8s.io", "pause"),
        ("registry.k8s.io/kube/apiserver", "registry.k8s.io", "kube/apiserver"),
    ],
)
def test_alias_resolution(planner: Planner, name: str, alias: str, repository: str) -> None:
    plan = allowed(planner, name)
    assert (plan.upstream_alias, plan.repository) == (alias, repository)
    assert plan.upstream.alias == alias


def test_a_single_component_is_a_repository_even_when_it_names_an_alias(planner: Planner) -> None:
    plan = allowed(planner, "lab")
    assert plan.canonical_name == "docker.io/library/lab"


def test_default_upstream_fallback(tmp_path: Path) -> None:
    config = policy_config(tmp_path, default_upstream="lab")
    planner = Planner(config)
    plan = allowed(planner, "team/app")
    assert plan.canonical_name == "lab/team/app"
    # library/ is Docker Hub's convention only.
    assert allowed(planner, "app").canonical_name == "lab/app"
    assert allowed(planner, "docker.io/nginx").canonical_name == "docker.io/library/nginx"


def test_repository_after_library_prefix_is_bounded(planner: Planner) -> None:
    verdict = denied(planner, "a" * 250)
    assert code_of(verdict) == INVALID_NAME
    assert "258 characters" in verdict.reason


def test_grammar_applies_to_the_repository_after_the_alias(planner: Planner) -> None:
    verdict = denied(planner, "lab/team/App")
    assert code_of(verdict) == INVALID_NAME
    verdict = denied(planner, "lab/team/ap p")
    assert code_of(verdict) == INVALID_NAME
    verdict = denied(planner, "lab/te:am/app")
    assert code_of(verdict) == INVALID_NAME
    assert "path component 1 'te:am'" in verdict.reason


def test_alias_alone_is_not_a_name(planner: Planner) -> None:
    assert code_of(denied(planner, "lab/")) == INVALID_NAME


def test_a_valid_name_with_a_bad_reference_is_still_denied(planner: Planner) -> None:
    # The name is checked first, but a good name never excuses the reference.
    assert code_of(denied(planner, "docker.io/library/nginx", "Latest@x")) == INVALID_REFERENCE


def test_unsupported_digest_algorithm(planner: Planner) -> None:
    assert code_of(denied(planner, "nginx", "md5:" + "a" * 32)) == UNSUPPORTED_DIGEST


# -- deny globs and deny digests ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "glob"),
    [
        ("lab/team/evil/x", "**/evil/**"),
        ("lab/evil", "**/evil/**"),
        ("evil/x", "**/evil/**"),  # docker.io/evil/x
        ("lab/forbidden", "lab/forbidden"),
    ],
)
def test_deny_globs_match_the_canonical_name(planner: Planner, name: str, glob: str) -> None:
    verdict = denied(planner, name)
    assert code_of(verdict) == DENIED_REPOSITORY
    assert verdict.findings[0].evidence["glob"] == glob
    assert repr(glob) in verdict.reason


def test_deny_globs_are_checked_before_rules(planner: Planner) -> None:
    # lab/** would admit it; the deny glob wins.
    assert code_of(denied(planner, "lab/forbidden", "v1")) == DENIED_REPOSITORY
    assert allowed(planner, "lab/forbidden2").rule.index == 3


def test_deny_digests_refuse_a_by_digest_pull_early(planner: Planner) -> None:
    verdict = denied(planner, "lab/app", BAD)
    assert code_of(verdict) == DENIED_DIGEST
    assert BAD in verdict.reason


# -- rules ---------------------------------------------------------------------------------


def test_first_matching_rule_wins(planner: Planner) -> None:
    assert allowed(planner, "lab/signed/app").rule.index == 2
    assert allowed(planner, "lab/signed/a/b").rule.index == 3  # * stays in one segment
    assert allowed(planner, "lab/other").rule.index == 3


def test_no_rule_fails_closed(tmp_path: Path) -> None:
    config = policy_config(tmp_path, policy={"rules": []})
    verdict = denied(Planner(config), "lab/app")
    assert code_of(verdict) == NO_RULE
    assert "lab/app" in verdict.reason


def test_rule_globs_match_the_canonical_name_not_the_client_name(tmp_path: Path) -> None:
    config = policy_config(tmp_path, policy={"rules": [{"match": "docker.io/library/*"}]})
    assert allowed(Planner(config), "alpine").canonical_name == "docker.io/library/alpine"
    config = policy_config(tmp_path, policy={"rules": [{"match": "alpine"}]})
    assert code_of(denied(Planner(config), "alpine")) == NO_RULE


def test_allow_carries_the_rule_as_info(planner: Planner) -> None:
    verdict, plan = planner.plan("lab/signed/app", "v1")
    assert verdict.allowed and plan is not None
    (finding,) = verdict.findings
    assert finding.code == RULE
    assert finding.severity is Severity.INFO
    assert "rule 2 'lab/signed/*'" in finding.message
    assert finding.evidence == {"rule": "2", "match": "lab/signed/*"}


def test_plan_carries_the_rule_and_upstream(planner: Planner, config: Config) -> None:
    plan = allowed(planner, "lab/signed/app", "v1")
    rule = plan.rule
    assert (rule.index, rule.match, rule.signature.mode, rule.signature.threshold) == (
        2,
        "lab/signed/*",
        "warn",
        1,
    )
    assert [name for name, _ in rule.signature.keys] == ["cosign.pub"]
    assert "BEGIN PUBLIC KEY" in rule.signature.keys[0][1]
    assert rule.foreign_url_hosts == ("*.example.com",)
    assert rule.layer_media_types == ("application/vnd.oci.image.layer.v1.tar+zstd",)
    assert rule.pinned_digest == ""
    assert plan.upstream.url == "http://127.0.0.1:5001"
    assert plan.upstream.insecure is True
    assert plan.upstream.canonical_host == "127.0.0.1:5001"
    assert plan.policy_version == config.policy_version
    assert plan.deny_digests == tuple(sorted([BAD, PIN_724]))


def test_docker_hub_upstream_info(planner: Planner) -> None:
    upstream = allowed(planner, "alpine").upstream
    assert upstream.url == "https://registry-1.docker.io"
    assert upstream.canonical_host == "docker.io"
    assert upstream.insecure is False
    assert "production.cloudflare.docker.com" in upstream.redirect_hosts


def test_plan_never_carries_credentials(tmp_path: Path) -> None:
    config = policy_config(
        tmp_path,
        upstreams={
            "private": {
                "url": "https://registry.example.com",
                "username": "puller",
                "password": "s3cret-password",
            }
        },
        default_upstream="private",
        policy={"rules": [{"match": "**"}]},
    )
    plan = allowed(Planner(config), "private/app")
    assert "s3cret-password" not in repr(plan)
    assert "puller" not in repr(plan)


# -- pins (the catalogue's P-03 cases are in test_analysis_catalogue.py) ----------------


def test_unpinned_tag_of_a_pinned_rule_is_denied(planner: Planner) -> None:
    verdict = denied(planner, "redis", "debug-shell")
    assert code_of(verdict) == TAG_NOT_PINNED
    assert "debug-shell" in verdict.reason


def test_pins_do_not_leak_to_other_rules(planner: Planner) -> None:
    plan = allowed(planner, "nginx", UNPINNED)
    assert plan.rule.index == 1 and plan.rule.pinned_digest == ""


def test_only_the_exact_pinned_tag_is_pinned(planner: Planner) -> None:
    # Tags are compared exactly: no prefix, version-range or case-folded match.
    assert code_of(denied(planner, "redis", "7.2.0")) == TAG_NOT_PINNED
    assert code_of(denied(planner, "redis", "7.2_")) == TAG_NOT_PINNED
    assert allowed(planner, "redis", "7.2.4").rule.pinned_digest == PIN_724


def test_pinned_digest_pull(planner: Planner) -> None:
    plan = allowed(planner, "redis", PIN_72)
    assert plan.digest == PIN_72 and plan.rule.pinned_digest == ""
    assert code_of(denied(planner, "redis", UNPINNED)) == DIGEST_NOT_PINNED


def test_deny_digest_wins_over_a_pin(planner: Planner) -> None:
    # PIN_724 is pinned but also deny-listed.
    assert code_of(denied(planner, "redis", PIN_724)) == DENIED_DIGEST


# -- repository-only plans (tags list) ------------------------------------------------------


def test_repository_only_plan(planner: Planner) -> None:
    verdict, plan = planner.plan("redis", "", repository_only=True)
    assert verdict.allowed and plan is not None
    assert (plan.canonical_name, plan.tag, plan.digest) == ("docker.io/library/redis", "", "")
    assert plan.rule.pinned_digest == ""


def test_repository_only_plan_still_checks_deny_and_rules(planner: Planner) -> None:
    verdict, plan = planner.plan("lab/x/evil/y", "", repository_only=True)
    assert plan is None and code_of(verdict) == DENIED_REPOSITORY
    verdict, plan = planner.plan("ghcr.io/a/b", "", repository_only=True)
    assert plan is None and code_of(verdict) == NO_RULE
    verdict, plan = planner.plan("lab/A", "", repository_only=True)
    assert plan is None and code_of(verdict) == INVALID_NAME


def test_repository_only_plan_takes_no_reference(planner: Planner) -> None:
    verdict, plan = planner.plan("lab/app", "v1", repository_only=True)
    assert plan is None and code_of(verdict) == INVALID_REFERENCE
