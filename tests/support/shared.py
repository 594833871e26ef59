"""Where the tests' third-party data lives: in the repository, under tests/data.

tests/data/README.md names where each set came from and its licence. A test
that needs a set fails when it is missing: a skipped check is not a check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"test data {path} is missing (see tests/data/README.md)")
    return path


def conformance(name: str) -> Path:
    path = DATA / "conformance" / name
    if not path.is_dir():
        pytest.fail(f"conformance data {path} is missing (see tests/data/README.md)")
    return path
