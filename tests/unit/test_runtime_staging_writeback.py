"""StagedWriter starts the disk's write-back as a body arrives, not at commit.

The commit's fsync then waits for the last step only. The hint is checked
here with the writer's real file: each range handed to the kernel is the
next one, already flushed out of Python's buffer, and the committed file is
the bytes written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pullguard.services.runtime import staging
from pullguard.services.runtime.staging import WRITEBACK_STEP, StagingStore

KEY = "sha256:" + "ab" * 32


def test_each_step_of_new_bytes_is_handed_to_write_back_once_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[int, int]] = []
    on_disk: list[int] = []

    def record(fd: int, offset: int, length: int) -> None:
        ranges.append((offset, length))
        on_disk.append(os.fstat(fd).st_size)

    monkeypatch.setattr(staging, "start_writeback", record)
    # Smaller than Python's buffer, and steps do not fall on piece edges.
    piece = os.urandom(1001)
    pieces = (2 * WRITEBACK_STEP + WRITEBACK_STEP // 2) // len(piece)
    store = StagingStore(tmp_path)
    with store.writer("s1") as writer:
        for _ in range(pieces):
            writer.write(piece)
        path = writer.commit(KEY)
    assert len(ranges) == 2
    # Contiguous, from the start, each at least a step long.
    assert ranges[0][0] == 0
    assert ranges[1][0] == sum(ranges[0])
    assert all(length >= WRITEBACK_STEP for _, length in ranges)
    # The kernel can only write what left Python's buffer.
    assert on_disk == [sum(r) for r in ranges]
    assert path.read_bytes() == piece * pieces


def test_a_blob_smaller_than_a_step_is_left_to_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(staging, "start_writeback", lambda fd, o, n: ranges.append((o, n)))
    with StagingStore(tmp_path).writer("s1") as writer:
        writer.write(b"x" * (WRITEBACK_STEP - 1))
        writer.commit(KEY)
    assert ranges == []


def test_the_c_library_s_sync_file_range_is_found_and_takes_a_real_file(tmp_path: Path) -> None:
    assert staging.start_writeback is not None
    store = StagingStore(tmp_path)
    data = os.urandom(3 * WRITEBACK_STEP)
    with store.writer("s1") as writer:
        writer.write(data)
        path = writer.commit(KEY)
    assert path.read_bytes() == data
