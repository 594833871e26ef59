from __future__ import annotations

from pathlib import Path

import pytest

from pullguard.services.runtime.config import glob_to_regex, load_config, parse_config
from pullguard.services.runtime.errors import ConfigError


def test_builtin_default_config_loads() -> None:
    config = load_config(None)
    assert set(config.upstreams) >= {"docker.io", "ghcr.io", "quay.io", "registry.k8s.io"}
    assert config.default_upstream == "docker.io"
    assert config.listen == "127.0.0.1:5000"
    assert config.console_listen == "127.0.0.1:5080"
    assert config.policy.rules[0].signature.mode == "none"


@pytest.mark.parametrize(
    ("glob", "name", "matches"),
    [
        ("lab/signed/*", "lab/signed/app", True),
        ("lab/signed/*", "lab/signed/a/b", False),
        ("lab/**", "lab/a/b/c", True),
        ("lab/**", "labx/a", False),
        ("**/evil/**", "lab/evil/x", True),
        ("**/evil/**", "evil/x", True),
        ("**/evil/**", "lab/notevil/x", False),
    ],
)
def test_globs(glob: str, name: str, matches: bool) -> None:
    assert bool(glob_to_regex(glob).fullmatch(name)) is matches


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("upstreams: {}", "upstreams", "at least one"),
        ("upstreams: {lab: {url: 'http://x:1'}}", "upstreams.lab.url", "insecure"),
        ("upstreams: {lab: {url: 'https://x', bogus: 1}}", "upstreams.lab.bogus", "unknown key"),
        (
            "upstreams: {lab: {url: 'https://x'}}\n"
            "policy: {rules: [{match: a, signature: {keys: [nope.pub]}}]}",
            "policy.rules[0].signature.keys[0]",
            "cannot read",
        ),
        (
            "upstreams: {lab: {url: 'https://x'}}\ndefault_upstream: other",
            "default_upstream",
            "not an upstream",
        ),
        ("upstreams: {lab: {url: 'https://x'}}\nlisten: nowhere", "listen", "HOST:PORT"),
        ("upstreams: [", "", "not valid YAML"),
    ],
)
def test_config_errors_name_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "conf.yaml", tmp_path)
    assert info.value.file == "conf.yaml"
    assert info.value.key == key
    assert problem in str(info.value)


def test_policy_version_changes_with_pins(tmp_path: Path) -> None:
    pins = tmp_path / "pins.yaml"
    pins.write_text("v1: sha256:" + "a" * 64 + "\n")
    text = "upstreams: {lab: {url: 'https://x'}}\npolicy: {rules: [{match: '**', pins: pins.yaml}]}"
    first = parse_config(text, "c.yaml", tmp_path).policy_version
    pins.write_text("v1: sha256:" + "b" * 64 + "\n")
    assert parse_config(text, "c.yaml", tmp_path).policy_version != first


def test_policy_version_changes_with_the_checks_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Admissions made before a check was added (an index as one unit) verify again.
    from pullguard.services.runtime.config import policy as runtime_config

    text = "upstreams: {lab: {url: 'https://x'}}\npolicy: {rules: [{match: '**'}]}"
    first = parse_config(text, "c.yaml", tmp_path).policy_version
    monkeypatch.setattr(runtime_config, "CHECKS_REVISION", runtime_config.CHECKS_REVISION - 1)
    assert parse_config(text, "c.yaml", tmp_path).policy_version != first


def test_canonical_host_defaults_to_the_registry_name_signers_use(tmp_path: Path) -> None:
    text = (
        "upstreams:\n"
        "  lab: {url: 'http://127.0.0.1:5001', insecure: true}\n"
        "  hub: {url: 'https://registry-1.docker.io'}\n"
        "  own: {url: 'https://registry.example.com', canonical_host: example.com}\n"
    )
    upstreams = parse_config(text, "c.yaml", tmp_path).upstreams
    assert upstreams["lab"].canonical_host == "127.0.0.1:5001"
    assert upstreams["hub"].canonical_host == "docker.io"
    assert upstreams["own"].canonical_host == "example.com"


