"""The staging content store shared by the fetcher and the checks.

Layout: ``<root>/<session>/<algorithm>/<hex>``. A session is one pull's
scratch space: ``<replica>/<decision id>`` for a gateway replica (each
gateway has its own folder under the root, and at start-up empties only that
one), or a bare name. Content is written to a temporary
file and renamed into place on commit, so a reader never sees half a blob.
Keys are digests validated by :mod:`digests`, so no key can name a path
outside the store. The key says what the content was fetched *as*; it is a
claim that hashverify checks by reading the bytes itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pullguard.services.runtime.digests import parse_digest
from pullguard.services.runtime.errors import StagingError, StagingFull

#: Errors that mean the staging filesystem is full (or the quota used up).
_FULL = (errno.ENOSPC, errno.EDQUOT)

#: Bytes written between two starts of write-back (see StagedWriter.write).
WRITEBACK_STEP = 8 << 20
#: sync_file_range(2)'s "start writing these pages out, do not wait".
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(2) from the C library, or None where there is none."""
    try:
        # The running program's own symbols: libc's among them, found without
        # find_library (which runs ldconfig in a subprocess).
        libc = ctypes.CDLL(None)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start_writeback(fd: int, offset: int, length: int) -> None:
        # A hint only: its result is not checked, because the fsync at
        # commit writes whatever is left and reports any error itself.
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    return start_writeback


#: Starts the kernel writing a range of a file to disk without waiting for it.
start_writeback = _load_sync_file_range()

#: A gateway replica's folder name (see ``replica_id`` in the README).
REPLICA_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
#: ``[<replica>/]<name>``: at most one level below a replica's folder.
_SESSION_RE = re.compile(r"(?:[a-z0-9][a-z0-9_.-]{0,62}/)?[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class FileStamp:
    """Which staged file a verifier hashed, and in what state.

    hashverify takes it from the open file before hashing and sends it with
    its verdict only when the file was unchanged at the end of the read; the
    gateway then moves that file into the admitted store without hashing it a
    fifth time, if a ``stat`` there still gives the same stamp. Any write
    changes ``ctime_ns`` (no call can set it back), a replaced file has
    another inode, so a stamp that differs in any field means other bytes
    may be there: they are hashed again.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStamp:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class StagedWriter:
    """A temporary file that becomes visible under a key only on commit.

    Every :data:`WRITEBACK_STEP` bytes it asks the kernel to start writing the
    new bytes to disk, without waiting: the disk works while the body still
    arrives, and the fsync at commit only waits for the last step. Without
    this, a 64 MiB blob waited about 0.1 s at commit for all of its pages.
    """

    def __init__(self, store: StagingStore, session: str) -> None:
        self._store = store
        self._session = session
        session_dir = store.session_dir(session)
        with _full_is_staging_full():
            session_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".partial-", dir=session_dir)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._temp = Path(name)
        self._committed = False
        self.size = 0
        #: Bytes already handed to the kernel's write-back.
        self._written_back = 0

    def write(self, data: bytes) -> None:
        with _full_is_staging_full():
            self._file.write(data)
            self.size += len(data)
            if self.size - self._written_back >= WRITEBACK_STEP and start_writeback is not None:
                self._file.flush()
                start_writeback(
                    self._file.fileno(), self._written_back, self.size - self._written_back
                )
                self._written_back = self.size

    def commit(self, key: str) -> Path:
        """Flush, fsync and rename into place under ``key``."""
        target = self._store.path(self._session, key)
        with _full_is_staging_full():
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, target)
        self._committed = True
        return target

    def abort(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:
                if exc.errno not in _FULL:
                    raise
                # Buffered bytes could not be flushed: the file goes anyway.
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> StagedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.abort()


@contextlib.contextmanager
def _full_is_staging_full() -> Iterator[None]:
    """Turn "no space left" into StagingFull: an outage with a clear message."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise StagingFull() from None
        raise


class StagingStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        #: Lock files of the replica folders this process holds (claim_replica).
        self._claims: list[BinaryIO] = []

    def session_dir(self, session: str) -> Path:
        if not _SESSION_RE.fullmatch(session):
            raise StagingError(f"invalid staging session {session[:80]!r}")
        return self.root / session

    def path(self, session: str, key: str) -> Path:
        try:
            algorithm, encoded = parse_digest(key)
        except ValueError as exc:
            raise StagingError(f"invalid staging key: {exc}") from None
        return self.session_dir(session) / algorithm / encoded

    def writer(self, session: str) -> StagedWriter:
        return StagedWriter(self, session)

    def exists(self, session: str, key: str) -> bool:
        return self.path(session, key).is_file()

    def open(self, session: str, key: str) -> BinaryIO:
        path = self.path(session, key)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise StagingError(f"{key} is not staged in session {session}") from None

    def read(self, session: str, key: str, limit: int) -> bytes:
        """Read a staged object of at most ``limit`` bytes."""
        with self.open(session, key) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StagingError(f"{key} is larger than {limit} bytes")
        return data

    def discard(self, session: str) -> None:
        shutil.rmtree(self.session_dir(session), ignore_errors=True)

    def replica_dir(self, replica: str) -> Path:
        if not REPLICA_RE.fullmatch(replica):
            raise StagingError(f"invalid replica id {replica[:80]!r}")
        return self.root / replica

    def claim_replica(self, replica: str) -> None:
        """Hold ``replica``'s folder for as long as this store lives (an flock).

        Two gateways given one replica id on one state_dir would empty each
        other's pulls at start-up: the second is refused instead. The lock
        files live beside the store (``<state_dir>/replicas/``), not in it.
        """
        locks = self.root.parent / "replicas"
        locks.mkdir(parents=True, exist_ok=True)
        handle = (locks / self.replica_dir(replica).name).open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StagingError(
                f"replica id {replica!r} is in use by another gateway on {self.root}:"
                " give each replica its own replica_id (or PULLGUARD_REPLICA_ID)"
            ) from None
        self._claims.append(handle)

    def clear_replica(self, replica: str) -> None:
        """Empty one replica's folder: what its pulls left when it stopped.

        Only that replica's own: another replica's pulls in flight stay.
        """
        shutil.rmtree(self.replica_dir(replica), ignore_errors=True)
