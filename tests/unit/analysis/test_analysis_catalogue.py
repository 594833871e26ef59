"""THREATS.md section A through the planner, one test per sub-case (P-01, P-02, P-03).

Each fixture follows the catalogue: P-01's policy allows only
``docker.io/library/*``; P-03's pins ``docker.io/library/redis:7.2`` and allows
tags ``^7\\.2(\\.\\d+)?$``. A refusal here is a DENY before any upstream
request: the planner has no network access at all, and the service test
``test_p01_p02_denials_open_no_connection`` checks that on a real socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pullguard.services.analysis.planner import (
    DENIED_DIGEST,
    DENIED_REPOSITORY,
    NO_RULE,
    PARENT_INDEX,
    UNKNOWN_UPSTREAM,
    PlanData,
    Planner,
)
from pullguard.services.analysis.reference import (
    INVALID_DIGEST,
    INVALID_NAME,
    INVALID_PARENT_INDEX,
    INVALID_REFERENCE,
)
from pullguard.services.analysis.tagpolicy import (
    DIGEST_NOT_PINNED,
    DIGEST_PULL_DENIED,
    TAG_NOT_ALLOWED,
    TAG_NOT_PINNED,
)
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.findings import Severity, Verdict
from tests.support.configs import make_config

AAA = "sha256:" + "a" * 64  # pinned for redis:7.2 (an index in the P-03 d cases)
BBB = "sha256:" + "b" * 64  # what upstream now resolves :7.2 to
CCC = "sha256:" + "c" * 64  # an image of the repo that no allowed tag reaches
CHILD = "sha256:" + "1" * 64  # a platform manifest listed by index AAA
OTHER_CHILD = "sha256:" + "2" * 64  # a platform manifest AAA does not list
DENIED_INDEX = "sha256:" + "e" * 64  # an admitted index later added to the deny database

HUB_UPSTREAMS = {
    "docker.io": {"url": "https://registry-1.docker.io"},
    "ghcr.io": {"url": "https://ghcr.io"},
}
REDIS = "docker.io/library/redis"
REDIS_TAGS = [r"^7\.2(\.\d+)?$"]


def hub_config(tmp_path: Path, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "upstreams": HUB_UPSTREAMS,
        "default_upstream": "docker.io",
        "policy": {"rules": [{"match": "docker.io/library/*"}]},
    }
    settings.update(overrides)
    return make_config(tmp_path, **settings)


def redis_config(tmp_path: Path, pins: dict[str, str] | None = None, **tags: Any) -> Config:
    """P-03's policy: pins (default 7.2 -> AAA) and the tag allow-list, plus ``tags``."""
    rule: dict[str, Any] = {"match": REDIS, "tags": {"allow": REDIS_TAGS, **tags}}
    pins = {"7.2": AAA} if pins is None else pins
    if pins:
        (tmp_path / "pins.yaml").write_text("".join(f"'{t}': '{d}'\n" for t, d in pins.items()))
        rule["pins"] = "pins.yaml"
    return hub_config(tmp_path, policy={"rules": [rule], "deny_digests": [DENIED_INDEX]})


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Planner:
    return Planner(hub_config(tmp_path_factory.mktemp("p01")))


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Planner:
    return Planner(redis_config(tmp_path_factory.mktemp("p03")))


def allowed(planner: Planner, name: str, reference: str, parent_index: str = "") -> PlanData:
    verdict, plan = planner.plan(name, reference, parent_index=parent_index)
    assert verdict.allowed, verdict.findings
    assert plan is not None
    return plan


def denied(planner: Planner, name: str, reference: str, parent_index: str = "") -> Verdict:
    verdict, plan = planner.plan(name, reference, parent_index=parent_index)
    assert not verdict.allowed
    assert plan is None
    assert [f.severity for f in verdict.findings] == [Severity.ERROR]
    return verdict


