"""Where the project's shared material (../shared) lives for tests.

CI and developers have it beside the checkout; PULLGUARD_SHARED overrides.
A test that needs it fails when it is missing: a skipped check is not a check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    return Path(os.environ.get("PULLGUARD_SHARED", REPO.parent / "shared"))


def conformance(name: str) -> Path:
    path = shared_dir() / "conformance" / name
    if not path.is_dir():
        pytest.fail(
            f"conformance data {path} is missing: put shared/ beside the checkout"
            " or set PULLGUARD_SHARED"
        )
    return path
