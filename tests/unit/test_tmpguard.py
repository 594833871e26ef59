"""The test session's temporary-folder guard (tests/tmpguard.py), run on a
small suite of its own in a child pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SUITE = """
import tempfile


def test_uses_tmp_path(tmp_path):
    (tmp_path / "kept-by-pytest").write_text("x")


def test_leaks():
    if LEAK:
        tempfile.mkdtemp(prefix="leaky-")
"""


def _run(
    tmp_path: Path, leak: bool, workers: int = 0
) -> tuple[subprocess.CompletedProcess[str], Path]:
    system_tmp = tmp_path / f"system-tmp-{leak}"
    system_tmp.mkdir()
    suite = tmp_path / f"suite-{leak}"
    suite.mkdir()
    (suite / "test_child.py").write_text(f"LEAK = {leak}\n" + SUITE)
    (suite / "test_other.py").write_text("LEAK = False\n" + SUITE)
    env = {**os.environ, "TMPDIR": str(system_tmp), "PYTHONPATH": str(REPO)}
    parallel = ["-n", str(workers), "--dist", "loadfile"] if workers else ["-p", "no:xdist"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
        + [*parallel, "--rootdir", str(suite), "-c", os.devnull, str(suite)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=suite,
        env=env,
    )
    return done, system_tmp


def test_a_leaking_test_fails_the_run_and_nothing_stays(tmp_path: Path) -> None:
    done, system_tmp = _run(tmp_path, leak=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tests left 1 entries in their temporary folder: leaky-" in done.stderr
    assert list(system_tmp.iterdir()) == []


def test_a_clean_run_passes_and_nothing_stays(tmp_path: Path) -> None:
    done, system_tmp = _run(tmp_path, leak=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests left" not in done.stderr
    assert list(system_tmp.iterdir()) == []


def test_a_leak_in_a_parallel_worker_fails_the_run_and_nothing_stays(tmp_path: Path) -> None:
    done, system_tmp = _run(tmp_path, leak=True, workers=2)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 passed" in done.stdout  # the workers' own folders are not leaks
    assert "tests left 1 entries in their temporary folder: gw" in done.stderr
    assert "/leaky-" in done.stderr
    assert list(system_tmp.iterdir()) == []
