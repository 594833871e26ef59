"""docs/threats.md covers the whole catalogue, and every test it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.shared import REPO, data_file

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "threats.md"
REFERENCE_RE = re.compile(r"(tests/[\w/]+\.py)?::(test_\w+)")


def test_every_catalogue_id_is_documented() -> None:
    catalogue = data_file("THREATS.md")
    ids = set(re.findall(r"^### ([A-Z]-[0-9]{2}) ", catalogue.read_text(), re.MULTILINE))
    assert len(ids) >= 52
    documented = set(re.findall(r"^\| ([A-Z]-[0-9]{2}) \|", DOC.read_text(), re.MULTILINE))
    assert sorted(ids - documented) == []


def test_catalogue_copy_is_current() -> None:
    """The copy in tests/data is the catalogue beside the checkout, where there is one."""
    beside = REPO.parent / "shared" / "THREATS.md"
    if beside.is_file():
        assert data_file("THREATS.md").read_text() == beside.read_text(), (
            f"copy {beside} to tests/data/THREATS.md"
        )


def test_generated_document_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "threats_doc", ROOT / "scripts" / "threats_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DOC.read_text() == module.build(), "run scripts/threats_doc.py"


def test_every_cited_test_exists() -> None:
    missing = []
    for line in DOC.read_text().splitlines():
        current: str | None = None
        for path, name in REFERENCE_RE.findall(line):
            current = path or current
            if current is None:
                continue
            source = ROOT / current
            if not source.is_file() or not re.search(
                rf"def {re.escape(name)}\b", source.read_text()
            ):
                missing.append(f"{current}::{name}")
    assert missing == []
