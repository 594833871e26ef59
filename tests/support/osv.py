"""Build osv.dev-shaped archives (flat <ID>.json members) for the tests."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

#: The hand-written OSV records, one folder per ecosystem.
OSV_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "osv"


def fixture_records(ecosystem: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((OSV_FIXTURES / ecosystem).glob("*.json"))}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def record(ident: str, ecosystem: str, name: str, fixed: str, **extra: Any) -> bytes:
    data = {
        "schema_version": "1.6.0",
        "id": ident,
        "modified": "2026-12-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                ],
            }
        ],
        **extra,
    }
    return json.dumps(data).encode()
