"""CPU seconds of format's layer read: decompress + diff_id hash (issue 9).

Times :func:`~pullguard.services.format.decompress.uncompressed_chunks` and
the sha256 of its output, in one thread, for two gzip -6 layers:

- ``random``: incompressible data, as ``make bench`` pulls;
- ``system``: a tar of this machine's /usr/lib and /usr/share (text and
  binaries, like real image layers), cut at the size asked.

It measures whatever code is checked out: run it before and after a change.
The layers are built once into ``--workdir`` and reused. CPU time, not wall
time, so other work on the machine disturbs it less::

    .venv/bin/python tests/bench/inflate.py --runs 3 --workdir /tmp/inflate-bench
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import tarfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pullguard.services.format.decompress import CompressedSource, uncompressed_chunks  # noqa: E402

MIB = 1024 * 1024


def _gzip(raw: bytes) -> bytes:
    # gzip -6 as the gzip tool writes it (zlib's deflate, level 6, mtime 0).
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    return deflater.compress(raw) + deflater.flush()


def _random_tar(size: int) -> bytes:
    data = hashlib.shake_256(b"pullguard-inflate-bench").digest(size)
    return _tar({"data/random.bin": data})


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _system_tar(size: int, roots: tuple[str, ...] = ("/usr/lib", "/usr/share")) -> bytes:
    """Regular files of ``roots`` in sorted order until the tar holds ``size`` bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for root in roots:
            for folder, dirs, names in os.walk(root):
                dirs.sort()
                for name in sorted(names):
                    path = os.path.join(folder, name)
                    if not os.path.isfile(path) or os.path.islink(path):
                        continue
                    try:
                        data = Path(path).read_bytes()
                    except OSError:
                        continue
                    data = data[: max(size - out.tell(), 0)]
                    info = tarfile.TarInfo(path.lstrip("/"))
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                    if out.tell() >= size:
                        return out.getvalue()
    return out.getvalue()


def layer(workdir: Path, kind: str, mib: int) -> Path:
    path = workdir / f"{kind}-{mib}mib.tar.gz"
    if not path.exists():
        raw = _random_tar(mib * MIB) if kind == "random" else _system_tar(mib * MIB)
        path.write_bytes(_gzip(raw))
    return path


def read_once(path: Path) -> tuple[float, int, str]:
    """CPU seconds, uncompressed bytes and diff_id of one read of ``path``."""
    diff_id = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        start = time.process_time()
        for chunk in uncompressed_chunks(CompressedSource(handle), "gzip"):
            diff_id.update(chunk)
            size += len(chunk)
        return time.process_time() - start, size, diff_id.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pullguard-inflate-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for kind in ("random", "system"):
        path = layer(args.workdir, kind, args.mib)
        times = []
        for _ in range(args.runs):
            seconds, size, digest = read_once(path)
            times.append(seconds)
        print(
            f"{kind:7} {path.stat().st_size / MIB:6.1f} MiB gz -> {size / MIB:6.1f} MiB"
            f"  cpu min {min(times):.3f} s  median {statistics.median(times):.3f} s"
            f"  runs {' '.join(f'{t:.3f}' for t in times)}  sha256:{digest[:12]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