def code(planner: Planner, name: str, reference: str, parent_index: str = "") -> str:
    return denied(planner, name, reference, parent_index).findings[0].code


# -- P-01 (a): four spellings of one image, one decision, one cache key --------------------


def _nginx(plan: PlanData) -> None:
    assert plan.canonical_name == "docker.io/library/nginx"
    assert (plan.upstream_alias, plan.repository, plan.tag) == (
        "docker.io",
        "library/nginx",
        "1.27",
    )
    assert plan.upstream.url == "https://registry-1.docker.io"


def test_p01a_short_name(hub: Planner) -> None:
    _nginx(allowed(hub, "nginx", "1.27"))


def test_p01a_library_prefix(hub: Planner) -> None:
    _nginx(allowed(hub, "library/nginx", "1.27"))


def test_p01a_docker_io(hub: Planner) -> None:
    _nginx(allowed(hub, "docker.io/library/nginx", "1.27"))


def test_p01a_index_docker_io(hub: Planner) -> None:
    _nginx(allowed(hub, "index.docker.io/library/nginx", "1.27"))


def test_p01a_one_decision_and_cache_key(hub: Planner) -> None:
    names = ["nginx", "library/nginx", "docker.io/library/nginx", "index.docker.io/library/nginx"]
    plans = [allowed(hub, name, "1.27") for name in names]
    # Everything but the client's own spelling is the same: rule, upstream,
    # canonical reference and policy version are what caches key on.
    keys = {
        (p.canonical_name, p.tag, p.digest, p.rule, p.upstream, p.policy_version) for p in plans
    }
    assert len(keys) == 1
    assert [p.client_name for p in plans] == names


# -- P-01 (b): look-alike hosts are refused, not normalised --------------------------------


def test_p01b_api_host(hub: Planner) -> None:
    # registry-1.docker.io is the API host, not a reference domain.
    assert code(hub, "registry-1.docker.io/library/nginx", "1.27") == UNKNOWN_UPSTREAM


def test_p01b_uppercase_host(hub: Planner) -> None:
    verdict = denied(hub, "DOCKER.IO/library/nginx", "1.27")
    assert verdict.findings[0].code == INVALID_NAME
    assert "uppercase 'D'" in verdict.reason


def test_p01b_explicit_port(hub: Planner) -> None:
    assert code(hub, "docker.io:443/library/nginx", "1.27") == UNKNOWN_UPSTREAM


def test_p01b_trailing_dot(hub: Planner) -> None:
    assert code(hub, "docker.io./library/nginx", "1.27") == UNKNOWN_UPSTREAM


def test_p01b_userinfo_at_sign(hub: Planner) -> None:
    verdict = denied(hub, "docker.io@evil.example/library/nginx", "1.27")
    assert verdict.findings[0].code == INVALID_NAME
    assert "character '@' at position 9" in verdict.reason


def test_p01b_cyrillic_o(hub: Planner) -> None:
    verdict = denied(hub, "d\u043ecker.io/library/nginx", "1.27")
    assert verdict.findings[0].code == INVALID_NAME
    assert "U+043E CYRILLIC SMALL LETTER O at position 1" in verdict.reason


def test_p01b_punycode(hub: Planner) -> None:
    # The IDNA form of the Cyrillic look-alike: a host, and not a configured one.
    verdict = denied(hub, "xn--dcker-f2e.io/library/nginx", "1.27")
    assert verdict.findings[0].code == UNKNOWN_UPSTREAM
    assert "'xn--dcker-f2e.io'" in verdict.reason


def test_p01b_explicitly_mapped_spelling_is_allowed(tmp_path: Path) -> None:
    # "DENY unless a spelling is explicitly mapped in config": an alias maps it.
    config = hub_config(
        tmp_path,
        upstreams={**HUB_UPSTREAMS, "docker.io:443": {"url": "https://registry-1.docker.io"}},
        policy={"rules": [{"match": "docker.io:443/library/*"}]},
    )
    plan = allowed(Planner(config), "docker.io:443/library/nginx", "1.27")
    assert plan.canonical_name == "docker.io:443/library/nginx"


