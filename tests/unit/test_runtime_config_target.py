"""The ``target`` key: embedded, or a registry that admitted images are pushed to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullguard.services.runtime.config import Config, parse_config
from pullguard.services.runtime.errors import ConfigError

UPSTREAMS = "upstreams: {lab: {url: 'http://127.0.0.1:5001', insecure: true}}\n"


def _parse(tmp_path: Path, target: str, upstreams: str = UPSTREAMS) -> Config:
    return parse_config(f"{upstreams}target: {target}\n", "conf.yaml", tmp_path)


def test_target_defaults_to_embedded(tmp_path: Path) -> None:
    assert parse_config(UPSTREAMS, "conf.yaml", tmp_path).target.kind == "embedded"
    assert _parse(tmp_path, "{kind: embedded}").target.kind == "embedded"


def test_registry_target_is_read(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    target = _parse(
        tmp_path,
        "{kind: registry, url: 'https://registry.example.com:8443/', prefix: mirror/public,"
        " username: pusher, password_file: secret}",
    ).target
    assert target.kind == "registry"
    assert target.url == "https://registry.example.com:8443"
    assert (target.host, target.port, target.insecure) == ("registry.example.com", 8443, False)
    assert (target.username, target.password) == ("pusher", "s3cret")
    assert target.repository("lab/team/app") == "mirror/public/lab/team/app"
    assert "s3cret" not in repr(target)


def test_registry_target_without_prefix_keeps_the_name(tmp_path: Path) -> None:
    target = _parse(tmp_path, "{kind: registry, url: 'http://127.0.0.1:5002', insecure: true}")
    assert target.target.repository("lab/team/app") == "lab/team/app"


@pytest.mark.parametrize(
    ("target", "key", "problem"),
    [
        ("{kind: s3}", "target.kind", "embedded or registry"),
        ("{kind: registry}", "target.url", "non-empty string"),
        ("{kind: registry, url: 'http://r:5000'}", "target.url", "insecure: true"),
        ("{kind: registry, url: 'ftp://r'}", "target.url", "scheme must be https"),
        ("{kind: registry, url: 'https://u:p@r'}", "target.url", "credentials"),
        ("{kind: registry, url: 'https://r/v2'}", "target.url", "path"),
        ("{kind: registry, url: 'https://r', insecure: yes please}", "target.insecure", "true"),
        ("{kind: registry, url: 'https://r', bogus: 1}", "target.bogus", "unknown key"),
        ("{kind: registry, url: 'https://r', prefix: Mirror}", "target.prefix", "repository"),
        ("{kind: registry, url: 'https://r', prefix: 'mirror/'}", "target.prefix", "repository"),
        ("{kind: registry, url: 'https://r', prefix: '/mirror'}", "target.prefix", "repository"),
        ("{kind: registry, url: 'https://r', prefix: 'a//b'}", "target.prefix", "repository"),
        ("{kind: registry, url: 'https://r', prefix: ''}", "target.prefix", "non-empty"),
        ("{kind: registry, url: 'https://r', username: u}", "target", "come together"),
        ("{kind: registry, url: 'https://r', password: p}", "target", "come together"),
        (
            "{kind: registry, url: 'https://r', username: u, password: p, password_file: f}",
            "target.password_file",
            "not both",
        ),
        (
            "{kind: registry, url: 'https://r', username: u, password_file: missing}",
            "target.password_file",
            "cannot read",
        ),
        ("{kind: embedded, url: 'https://r'}", "target.url", "only to kind registry"),
        ("[registry]", "target", "mapping"),
    ],
)
def test_target_errors_name_the_key(tmp_path: Path, target: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, target)
    assert info.value.file == "conf.yaml"
    assert info.value.key == key
    assert problem in info.value.problem


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, "{kind: registry, url: 'https://r', username: u, password_file: empty}")
    assert info.value.key == "target.password_file"


def test_registry_target_needs_aliases_that_are_path_components(tmp_path: Path) -> None:
    upstreams = "upstreams: {'localhost:5001': {url: 'http://127.0.0.1:5001', insecure: true}}\n"
    # Fine for the embedded store...
    _parse(tmp_path, "{kind: embedded}", upstreams)
    # ...but <prefix>/localhost:5001/<repo> is no repository name.
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, "{kind: registry, url: 'https://r'}", upstreams)
    assert info.value.key == "upstreams.localhost:5001"
    assert "path component" in info.value.problem
