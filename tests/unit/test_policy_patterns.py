"""Operator-written regexes run in RE2: linear time on attacker-chosen input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.patterns import GlobKind, compile_glob
from pullguard.services.signature.identity import IdentityConfigError, KeylessSigner
from tests.support.configs import make_config

# With Python's backtracking `re`, each of these takes about 2^n steps.
PROBE = textwrap.dedent(
    """
    import tempfile
    from pathlib import Path
    from pullguard.services.analysis.planner import Planner
    from pullguard.services.signature.identity import CertIdentity, KeylessSigner
    from tests.support.configs import make_config

    rule = {"match": "lab/**", "tags": {"allow": ["^(a+)+$"]}}
    with tempfile.TemporaryDirectory() as folder:
        config = make_config(Path(folder), policy={"rules": [rule]})
        verdict, _ = Planner(config).plan("lab/app", "a" * 100 + "-")
    print([f.code for f in verdict.findings])
    signer = KeylessSigner.create("https://issuer", subject_regex="^(a|aa)+$")
    print(signer.matches(CertIdentity("https://issuer", ("a" * 5000 + "b",))))
    """
)


def test_catastrophic_patterns_finish_at_once_on_hostile_input() -> None:
    # In a child process, so that a regression fails the test instead of hanging it.
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['analysis.tag_not_allowed']", "False"]


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"^(v)\1$", "RE2"),
        (r"^(?=v)v1$", "RE2"),
        ("v1", "anchored"),
        ("^v1", "anchored"),
        ("^v1\\$", "anchored"),
        ("^" + "a" * 2000 + "$", "at most 1024"),
    ],
)
def test_tag_patterns_outside_re2_or_unanchored_are_config_errors(
    tmp_path: Path, pattern: str, words: str
) -> None:
    rule = {"match": "lab/**", "tags": {"allow": [pattern]}}
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, policy={"rules": [rule]})
    assert "policy.rules[0].tags.allow[0]" in str(info.value)
    assert words in str(info.value)


def test_subject_regex_outside_re2_is_refused() -> None:
    with pytest.raises(IdentityConfigError, match="RE2"):
        KeylessSigner.create("https://issuer", subject_regex=r"^(?!evil).*$")
    signer = KeylessSigner.create("https://issuer", subject_regex=r"^https://github\.com/o/.*$")
    assert signer.name.startswith("~^https://github")


@pytest.mark.parametrize(
    ("glob", "kind", "text", "matches"),
    [
        # `*`: empty within a repository segment, never in a value.
        ("lab/app*", GlobKind.REPOSITORY, "lab/app", True),
        ("https://h/o/*", GlobKind.VALUE, "https://h/o/", False),
        ("https://h/o/*", GlobKind.VALUE, "https://h/o/x", True),
        # `?`: one character in a repository name, itself in a URL.
        ("lab/ap?", GlobKind.REPOSITORY, "lab/app", True),
        ("https://h/o?a=*", GlobKind.VALUE, "https://h/ox", False),
        ("https://h/o?a=*", GlobKind.VALUE, "https://h/o?a=1", True),
        # `**`: spans segments in a repository name, two `*` in a value.
        ("lab/**", GlobKind.REPOSITORY, "lab/a/b", True),
        ("https://h/**", GlobKind.VALUE, "https://h/a/b", False),
        ("https://h/**", GlobKind.VALUE, "https://h/a", False),
        ("https://h/**", GlobKind.VALUE, "https://h/ab", True),
    ],
)
def test_one_glob_compiler_two_dialects(
    glob: str, kind: GlobKind, text: str, matches: bool
) -> None:
    assert bool(compile_glob(glob, kind).fullmatch(text)) is matches
