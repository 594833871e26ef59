"""Render deploy/k8s with a real kustomize: a `kustomize` binary, else
`kubectl kustomize` (kubectl 1.21 or later: components)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.shared import REPO

K8S = REPO / "deploy" / "k8s"


def _kustomize() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    assert shutil.which("kubectl"), "neither kustomize nor kubectl: run make system-deps"
    return ["kubectl", "kustomize"]


def render(path: Path) -> list[dict[str, Any]]:
    """Every object kustomize renders from the kustomization at path."""
    done = subprocess.run(
        [*_kustomize(), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kustomize {path}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]