# -- P-01 (c): other repositories and registries -------------------------------------------


def test_p01c_other_namespace(hub: Planner) -> None:
    assert code(hub, "docker.io/evil/nginx", "1.27") == NO_RULE


def test_p01c_other_registry(hub: Planner) -> None:
    assert code(hub, "ghcr.io/library/nginx", "1.27") == NO_RULE


def test_p01c_deny_glob(tmp_path: Path) -> None:
    config = hub_config(
        tmp_path, policy={"rules": [{"match": "docker.io/**"}], "deny": ["**/evil/**"]}
    )
    assert code(Planner(config), "docker.io/evil/nginx", "1.27") == DENIED_REPOSITORY


# -- P-02: names ---------------------------------------------------------------------------


def test_p02_name_dot_dot(hub: Planner) -> None:
    verdict = denied(hub, "library/../../admin", "latest")
    assert verdict.findings[0].code == INVALID_NAME
    assert "path component 1 is '..'" in verdict.reason


def test_p02_name_percent_encoded_slashes(hub: Planner) -> None:
    # The front door decodes exactly once; a "%" left over is refused, not decoded again.
    verdict = denied(hub, "library%2F..%2F..%2Fsecret", "x")
    assert verdict.findings[0].code == INVALID_NAME
    assert "percent sign" in verdict.reason


def test_p02_name_percent_nul(hub: Planner) -> None:
    assert code(hub, "library/nginx%00", "x") == INVALID_NAME


def test_p02_name_decoded_nul(hub: Planner) -> None:
    verdict = denied(hub, "library/nginx\x00", "x")
    assert "NUL character at position 13" in verdict.reason


def test_p02_name_uppercase(hub: Planner) -> None:
    verdict = denied(hub, "Library/Nginx", "x")
    assert verdict.findings[0].code == INVALID_NAME
    assert "uppercase 'L'" in verdict.reason


def test_p02_name_double_slash(hub: Planner) -> None:
    verdict = denied(hub, "a//b", "x")
    assert verdict.findings[0].code == INVALID_NAME
    assert "empty path component 1 ('//')" in verdict.reason


def test_p02_name_256_characters(hub: Planner) -> None:
    verdict = denied(hub, "a" * 256, "x")
    assert verdict.findings[0].code == INVALID_NAME
    assert "256 characters long, expected at most 255" in verdict.reason


def test_p02_name_over_255_after_library_prefix(hub: Planner) -> None:
    # 250 characters as sent, 258 as "library/..." at the upstream.
    verdict = denied(hub, "a" * 250, "x")
    assert verdict.findings[0].code == INVALID_NAME
    assert "258 characters" in verdict.reason


# -- P-02: tags ------------------------------------------------------------------------------


def test_p02_tag_dot_dot_slash(hub: Planner) -> None:
    assert code(hub, "nginx", "../../x") == INVALID_REFERENCE


def test_p02_tag_leading_dot(hub: Planner) -> None:
    assert code(hub, "nginx", ".hidden") == INVALID_REFERENCE


def test_p02_tag_leading_dash(hub: Planner) -> None:
    assert code(hub, "nginx", "-x") == INVALID_REFERENCE


def test_p02_tag_129_characters(hub: Planner) -> None:
    verdict = denied(hub, "nginx", "x" * 129)
    assert verdict.findings[0].code == INVALID_REFERENCE
    assert "129 characters long, expected at most 128" in verdict.reason
    assert allowed(hub, "nginx", "x" * 128).tag == "x" * 128


def test_p02_tag_with_digest(hub: Planner) -> None:
    verdict = denied(hub, "nginx", f"latest@{AAA}")
    assert verdict.findings[0].code == INVALID_REFERENCE
    assert "expected exactly one tag or one digest" in verdict.reason


