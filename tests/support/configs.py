"""Build validated configurations for tests from plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pullguard.services.runtime.config import Config, parse_config


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A config with one insecure 'lab' upstream at 127.0.0.1:5001, state under tmp_path.

    Keyword arguments replace top-level keys (e.g. ``policy={...}``).
    """
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "state_dir": str(tmp_path / "state"),
        "upstreams": {"lab": {"url": "http://127.0.0.1:5001", "insecure": True}},
        "default_upstream": "lab",
        "policy": {"rules": [{"match": "**", "signature": "none"}]},
    }
    data.update(overrides)
    text = yaml.safe_dump(data)
    (tmp_path / "pullguard.yaml").write_text(text)
    return parse_config(text, str(tmp_path / "pullguard.yaml"), tmp_path)
