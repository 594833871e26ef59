"""Pull benchmark: a 4-layer image (100 MiB by default) on loopback.

Measures, in one run and on the same image:
  direct  skopeo copy from the upstream registry
  cold    skopeo copy through pullguard, nothing admitted yet
  warm    the same pull again, admitted under the same policy
Each measurement is repeated (fresh pullguard state for every cold pull) and
the median is printed. Run with `make bench`, or directly with --mib/--layers/--runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.images import build_image, pull, push, random_layers  # noqa: E402
from tests.support.registry_process import RegistryProcess  # noqa: E402
from tests.support.stack import Pullguard, write_config  # noqa: E402


def timed_pull(source: str, destination: Path) -> float:
    shutil.rmtree(destination, ignore_errors=True)
    started = time.perf_counter()
    result = pull(source, destination, "v1")
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"pull of {source} failed: {result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--inspect",
        choices=("on", "off", "both"),
        default="on",
        help="layer inspection (rule key layers.inspect); 'both' measures each, in one run",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pullguard-bench-"))
    upstream = RegistryProcess(root / "upstream")
    upstream.start()
    try:
        size = args.mib * 1024 * 1024 // args.layers
        image = build_image(root / "src", "v1", random_layers(args.layers, size, seed=7))
        push(image, upstream.address, "bench/app")
        total = sum(len(layer) for layer in image.layers)
        print(f"image: {args.layers} layers, {total / 2**20:.1f} MiB compressed, {image.digest}")
        modes = ["on", "off"] if args.inspect == "both" else [args.inspect]
        direct: list[float] = []
        cold: dict[str, list[float]] = {mode: [] for mode in modes}
        warm: dict[str, list[float]] = {mode: [] for mode in modes}
        for run in range(args.runs):
            direct.append(timed_pull(f"{upstream.address}/bench/app:v1", root / "direct"))
            for mode in modes:
                run_dir = root / f"run{run}-{mode}"
                run_dir.mkdir()
                policy = {
                    "rules": [
                        {
                            "match": "lab/**",
                            "signature": "none",
                            "layers": {"inspect": mode == "on"},
                        }
                    ]
                }
                path, config = write_config(run_dir, upstream.url, policy=policy)
                pg = Pullguard(path, config)
                pg.start()
                try:
                    cold[mode].append(timed_pull(f"{pg.address}/lab/bench/app:v1", root / "cold"))
                    warm[mode].append(timed_pull(f"{pg.address}/lab/bench/app:v1", root / "warm"))
                finally:
                    pg.stop()
        rows = [("direct skopeo copy", direct)]
        for mode in modes:
            rows += [
                (f"cold, inspection {mode}", cold[mode]),
                (f"warm, inspection {mode}", warm[mode]),
            ]
        for name, values in rows:
            print(
                f"{name:<24} median {statistics.median(values):6.2f} s   runs "
                + " ".join(f"{v:.2f}" for v in values)
            )
    finally:
        upstream.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
