from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pullguard.services.runtime.denylist import DenyList, DenyListError

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def test_inline_and_file_entries(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(f"# known bad\n{B}\n\n{C}  # trailing comment\n")
    deny = DenyList([A], path)
    assert A in deny and B in deny and C in deny
    assert "sha256:" + "d" * 64 not in deny


def test_file_update_is_seen_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(f"{A}\n")
    deny = DenyList([], path)
    assert B not in deny
    path.write_text(f"{A}\n{B}\n")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert B in deny


def test_large_file(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    entries = [f"sha256:{i:064x}" for i in range(100_000)]
    path.write_text("\n".join(entries))
    deny = DenyList([], path)
    assert entries[54321] in deny and len(deny) == 100_000


@pytest.mark.parametrize("line", ["sha256:" + "A" * 64, "md5:" + "a" * 32, "not a digest"])
def test_malformed_file_is_an_error_not_an_empty_list(tmp_path: Path, line: str) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(f"{A}\n{line}\n")
    with pytest.raises(DenyListError, match="deny.txt:2"):
        _ = A in DenyList([], path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    deny = DenyList([], tmp_path / "gone.txt")
    with pytest.raises(DenyListError):
        _ = A in deny
