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
