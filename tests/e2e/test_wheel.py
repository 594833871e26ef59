"""`pip wheel .` on a fresh clone gives a wheel that works outside the checkout.

The generated gRPC code is never committed, so a clone has none: the wheel
must get it from the build hook (setup.py), and an installed pullguard must
import every service from the venv alone, not from this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pullguard.services.runtime.config import SERVICES
from tests.support.shared import REPO

PROTOS = ("analysis", "common", "fetcher", "format", "gateway", "hashverify", "signature", "source")

# Each service's entry module (what `pullguard serve SERVICE` starts) and the
# generated code of every proto.
IMPORT_CHECK = """
import importlib, sys
import pullguard
services = sys.argv[1].split(",")
protos = sys.argv[2].split(",")
for name in services:
    module = "pullguard.gateway.app" if name == "gateway" else f"pullguard.services.{name}.servicer"
    importlib.import_module(module)
for name in protos:
    importlib.import_module(f"pullguard.v1.{name}_pb2")
    importlib.import_module(f"pullguard.v1.{name}_pb2_grpc")
print(pullguard.__file__)
"""


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout with the wheel of a fresh clone installed."""
    work = tmp_path_factory.mktemp("wheel")
    clone = work / "clone"
    _run("git", "clone", "-q", REPO, clone, cwd=work)
    assert not list((clone / "protos" / "pullguard" / "v1").glob("*_pb2*.py"))
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", ".", cwd=clone
    )
    wheels = list((work / "dist").glob("pullguard-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=work)
    _borrow_dependencies(venv)
    _run(venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", wheels[0], cwd=work)
    return venv


def _borrow_dependencies(venv: Path) -> None:
    """Let the new venv import the test venv's dependencies, never its pullguard.

    Installing them again would download every dependency from PyPI in each
    run (a minute, and traffic beyond loopback). A plain path in a .pth file
    is appended to sys.path after the venv's own site-packages, and, unlike
    a site folder, its own .pth files are not run: the editable install's
    finder, which maps ``pullguard`` to this checkout, stays out. The test
    below still checks where ``pullguard`` was imported from.
    """
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    found = subprocess.run(
        [venv / "bin" / "python", "-c", where],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    pth = Path(found.stdout.strip()) / "_pullguard_test_dependencies.pth"
    pth.write_text("".join(f"{path}\n" for path in sorted(borrowed)))


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_installed_wheel_reports_its_version(installed: Path, tmp_path: Path) -> None:
    out = _run(installed / "bin" / "pullguard", "--version", cwd=tmp_path, env=_clean_env())
    assert out.strip() == "pullguard 0.1.0"


def test_installed_wheel_imports_every_service_and_the_generated_code(
    installed: Path, tmp_path: Path
) -> None:
    out = _run(
        installed / "bin" / "python",
        "-c",
        IMPORT_CHECK,
        ",".join(SERVICES),
        ",".join(PROTOS),
        cwd=tmp_path,
        env=_clean_env(),
    )
    where = Path(out.strip().splitlines()[-1]).resolve()
    assert where.is_relative_to(installed.resolve()), f"imported from {where}, not the venv"
    assert not where.is_relative_to(REPO.resolve())
