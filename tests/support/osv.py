"""Build osv.dev-shaped archives (flat <ID>.json members) for the tests."""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway_process import layer_process
from tests.support.stack import free_port

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


def osv_folder(folder: Path, ecosystems: tuple[str, ...] = ("Debian", "PyPI", "npm")) -> Path:
    """A database folder as `pullguard vulndb` keeps one: <ecosystem>.zip each."""
    folder.mkdir(parents=True, exist_ok=True)
    for ecosystem in ecosystems:
        write_zip(folder / f"{ecosystem}.zip", fixture_records(ecosystem))
    return folder


@contextlib.contextmanager
def vulnerability_layer(tmp_path: Path, **vulnerabilities: Any) -> Iterator[tuple[str, Path]]:
    """``pullguard serve vulnerability`` as a real process on a free port, stopped by its PID.

    Yields its address and its configuration file; ``vulnerabilities`` is the
    top-level key (``osv`` defaults to a folder of the fixture records)."""
    settings = dict(vulnerabilities)
    if "osv" not in settings:
        settings["osv"] = str(osv_folder(tmp_path / "osv"))
    config = {
        "state_dir": str(tmp_path / "state"),
        "upstreams": {"lab": {"url": "http://127.0.0.1:5001", "insecure": True}},
        "vulnerabilities": settings,
        "policy": {"rules": [{"match": "lab/**", "signature": "none"}]},
    }
    path = tmp_path / "vulnerability.yaml"
    path.write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    process = layer_process("vulnerability", address, path)
    process.start()
    try:
        process.wait_healthy()
        yield address, path
    finally:
        process.stop()