@pytest.mark.parametrize(
    ("rule", "key", "problem"),
    [
        ("{match: a, tags: {allow: ['v1.*']}}", "policy.rules[0].tags.allow[0]", "anchored"),
        (
            "{match: a, tags: {digest_pulls: sometimes}}",
            "policy.rules[0].tags.digest_pulls",
            "allow",
        ),
        ("{match: a, layers: {setuid: ignore}}", "policy.rules[0].layers.setuid", "report or deny"),
        (
            "{match: a, signature: {keyless: [{issuer: i, subject_regex: '.*@example.com'}]}}",
            "policy.rules[0].signature.keyless[0].subject_regex",
            "anchored",
        ),
        (
            "{match: a, signature: {keyless: [{issuer: i, subject: s, subject_regex: '^s$'}]}}",
            "policy.rules[0].signature.keyless[0]",
            "exactly one",
        ),
        ("{match: a, signature: {mode: warn}}", "policy.rules[0].signature", "keys or keyless"),
        (
            "{match: a, signature: {keyless: [{issuer: i, subject: s}], rekor: maybe}}",
            "policy.rules[0].signature.rekor",
            "required or optional",
        ),
        (
            "{match: a, signature: {keyless: [{issuer: i, subject: s}], repository: 'A/b'}}",
            "policy.rules[0].signature.repository",
            "repository path",
        ),
    ],
)
def test_rule_errors_name_the_key(tmp_path: Path, rule: str, key: str, problem: str) -> None:
    text = f"upstreams: {{lab: {{url: 'https://x'}}}}\npolicy: {{rules: [{rule}]}}"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", tmp_path)
    assert info.value.key == key
    assert problem in str(info.value)


def test_rule_defaults_inspect_layers_and_deny_devices(tmp_path: Path) -> None:
    config = parse_config(
        "upstreams: {lab: {url: 'https://x'}}\npolicy: {rules: [{match: a}]}", "c.yaml", tmp_path
    )
    layers = config.policy.rules[0].layers
    assert layers.inspect is True and layers.devices == "deny" and layers.setuid == "report"
    assert layers.inventory is False


def test_rule_asks_for_the_inventory(tmp_path: Path) -> None:
    text = "upstreams: {lab: {url: 'https://x'}}\npolicy: {rules: [%s]}"
    rule = "{match: a, layers: {inventory: true}}"
    assert parse_config(text % rule, "c.yaml", tmp_path).policy.rules[0].layers.inventory
    with pytest.raises(ConfigError) as info:
        parse_config(text % "{match: a, layers: {inventory: sure}}", "c.yaml", tmp_path)
    assert info.value.key == "policy.rules[0].layers.inventory"


def test_upstream_tls_settings(tmp_path: Path) -> None:
    pin = "ab" * 32
    text = f"upstreams: {{hub: {{url: 'https://x', tls: {{spki_sha256: ['{pin}']}}}}}}"
    assert parse_config(text, "c.yaml", tmp_path).upstreams["hub"].tls.spki_sha256 == (pin,)
    with pytest.raises(ConfigError) as info:
        parse_config(
            "upstreams: {hub: {url: 'https://x', tls: {spki_sha256: [AB]}}}", "c", tmp_path
        )
    assert info.value.key == "upstreams.hub.tls.spki_sha256[0]"


def test_p03c_tag_rules_make_digest_pulls_pinned_by_default(tmp_path: Path) -> None:
    def tags(rule: str) -> str:
        text = f"upstreams: {{lab: {{url: 'https://x'}}}}\npolicy: {{rules: [{rule}]}}"
        return parse_config(text, "c.yaml", tmp_path).policy.rules[0].tags.digest_pulls

    assert tags("{match: a}") == "allow"
    assert tags("{match: a, tags: {allow: ['^v1$']}}") == "pinned"
    assert tags("{match: a, tags: {allow: ['^v1$'], digest_pulls: allow}}") == "allow"


def test_signature_mode_reads_as_its_word_in_the_policy_version(tmp_path: Path) -> None:
    # The policy version hashes the rule's repr: the mode enum must read as the
    # plain word it was before it became an enum, or every admission made by
    # an older pullguard would be verified again for nothing.
    from pullguard.services.runtime.config.policy import SignatureMode

    text = "upstreams: {lab: {url: 'https://x'}}\npolicy: {rules: [{match: '**'}]}"
    rule = parse_config(text, "c.yaml", tmp_path).policy.rules[0]
    assert rule.signature.mode is SignatureMode.NONE
    assert "mode='none'" in repr(rule.signature)
    assert rule.signature.mode == "none"