# -- P-02: digests ---------------------------------------------------------------------------


def test_p02_digest_path_traversal(hub: Planner) -> None:
    assert code(hub, "nginx", "sha256:../../../../etc/passwd") == INVALID_DIGEST


def test_p02_digest_empty(hub: Planner) -> None:
    verdict = denied(hub, "nginx", "sha256:")
    assert verdict.findings[0].code == INVALID_DIGEST
    assert "encoded part is empty" in verdict.reason


def test_p02_digest_trailing_path(hub: Planner) -> None:
    verdict = denied(hub, "nginx", f"{AAA}/../x")
    assert verdict.findings[0].code == INVALID_DIGEST
    assert "character '/' at position 71" in verdict.reason


def test_p02_digest_crlf_percent_encoded(hub: Planner) -> None:
    verdict = denied(hub, "nginx", f"{AAA}%0d%0aX-Injected:1")
    assert verdict.findings[0].code == INVALID_DIGEST
    assert "percent sign" in verdict.reason


def test_p02_digest_crlf_decoded(hub: Planner) -> None:
    verdict = denied(hub, "nginx", f"{AAA}\r\nX-Injected:1")
    assert verdict.findings[0].code == INVALID_DIGEST
    # The finding itself carries no raw CR/LF into logs or reports.
    assert "\r" not in verdict.reason and "\n" not in verdict.reason
    assert all("\r" not in v and "\n" not in v for v in verdict.findings[0].evidence.values())


@pytest.mark.parametrize(
    "parent",
    [
        "sha256:../../../../etc/passwd",
        "sha256:",
        f"{AAA}/../x",
        f"{AAA}%0d%0aX-Injected:1",
        f"{AAA}\r\nX-Injected:1",
        "SHA256:" + "a" * 64,
        "sha256:" + "A" * 64,
        f"latest@{AAA}",
        "x" * 300,
    ],
)
def test_p02_parent_index_same_strings(redis: Planner, parent: str) -> None:
    # The gateway's parent index is held to the same digest grammar.
    assert code(redis, REDIS, CHILD, parent) == INVALID_PARENT_INDEX


def test_p02_refusals_create_no_files(tmp_path: Path) -> None:
    planner = Planner(hub_config(tmp_path))
    before = sorted(tmp_path.rglob("*"))
    for name, reference in [
        ("library/../../admin", "latest"),
        ("a//b", "x"),
        ("nginx", "sha256:../../../../etc/passwd"),
        ("nginx", f"{AAA}/../x"),
    ]:
        denied(planner, name, reference)
    assert sorted(tmp_path.rglob("*")) == before


# -- P-03 (a), (b): the plan carries what hashverify compares ---------------------------------


def test_p03a_tag_plan_carries_the_pin(redis: Planner) -> None:
    # hashverify quarantines BBB against this pin (its P-03 a test).
    plan = allowed(redis, "redis", "7.2")
    assert plan.rule.pinned_digest == AAA
    assert (plan.tag, plan.digest) == ("7.2", "")


def test_p03a_moved_digest_cannot_be_pulled_by_digest(redis: Planner) -> None:
    assert code(redis, "redis", BBB) == DIGEST_NOT_PINNED


def test_p03b_digest_plan_names_the_requested_digest(redis: Planner) -> None:
    # hashverify compares the local digest of the body with this one, not with
    # Docker-Content-Digest (its P-03 b tests).
    plan = allowed(redis, "redis", AAA)
    assert (plan.tag, plan.digest) == ("", AAA)


# -- P-03 (c): by-digest pulls do not bypass tag rules or pins --------------------------------


def test_p03c_unreached_digest_with_pins(redis: Planner) -> None:
    verdict = denied(redis, "docker.io/library/redis", CCC)
    assert verdict.findings[0].code == DIGEST_NOT_PINNED
    assert CCC in verdict.reason


