"""A cold pull's decision says where its time went (issue 9): the phases the gateway
marked and the total, as `pullguard decisions --json` shows them and the benchmark reads them.

Real parts: Debian's docker-registry upstream, skopeo, ``pullguard up``. The
numbers are only checked to be there and consistent, never against a clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.bench import phases
from tests.support.images import build_image, pull, push, random_layers
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard


def _decisions(pg: Pullguard, digest: str) -> list[dict[str, object]]:
    listed = pg.cli("decisions", "--json", "--limit", "10")
    assert listed.returncode == 0, listed.stderr
    return [r for r in json.loads(listed.stdout) if r.get("digest") == digest]


def test_a_cold_pull_records_its_phase_timings(
    upstream: RegistryProcess, pullguard_factory: Callable[..., Pullguard], tmp_path: Path
) -> None:
    image = build_image(tmp_path / "src", "v1", random_layers(2, 64 * 1024, seed=9))
    push(image, upstream.address, "team/timed")
    pg = pullguard_factory(upstream.url)
    for attempt in ("cold", "warm"):
        result = pull(f"{pg.address}/lab/team/timed:v1", tmp_path / attempt, "v1")
        assert result.returncode == 0, result.stderr + pg.log()

    decisions = _decisions(pg, image.digest)
    cold = phases.cold_decision(pg, image.digest)
    timings = cold["timings"]
    assert sorted(timings) == sorted([*phases.PHASES, "total"]), timings
    assert all(isinstance(v, float) and v >= 0 for v in timings.values()), timings
    assert sum(timings[p] for p in phases.PHASES) <= timings["total"]
    # The warm pull verified nothing: it has a total and no phase.
    warm = next(r for r in decisions if r.get("cached"))
    assert list(warm["timings"]) == ["total"]  # type: ignore[call-overload]
    shown = phases.breakdown(cold, wall_s=1.0)
    assert {f"phase {p}" for p in phases.PHASES} <= set(shown)
    assert shown["step fetcher blobs"] >= 0 and "format inspection, layer 2" in shown
