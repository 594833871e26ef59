"""The whole comparison of issue 9 in one run: every path, every round, one table, the goals.

A round measures every path once, one after the other, so the ratios of one
round share the machine's load; each row prints the median of the rounds.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.bench import databases, paths, phases, table, vulnerability
from tests.bench.stampede import run_stampede, upstream_gets
from tests.bench.throttle import ThrottleProxy
from tests.bench.workload import BenchImage, make_image, sha256_pass
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard

SECTIONS = ("main", "throttled", "sizes", "layers", "stampede", "database", "vulnerability")
#: What runs without --sections: issue 9's comparison (``database`` and ``vulnerability``
#: are asked for by name).
DEFAULT_SECTIONS = SECTIONS[:-2]
SIZES_MIB = (64, 256, 1024)
LAYER_COUNTS = (1, 4, 16)
#: Peak RSS at the largest size over the smallest, per process: "flat" allows this much.
RSS_SPREAD = 1.2


@dataclass(frozen=True)
class Options:
    mib: int
    layers: int
    rounds: int
    quick: bool
    rate_mb: float
    clients: int
    stampede_mib: int
    sections: tuple[str, ...]

    @property
    def sizes(self) -> list[int]:
        sizes = {*SIZES_MIB, self.mib}
        return sorted(s for s in sizes if not (self.quick and s > 256 and s != self.mib))

    @property
    def layer_counts(self) -> list[int]:
        return sorted({*LAYER_COUNTS, self.layers})


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="make bench BENCH_ARGS=...",
        description="Cold and warm pulls through pullguard beside skopeo and distribution.",
    )
    parser.add_argument("--mib", type=int, default=256, help="default image size (256)")
    parser.add_argument("--layers", type=int, default=4, help="default image layers (4)")
    parser.add_argument("--rounds", "--runs", type=int, help="rounds (3; with --quick 2)")
    parser.add_argument("--quick", action="store_true", help="no 1 GiB image, 2 rounds")
    parser.add_argument("--rate", type=float, default=100, help="throttled upstream, MB/s (100)")
    parser.add_argument("--clients", type=int, default=100, help="stampede clients (100)")
    parser.add_argument("--stampede-mib", type=int, default=16, help="stampede image (16)")
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"any of {','.join(SECTIONS)} (all but database and vulnerability)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; expected some of {SECTIONS}")
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    if min(args.mib, args.layers, rounds, args.clients, args.stampede_mib) < 1:
        parser.error("--mib, --layers, --rounds, --clients and --stampede-mib want 1 or more")
    return Options(
        args.mib,
        args.layers,
        rounds,
        args.quick,
        args.rate,
        args.clients,
        args.stampede_mib,
        sections,
    )


class Bench:
    """One benchmark run: the upstream, its images, and every value measured."""

    def __init__(
        self,
        root: Path,
        upstream: RegistryProcess,
        options: Options,
        postgresql: databases.Setting | None = None,
    ) -> None:
        self.root = root
        self.upstream = upstream
        self.options = options
        #: Fresh PostgreSQL ``database:`` settings, when the database section runs.
        self.postgresql = postgresql
        self.images: dict[tuple[int, int], BenchImage] = {}
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.phases: dict[str, list[float]] = defaultdict(list)
        #: Peak RSS per image size (MiB of image) and process, the largest of the rounds.
        self.rss: dict[int, dict[str, float]] = defaultdict(dict)
        self.failures: list[str] = []
        #: Rows in other units than seconds.
        self.units: dict[str, str] = {}
        self.goals: list[table.Goal] = []
        #: The vulnerability section's image (a Debian system in its first layer) and database.
        self.debian: BenchImage | None = None
        self.osv: Path | None = None

    # -- set-up ---------------------------------------------------------------

    def image(self, mib: int, layers: int) -> BenchImage:
        key = (mib, layers)
        if key not in self.images:
            progress(f"building and pushing {mib} MiB in {layers} layers")
            seed = 1000 * layers + mib
            self.images[key] = make_image(self.root, self.upstream.address, mib, layers, seed)
            progress(self.images[key].describe())
        return self.images[key]

    def prepare(self) -> None:
        o = self.options
        if {"main", "throttled", "database"} & set(o.sections):
            self.image(o.mib, o.layers)
        if "sizes" in o.sections:
            for mib in o.sizes:
                self.image(mib, o.layers)
        if "layers" in o.sections:
            for count in o.layer_counts:
                self.image(o.mib, count)
        if "vulnerability" in o.sections:
            progress(
                f"building the vulnerability gate's database ({vulnerability.RECORDS} records)"
            )
            self.osv = vulnerability.osv_database(self.root / "osv")
            progress(f"building and pushing {o.mib} MiB in {o.layers} layers with a Debian system")
            self.debian = make_image(
                self.root,
                self.upstream.address,
                o.mib,
                o.layers,
                seed=1000 * o.layers + o.mib,
                first_layer=vulnerability.system_files(),
                name="-debian",
            )
            progress(self.debian.describe())

    # -- measuring ------------------------------------------------------------

    def measure(self, name: str, run: Callable[[], float]) -> float:
        """Run one measurement; a failure is kept for the summary and gives NaN."""
        try:
            value = run()
        except (RuntimeError, OSError, AssertionError) as exc:
            self.failures.append(f"{name}: {exc}")
            progress(f"FAILED {name}: {exc}")
            return math.nan
        self.samples[name].append(value)
        return value

    def pull(self, name: str, source: str) -> float:
        return self.measure(name, lambda: paths.timed_pull(source, self.root / "out"))

    def direct(self, prefix: str, image: BenchImage, registry: str | None = None) -> None:
        self.pull(f"{prefix}direct", paths.via_registry(registry or self.upstream.address, image))

    def distribution(self, prefix: str, image: BenchImage, remote: str, warm: bool) -> None:
        with paths.pull_through_cache(self.root / "cache", remote) as cache:
            source = paths.via_registry(cache.address, image)
            self.pull(f"{prefix}dist cold", source)
            if warm:
                self.pull(f"{prefix}dist warm", source)

    def pullguard(self, prefix: str, image: BenchImage, remote: str, warm: bool) -> None:
        with paths.pullguard_stack(self.root / "pg", remote) as stack:
            source = paths.via_pullguard(stack, image)
            cold = self.pull(f"{prefix}pullguard cold", source)
            if prefix == "" and not math.isnan(cold):
                self.record_phases(stack, image, cold)
            if warm:
                self.pull(f"{prefix}pullguard warm", source)
            if remote == self.upstream.url:
                for process, mib in paths.peak_rss_mib(stack).items():
                    known = self.rss[image.mib].get(process, 0.0)
                    self.rss[image.mib][process] = max(known, mib)

    def on_database(self, name: str, image: BenchImage, setting: databases.Setting) -> None:
        """A cold then a warm pull through a fresh pullguard whose decisions go to ``name``."""
        remote = self.upstream.url
        with paths.pullguard_stack(self.root / "pg", remote, setting()) as stack:
            source = paths.via_pullguard(stack, image)
            self.pull(f"{name}: pullguard cold", source)
            self.pull(f"{name}: pullguard warm", source)
            # Only SQLite leaves its file in the state folder: proof of which one was timed.
            in_sqlite = (stack.state_dir / "decisions.sqlite3").exists()
            if in_sqlite != (name == "sqlite"):
                self.failures.append(f"{name}: decisions.sqlite3 exists: {in_sqlite}")

    def gated(self, label: str, image: BenchImage, gate: dict[str, object] | None) -> None:
        """A cold pull through a fresh pullguard with (or without) the vulnerability gate,
        the stack's start, and what the decision says the gate and format took."""
        started = time.perf_counter()
        with ExitStack() as running:
            try:
                up = running.enter_context(
                    paths.pullguard_stack(self.root / "pg", self.upstream.url, vulnerabilities=gate)
                )
            except AssertionError as exc:
                # A free port taken by another process meanwhile: this round goes without it.
                self.failures.append(f"{label}: pullguard up did not start: {str(exc)[:300]}")
                progress(f"FAILED {label}: pullguard up did not start")
                return
            self.samples[f"{label}: pullguard up ready"].append(time.perf_counter() - started)
            cold = self.pull(f"{label}: pullguard cold", paths.via_pullguard(up, image))
            if math.isnan(cold):
                return
            try:
                decision = phases.cold_decision(up, image.digest)
            except RuntimeError as exc:
                self.failures.append(f"{label}: {exc}")
                return
        for name, value in phases.gate_costs(decision).items():
            key = f"{label}: {name}"
            self.samples[key].append(value)
            self.units[key] = "ms" if name not in ("packages", "advisories matched") else ""

    def vulnerability_round(self, number: int) -> None:
        """Gate on and gate off, in turns first, and this round's ratio of their cold pulls."""
        assert self.debian is not None and self.osv is not None
        runs = [("gate on", vulnerability.gate(self.osv)), ("gate off", None)]
        for label, gate in runs if number % 2 else runs[::-1]:
            self.gated(label, self.debian, gate)
        on, off = self.samples["gate on: pullguard cold"], self.samples["gate off: pullguard cold"]
        if len(on) == len(off) == number:
            name = "gate on / gate off, cold"
            self.samples[name].append(table.ratio(on[-1], off[-1]))
            self.units[name] = ""

    def record_phases(self, stack: Pullguard, image: BenchImage, wall_s: float) -> None:
        try:
            decision = phases.cold_decision(stack, image.digest)
        except RuntimeError as exc:
            self.failures.append(f"phases: {exc}")
            return
        for name, ms in phases.breakdown(decision, wall_s).items():
            self.phases[name].append(ms)

    # -- one round ------------------------------------------------------------

    def round(self, number: int = 1) -> None:
        o = self.options
        url = self.upstream.url
        if "main" in o.sections:
            main = self.image(o.mib, o.layers)
            self.direct("", main)
            self.distribution("", main, url, warm=True)
            self.pullguard("", main, url, warm=True)
            self.measure("sha256", lambda: sha256_pass(main.blob_paths))
            self.derive_overhead()
        if "throttled" in o.sections:
            main = self.image(o.mib, o.layers)
            prefix = f"{o.rate_mb:g} MB/s: "
            with ThrottleProxy(("127.0.0.1", self.upstream.port), o.rate_mb * 1e6) as slow:
                self.direct(prefix, main, slow.address)
                self.distribution(prefix, main, slow.url, warm=False)
                self.pullguard(prefix, main, slow.url, warm=False)
        if "sizes" in o.sections:
            for mib in o.sizes:
                if mib == o.mib and "main" in o.sections:
                    continue
                image = self.image(mib, o.layers)
                prefix = f"{mib} MiB: "
                self.direct(prefix, image)
                self.distribution(prefix, image, url, warm=False)
                self.pullguard(prefix, image, url, warm=True)
        if "layers" in o.sections:
            for count in o.layer_counts:
                if count == o.layers and "main" in o.sections:
                    continue
                image = self.image(o.mib, count)
                prefix = f"{count} layers: "
                self.direct(prefix, image)
                self.distribution(prefix, image, url, warm=False)
                self.pullguard(prefix, image, url, warm=False)

        if "database" in o.sections:
            main = self.image(o.mib, o.layers)
            self.on_database("sqlite", main, databases.sqlite)
            if self.postgresql is not None:
                self.on_database("postgresql", main, self.postgresql)
        if "vulnerability" in o.sections:
            self.vulnerability_round(number)

    def derive_overhead(self) -> None:
        """This round's verification overhead (cold − direct − warm), paired within the round."""
        latest = {k: self.samples[k][-1] for k in ("direct", "pullguard cold", "pullguard warm")}
        if len({len(self.samples[k]) for k in latest}) == 1:
            self.samples["verification overhead"].append(
                table.overhead(latest["pullguard cold"], latest["direct"], latest["pullguard warm"])
            )

    def stampede(self) -> None:
        o = self.options
        image = make_image(self.root, self.upstream.address, o.stampede_mib, 4, seed=99)
        progress(f"stampede: {o.clients} clients, {image.describe()}")
        with paths.pullguard_stack(self.root / "pg", self.upstream.url) as stack:
            outcome = run_stampede(stack.address, f"{paths.ALIAS}/{image.reference}", o.clients)
        gets = upstream_gets(self.upstream, image)
        self.samples["stampede: seconds to the last client"].append(outcome.seconds)
        resent = "stampede: requests sent again (closed keep-alive)"
        self.samples[resent].append(outcome.retried)
        self.units[resent] = ""
        for error in outcome.errors:
            self.failures.append(f"stampede: {error}")
        self.goals += [
            table.Goal(
                f"stampede: clients failed of {o.clients}", o.clients - outcome.succeeded, 0
            ),
            table.Goal("stampede: upstream GETs of the most-fetched blob", max(gets.values()), 1),
        ]

    # -- the result -----------------------------------------------------------

    def all_goals(self) -> list[table.Goal]:
        o = self.options
        m = {name: table.Row(name, values).median for name, values in self.samples.items()}
        goals = table.main_goals(m, f"{o.mib} MiB, {o.layers} layers")
        prefix = f"{o.rate_mb:g} MB/s: "
        goals.append(
            table.throttled_goal(
                m.get(f"{prefix}pullguard cold", math.nan),
                m.get(f"{prefix}dist cold", math.nan),
                o.rate_mb,
            )
        )
        goals.append(table.linearity_goal(self.sized(m, "pullguard cold", o.sizes)))
        counts = [self.layered(m, count) for count in o.layer_counts]
        goals.append(
            table.spread_goal(
                f"layers {'/'.join(map(str, o.layer_counts))}: slowest / fastest cold", counts, 1.1
            )
        )
        goals.append(self.rss_goal())
        return goals + self.goals

    def sized(self, m: dict[str, float], what: str, sizes: list[int]) -> dict[int, float]:
        o = self.options
        out = {}
        for mib in sizes:
            key = what if mib == o.mib and self.main_ran else f"{mib} MiB: {what}"
            if key in m and not math.isnan(m[key]):
                out[mib] = m[key]
        return out

    def layered(self, m: dict[str, float], count: int) -> float:
        main = count == self.options.layers and self.main_ran
        key = "pullguard cold" if main else f"{count} layers: pullguard cold"
        return m.get(key, math.nan)

    @property
    def main_ran(self) -> bool:
        """The default image is measured under its own prefix unless the main section
        measured it already (see :meth:`round`)."""
        return "main" in self.options.sections

    def rss_goal(self) -> table.Goal:
        sizes = sorted(self.rss)
        text = "peak RSS at the largest size / at the smallest, worst process"
        if len(sizes) < 2:
            return table.Goal(text, math.nan, RSS_SPREAD)
        small, large = self.rss[sizes[0]], self.rss[sizes[-1]]
        spreads = [table.ratio(large[p], small[p]) for p in small if p in large]
        return table.Goal(f"{text} ({sizes[-1]} vs {sizes[0]} MiB)", max(spreads), RSS_SPREAD)

    def render(self) -> str:
        rows = [table.Row(n, v, self.units.get(n, "s")) for n, v in self.samples.items()]
        parts = [table.render_rows(rows, "measurement")]
        if self.rss:
            by_process: dict[str, dict[str, float]] = defaultdict(dict)
            for mib in sorted(self.rss):
                for process, peak in sorted(self.rss[mib].items()):
                    by_process[process][f"{mib} MiB"] = peak
            parts.append(table.render_matrix("peak RSS (MiB) by image size", by_process))
        if self.phases:
            phase_rows = [table.Row(n, v, "ms") for n, v in self.phases.items()]
            parts.append(table.render_rows(phase_rows, "cold pull, from its decision"))
        if set(self.options.sections) & set(DEFAULT_SECTIONS):
            parts.append(table.render_goals(self.all_goals()))
        if self.failures:
            parts.append("failures:\n" + "\n".join(f"  {f}" for f in self.failures))
        return "\n\n".join(parts)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    root = Path(tempfile.mkdtemp(prefix="pullguard-bench-"))
    upstream = RegistryProcess(root / "upstream")
    upstream.start()
    try:
        with ExitStack() as cleanup:
            postgresql = None
            if "database" in options.sections:
                progress("starting a throw-away PostgreSQL cluster")
                postgresql = cleanup.enter_context(databases.postgresql(root))
            bench = Bench(root, upstream, options, postgresql)
            bench.prepare()
            for number in range(1, options.rounds + 1):
                progress(f"round {number} of {options.rounds}")
                bench.round(number)
            if "stampede" in options.sections:
                bench.stampede()
        print(legend(options))
        print(bench.render())
        return 1 if bench.failures else 0
    finally:
        upstream.stop()
        shutil.rmtree(root, ignore_errors=True)


def legend(o: Options) -> str:
    return (
        f"pullguard benchmark: {o.mib} MiB in {o.layers} gzip layers unless named,"
        f" medians of {o.rounds} rounds.\n"
        "direct = skopeo copy from the upstream registry; dist = Debian's docker-registry as a"
        " pull-through cache;\nsha256 = one pass over the blobs; verification overhead ="
        " pullguard cold - direct - pullguard warm (per round).\n"
        + (
            "sqlite / postgresql = pullguard with its decisions in SQLite (the default) or in a"
            " fresh database of a local PostgreSQL.\n"
            if "database" in o.sections
            else ""
        )
        + (
            f"gate on / off = pullguard cold with and without the vulnerability gate, the image's"
            f" first layer holding Debian 12 with {vulnerability.PACKAGES} dpkg packages,\n"
            f"the gate's database {vulnerability.RECORDS} Debian-shaped OSV records; ms rows come"
            " from the decisions (format: sums over the layers).\n"
            if "vulnerability" in o.sections
            else ""
        )
    )