def test_p03c_unreached_tag(redis: Planner) -> None:
    # The tag itself (:debug-shell) is outside the allow-list.
    assert code(redis, "redis", "debug-shell") == TAG_NOT_ALLOWED


def test_p03c_allowed_but_unpinned_tag(redis: Planner) -> None:
    assert code(redis, "redis", "7.2.1") == TAG_NOT_PINNED


def test_p03c_digest_pulls_pinned_without_pins(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, pins={}, digest_pulls="pinned"))
    assert allowed(planner, "redis", "7.2.1").rule.pinned_digest == ""
    assert code(planner, "redis", CCC) == DIGEST_NOT_PINNED


def test_p03c_digest_pulls_deny(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, digest_pulls="deny"))
    # Even the pinned digest: the rule takes tags only.
    assert code(planner, "redis", AAA) == DIGEST_PULL_DENIED
    assert code(planner, "redis", CCC) == DIGEST_PULL_DENIED


def test_p03c_explicitly_allowlisted_digest(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, pins={"7.2": AAA, "debug": CCC}))
    assert allowed(planner, "redis", CCC).digest == CCC


def test_p03c_explicitly_allowed_digest_pulls(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, pins={}, digest_pulls="allow"))
    assert allowed(planner, "redis", CCC).digest == CCC


# -- P-03 (d): pins at the index level and at the child level ---------------------------------


def test_p03d_index_pin_child_of_admitted_index(redis: Planner) -> None:
    plan = allowed(redis, "redis", CHILD, parent_index=AAA)
    assert plan.parent_index == AAA
    assert plan.rule.pinned_digest == ""


def test_p03d_index_pin_child_without_parent(redis: Planner) -> None:
    # The same child without an admitted parent is an unpinned digest.
    assert code(redis, "redis", CHILD) == DIGEST_NOT_PINNED


def test_p03d_index_pin_other_child(redis: Planner) -> None:
    # A child the admitted index does not list gets no parent from the gateway.
    assert code(redis, "redis", OTHER_CHILD) == DIGEST_NOT_PINNED


def test_p03d_child_level_pin(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, pins={"7.2": CHILD}))
    assert allowed(planner, "redis", "7.2").rule.pinned_digest == CHILD
    assert allowed(planner, "redis", CHILD).digest == CHILD
    assert code(planner, "redis", OTHER_CHILD) == DIGEST_NOT_PINNED


def test_p03d_child_of_admitted_index_with_digest_pulls_deny(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, digest_pulls="deny"))
    verdict, plan = planner.plan("redis", CHILD, parent_index=AAA)
    assert verdict.allowed and plan is not None
    assert [f.code for f in verdict.findings] == ["analysis.rule", PARENT_INDEX]
    assert verdict.findings[1].evidence["parent_index"] == AAA


def test_p03d_deny_listed_parent_vouches_for_nothing(redis: Planner) -> None:
    verdict = denied(redis, "redis", CHILD, parent_index=DENIED_INDEX)
    assert verdict.findings[0].code == DENIED_DIGEST
    assert f"parent index {DENIED_INDEX}" in verdict.reason


def test_p03d_parent_index_only_for_digest_pulls(redis: Planner) -> None:
    assert code(redis, "redis", "7.2", parent_index=AAA) == INVALID_PARENT_INDEX
    verdict, plan = redis.plan("redis", "", repository_only=True, parent_index=AAA)
    assert plan is None and verdict.findings[0].code == INVALID_PARENT_INDEX


def test_p03d_parent_index_cannot_be_the_digest_itself(tmp_path: Path) -> None:
    planner = Planner(redis_config(tmp_path, digest_pulls="deny"))
    verdict = denied(planner, "redis", CCC, parent_index=CCC)
    assert verdict.findings[0].code == INVALID_PARENT_INDEX
    assert "cannot list itself" in verdict.reason
