"""``pullguard policy validate FILE`` through the installed command, and the
strict YAML loader every configuration goes through.

Exit status: 0 valid (warnings allowed unless --strict), 1 invalid, 2 the file
cannot be read or a usage error. Errors and warnings go to stderr, each naming
the file; never a traceback.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from pullguard.gateway.policy_lint import covers, never_matches
from pullguard.services.runtime.config import ConfigErrors, load_config
from pullguard.services.runtime.errors import ConfigError
from tests.support.stack import pullguard_command

HEAD = """\
state_dir: state
upstreams:
  lab: {url: "http://127.0.0.1:5001", insecure: true}
  docker.io: {url: "https://registry-1.docker.io"}
default_upstream: lab
"""


def validate(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "pullguard.yaml"
    path.write_text(textwrap.dedent(text))
    done = subprocess.run(
        [*pullguard_command(), "policy", "validate", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_valid_policy_exits_0_and_says_so(tmp_path: Path) -> None:
    done = validate(tmp_path, HEAD + 'policy: {rules: [{match: "lab/**", signature: none}]}\n')
    assert done.returncode == 0, done.stderr
    assert "valid (1 rules" in done.stdout
    assert done.stderr == ""


def test_every_error_is_reported_at_once_each_naming_the_file(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        """\
        listen: nowhere
        state_dir: state
        bogus: 1
        upstreams:
          lab: {url: "ftp://127.0.0.1:5001"}
          ok: {url: "http://127.0.0.1:5002", insecure: true}
        policy:
          rules:
            - {match: "lab/**", signature: maybe}
            - {match: "ok/**", signature: none, colour: blue}
          deny_digests: ["sha256:nothex"]
        limits: {blob_deadline: -1}
        telemetry: {exporter: carrier-pigeon}
        """,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    path = str(tmp_path / "pullguard.yaml")
    assert all(line.startswith(f"error: {path}: ") for line in errors), errors
    for key in (
        ": listen:",
        ": bogus:",
        ": upstreams.lab.url:",
        ": policy.rules[0].signature",
        ": policy.rules[1].colour:",
        ": policy.deny_digests[0]:",
        ": limits.blob_deadline:",
        ": telemetry.exporter:",
    ):
        assert sum(key in line for line in errors) == 1, (key, errors)
    assert len(errors) == 8
    assert f"{path}: invalid (8 errors)" in done.stderr


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    done = validate(tmp_path, HEAD + "policy:\n  rules: [ {match: x\n")
    assert done.returncode == 1
    path = tmp_path / "pullguard.yaml"
    assert f"error: {path}: not valid YAML: line " in done.stderr
    assert ", column " in done.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # The real case: a second `lab` silently replaced the first.
        (
            "upstreams:\n  lab: {url: 'http://127.0.0.1:5001', insecure: true}\n"
            "  lab: {url: 'https://registry-1.docker.io'}\n"
            "policy: {rules: [{match: 'lab/**', signature: none}]}\n",
            "duplicate key 'lab' (first at line 2, column 3)",
        ),
        (
            HEAD + "policy:\n  rules:\n    - match: 'lab/**'\n      signature: none\n"
            "      match: 'docker.io/**'\n",
            "duplicate key 'match'",
        ),
        (HEAD + "state_dir: other\npolicy: {rules: []}\n", "duplicate key 'state_dir'"),
    ],
)
def test_duplicate_keys_at_any_depth_are_refused(tmp_path: Path, text: str, where: str) -> None:
    done = validate(tmp_path, text)
    assert done.returncode == 1, done.stderr
    assert where in done.stderr
    assert str(tmp_path / "pullguard.yaml") in done.stderr


def test_duplicate_keys_are_refused_at_start_up_and_in_pin_files(tmp_path: Path) -> None:
    path = tmp_path / "pullguard.yaml"
    path.write_text(
        "upstreams:\n  lab: {url: 'http://127.0.0.1:5001', insecure: true}\n"
        "  lab: {url: 'https://registry-1.docker.io'}\n"
    )
    with pytest.raises(ConfigError, match="duplicate key 'lab'"):
        load_config(path)
    up = subprocess.run(
        [*pullguard_command(), "up", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 2
    assert "duplicate key 'lab'" in up.stderr and "Traceback" not in up.stderr
    pins = tmp_path / "pins.yaml"
    digest = "sha256:" + "a" * 64
    pins.write_text(f"v1: {digest}\nv1: {'sha256:' + 'b' * 64}\n")
    path.write_text(
        HEAD + "policy: {rules: [{match: 'lab/**', signature: none, pins: pins.yaml}]}\n"
    )
    with pytest.raises(ConfigError, match=r"policy.rules\[0\].pins: .*duplicate key 'v1'"):
        load_config(path)


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "pullguard.yaml"
    path.write_text(
        HEAD
        + "policy:\n  rules:\n    - &r {match: 'lab/**', signature: none}\n"
        + "    - {<<: *r, match: 'docker.io/**'}\n"
    )
    config = load_config(path)
    assert [rule.match for rule in config.policy.rules] == ["lab/**", "docker.io/**"]


def test_unreadable_file_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [*pullguard_command(), "policy", "validate", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "missing.yaml: cannot read" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "latin1.yaml").write_bytes(b"listen: caf\xe9\n")
    latin = subprocess.run(
        [*pullguard_command(), "policy", "validate", str(tmp_path / "latin1.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert latin.returncode == 2 and "not UTF-8" in latin.stderr
    usage = subprocess.run(
        [*pullguard_command(), "policy", "validate"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_warnings_exit_0_and_fail_under_strict(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent(
        """\
        policy:
          rules:
            - {match: "library/nginx", signature: none}
            - {match: "lab//app", signature: none}
            - {match: "lab/**", signature: none}
            - {match: "lab/**", signature: none}
            - {match: "lab/team/app", signature: none}
            - {match: "docker.io/*", signature: none}
            - {match: "**", signature: none}
            - {match: "docker.io/library/x", signature: none}
          deny: ["evil/**"]
        """
    )
    done = validate(tmp_path, text)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    path = str(tmp_path / "pullguard.yaml")
    assert all(line.startswith(f"warning: {path}: ") for line in warnings)
    joined = "\n".join(warnings)
    assert "policy.rules[0].match: 'library/nginx' can never match: its first segment" in joined
    assert "policy.rules[1].match: 'lab//app' can never match: it has an empty" in joined
    assert "policy.rules[3].match: 'lab/**' is shadowed by policy.rules[2]" in joined
    assert "policy.rules[4].match: 'lab/team/app' is shadowed by policy.rules[2]" in joined
    assert "policy.rules[7].match: 'docker.io/library/x' is shadowed by policy.rules[6]" in joined
    assert "policy.deny[0]: 'evil/**' can never match" in joined
    assert "rules[2].match: 'lab/**' is shadowed" not in joined
    assert "rules[5].match" not in joined and "rules[6].match" not in joined
    assert len(warnings) == 6
    assert "valid (8 rules, 6 warnings" in done.stdout
    strict = validate(tmp_path, text, "--strict")
    assert strict.returncode == 1
    assert "6 warnings, refused under --strict" in strict.stderr


def test_no_rules_is_a_warning(tmp_path: Path) -> None:
    done = validate(tmp_path, HEAD + "policy: {rules: []}\n")
    assert done.returncode == 0
    assert "warning: " in done.stderr and "policy.rules: no rules" in done.stderr
    assert validate(tmp_path, HEAD, "--strict").returncode == 1


@pytest.mark.parametrize(
    ("glob", "never"),
    [
        ("lab/app", False),
        ("l*/app", False),
        ("**/evil/**", False),
        ("**", False),
        ("lab", True),  # a name always has an alias and a repository
        ("lab/", True),
        ("/lab/app", True),
        ("nolab/app", True),
        ("x*/app", True),
        ("lab/**/", True),
    ],
)
def test_never_matching_globs(glob: str, never: bool) -> None:
    assert bool(never_matches(glob, ("lab", "docker.io"))) is never


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("lab/*", "lab/*", True),
        ("**", "lab/x/**", True),
        ("lab/*", "lab/app", True),
        ("lab/**", "lab/team/*", True),
        ("lab/**", "lab/app", True),
        ("lab/*", "lab/team/app", False),
        ("lab/team/*", "lab/**", False),
        ("lab/**", "docker.io/*", False),
        ("lab/app", "lab/*", False),
    ],
)
def test_shadowing(earlier: str, later: str, shadowed: bool) -> None:
    assert covers(earlier, later) is shadowed


def test_config_errors_carry_each_error() -> None:
    from pullguard.services.runtime.config import parse_config

    with pytest.raises(ConfigErrors) as info:
        parse_config("listen: x\ngrpc_listen: y\nupstreams: {}\n", "f.yaml", Path("/"))
    keys = [error.key for error in info.value.errors]
    assert keys == ["listen", "grpc_listen", "upstreams"]
