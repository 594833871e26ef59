"""A test run leaves nothing behind in the system's temporary folder.

The session gets a temporary folder of its own: ``TMPDIR`` points there for
the tests and every process they start, and pytest's ``tmp_path`` folders
live there too. At the end, anything in it besides pytest's own folders is a
leak: it is listed and fails the run. The folder is removed either way.

Under pytest-xdist each worker gets a folder inside the controller's (the
workers start after the controller has set ``TMPDIR``), named by its id
``gw0``: short, as podman refuses a runroot path over 50 characters. The
controller, which alone decides the run's exit status, checks every
worker's folder once they have all finished. A worker leaves its folder for
that check; the controller removes it with its own.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = pytest.StashKey[tuple[Path, str | None]]()
_PYTEST_OWN = "pytest-of-"
#: A worker's folder: its xdist id.
_WORKER = re.compile(r"gw[0-9]+")
_MAX_LISTED = 20


def _worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id (``gw0``), or None in the controller or without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput is not None else None


def start(config: pytest.Config) -> None:
    worker = _worker_id(config)
    if worker is None:
        root = Path(tempfile.mkdtemp(prefix="pgt-"))  # short: socket and runroot paths have limits
    else:
        root = Path(tempfile.gettempdir()) / worker
        root.mkdir()
    config.stash[_ROOT] = (root, os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = str(root)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def leftovers(config: pytest.Config) -> list[Path]:
    if _ROOT not in config.stash:
        return []
    root, _ = config.stash[_ROOT]
    left = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(_PYTEST_OWN):
            continue
        if _WORKER.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            left += [p for p in sorted(path.iterdir()) if not p.name.startswith(_PYTEST_OWN)]
            continue
        left.append(path)
    return left


def check(session: pytest.Session) -> None:
    config = session.config
    if _worker_id(config) is not None or _ROOT not in config.stash:
        return  # a worker's folder is checked by the controller, after every worker has finished
    root, _ = config.stash[_ROOT]
    left = leftovers(config)
    if not left:
        return
    names = ", ".join(str(p.relative_to(root)) for p in left[:_MAX_LISTED])
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
    if _worker_id(config) is None:
        shutil.rmtree(root, onerror=_report_unremovable)


def _report_unremovable(_function: object, path: str, _info: object) -> None:
    sys.stderr.write(f"could not remove {path} after the tests\n")
