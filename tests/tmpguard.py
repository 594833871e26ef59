"""A test run leaves nothing behind in the system's temporary folder.

The session gets a temporary folder of its own: ``TMPDIR`` points there for
the tests and every process they start, and pytest's ``tmp_path`` folders
live there too. At the end, anything in it besides pytest's own folders is a
leak: it is listed and fails the run. The folder is removed either way.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = pytest.StashKey[tuple[Path, str | None]]()
_PYTEST_OWN = "pytest-of-"
_MAX_LISTED = 20


def start(config: pytest.Config) -> None:
    root = Path(tempfile.mkdtemp(prefix="pgt-"))  # short: socket and runroot paths have limits
    config.stash[_ROOT] = (root, os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = str(root)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def leftovers(config: pytest.Config) -> list[Path]:
    if _ROOT not in config.stash:
        return []
    root, _ = config.stash[_ROOT]
    return sorted(p for p in root.iterdir() if not p.name.startswith(_PYTEST_OWN))


def check(session: pytest.Session) -> None:
    left = leftovers(session.config)
    if not left:
        return
    names = ", ".join(p.name for p in left[:_MAX_LISTED])
    more = f" and {len(left) - _MAX_LISTED} more" if len(left) > _MAX_LISTED else ""
    sys.stderr.write(
        f"\ntests left {len(left)} entries in their temporary folder: {names}{more}\n"
        "(use tmp_path, or remove what a test creates)\n"
    )
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def finish(config: pytest.Config) -> None:
    if _ROOT not in config.stash:
        return
    root, previous = config.stash[_ROOT]
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous
    tempfile.tempdir = None
    shutil.rmtree(root, onerror=_report_unremovable)


def _report_unremovable(_function: object, path: str, _info: object) -> None:
    sys.stderr.write(f"could not remove {path} after the tests\n")
