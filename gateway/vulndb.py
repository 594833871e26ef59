"""``pullguard vulndb``: the vulnerability layer's OSV database, kept by the operator.

- ``sync [--ecosystem E ...] [--url-base URL]`` downloads each ecosystem's
  ``all.zip`` (osv.dev's layout: ``<url-base>/<ecosystem>/all.zip``), bounded
  in bytes and time, and installs it once verified;
- ``import FILE [--ecosystem E]`` installs an archive fetched elsewhere
  (air-gapped sites);
- ``status`` lists each ecosystem's record count and age.

The running layer notices the new files and reloads (see
:mod:`pullguard.services.vulnerability.database`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import BinaryIO

import httpx

from pullguard.services.runtime.config import Config
from pullguard.services.runtime.config.vulnerabilities import VulnerabilityDatabase
from pullguard.services.runtime.errors import PullguardError
from pullguard.services.vulnerability.archive import ArchiveError, check_ecosystem, install, status

OSV_URL_BASE = "https://osv-vulnerabilities.storage.googleapis.com"
#: Seconds a download may take in all, and may stay silent.
SYNC_DEADLINE = 1800.0
SYNC_IDLE = 60.0


def add_arguments(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], epilog: str, config_help: str
) -> None:
    vulndb = sub.add_parser(
        "vulndb",
        help="the OSV database of the vulnerability layer: sync, import, status",
        epilog=epilog,
    )
    actions = vulndb.add_subparsers(dest="action", required=True)
    sync = actions.add_parser("sync", help="download osv.dev's per-ecosystem all.zip, verified")
    sync.add_argument("--ecosystem", action="append", default=[], help="e.g. Debian (repeatable)")
    sync.add_argument("--url-base", default=OSV_URL_BASE, help=f"default {OSV_URL_BASE}")
    sync.add_argument("--config", help=config_help)
    imported = actions.add_parser("import", help="install a downloaded archive (air-gapped)")
    imported.add_argument("file")
    imported.add_argument("--ecosystem", help="the archive's ecosystem (default: its records')")
    imported.add_argument("--config", help=config_help)
    shown = actions.add_parser("status", help="each ecosystem's record count and age")
    shown.add_argument("--config", help=config_help)


def run(args: argparse.Namespace, config: Config) -> int:
    settings = config.vulnerability_database
    if settings is None:
        raise PullguardError(f"{config.source}: no vulnerabilities.osv configured")
    try:
        if args.action == "import":
            verified = install(Path(args.file), settings, args.ecosystem)
            print(f"{verified.ecosystem}: {verified.records} records installed in {settings.osv}")
            return 0
        if args.action == "sync":
            return _sync(settings, args.ecosystem, args.url_base)
        for item in status(settings):
            print(
                f"{item.ecosystem}\t{item.records} records\t{_age(item.age_seconds)}\t{item.path}"
            )
        return 0
    except ArchiveError as exc:
        raise PullguardError(f"vulndb: {exc}") from None


def _sync(settings: VulnerabilityDatabase, ecosystems: list[str], url_base: str) -> int:
    names = ecosystems or [item.ecosystem for item in status(settings)]
    if not names:
        raise PullguardError("vulndb sync: name an --ecosystem (the database holds none yet)")
    failed = 0
    for name in names:
        url = f"{url_base.rstrip('/')}/{urllib.parse.quote(check_ecosystem(name))}/all.zip"
        try:
            verified = _download_and_install(url, settings, name)
        except (ArchiveError, PullguardError) as exc:
            failed += 1
            print(f"{name}: not synced, the database keeps what it had: {exc}")
            continue
        print(f"{name}: {verified} records from {url}")
    return 1 if failed else 0


def _download_and_install(url: str, settings: VulnerabilityDatabase, ecosystem: str) -> int:
    folder = settings.osv if settings.osv.suffix != ".zip" else settings.osv.parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            _download(url, out, settings.max_archive_bytes)
        return install(Path(name), settings, ecosystem).records
    finally:
        os.unlink(name)


def _download(url: str, out: BinaryIO, limit: int) -> None:
    """GET ``url`` into ``out``, at most ``limit`` bytes, within the deadlines."""
    deadline = time.monotonic() + SYNC_DEADLINE
    written = 0
    timeout = httpx.Timeout(SYNC_IDLE)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                raise PullguardError(f"{url}: HTTP {response.status_code}")
            for chunk in response.iter_bytes(1024 * 1024):
                written += len(chunk)
                if written > limit:
                    raise PullguardError(f"{url}: larger than {limit} bytes")
                if time.monotonic() > deadline:
                    raise PullguardError(f"{url}: not downloaded within {SYNC_DEADLINE:.0f}s")
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise PullguardError(f"{url}: {type(exc).__name__}: {exc}") from None


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes old"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} hours old"
    return f"{seconds / 86400:.1f} days old"
