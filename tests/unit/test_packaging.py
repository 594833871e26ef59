"""The wheel lists its packages by hand (one namespace over three folders), so a
new sub-package left out of pyproject.toml would be missing from every
installed copy while the checkout still works. tests/e2e/test_wheel.py finds
that by installing the wheel; this finds it in a second."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for namespace, folder in setuptools["package-dir"].items():
        if namespace == "pullguard":
            continue
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder).parts
            package = ".".join((namespace, *relative))
            assert package in listed, f"{package} ({init.parent}) is not in pyproject's packages"
