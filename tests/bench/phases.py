"""Where a cold pull's time went, read back from its decision.

The decision's ``timings`` hold the wall-clock phases the gateway marked
(manifest, fetch, verify, admission) and ``total``, the time from the pull's
start to its report; each step of a layer keeps its own ``duration_ms``
(steps may overlap), and format's per-layer inspection times are in
``layer_stats``. Serving is what the client waited beyond the decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.support.stack import Pullguard

#: The phases the gateway marks, in the order they end (gateway.report.Phase).
PHASES = ("manifest", "fetch", "verify", "admission")
#: Decisions read back to find the cold pull's.
DECISIONS_READ = 20


def cold_decision(stack: Pullguard, digest: str) -> dict[str, Any]:
    """The latest decision that verified and admitted ``digest`` (not served from the cache)."""
    listed = stack.cli("decisions", "--json", "--limit", str(DECISIONS_READ), timeout=60)
    if listed.returncode != 0:
        raise RuntimeError(f"pullguard decisions failed: {listed.stderr.strip()}")
    for report in json.loads(listed.stdout):
        if report.get("digest") == digest and report["decision"] == "ALLOW":
            if not report.get("cached"):
                return dict(report)
    raise RuntimeError(f"no verified decision for {digest} among the last {DECISIONS_READ}")


def breakdown(report: Mapping[str, Any], wall_s: float) -> dict[str, float]:
    """Milliseconds per phase of one cold pull, in order, then each step and layer.

    ``wall_s`` is what the client waited for the whole pull.
    """
    timings: Mapping[str, float] = report.get("timings", {})
    total = float(timings.get("total", 0.0))
    wall = wall_s * 1000
    out: dict[str, float] = {}
    for phase in PHASES:
        if phase in timings:
            out[f"phase {phase}"] = float(timings[phase])
    out["phase record (rest of the decision)"] = total - sum(out.values())
    out["phase serve (client wait - decision)"] = wall - total
    out["decision total"] = total
    out["client wall"] = wall
    for step in report.get("layers", []):
        out[f"step {step['layer']} {step['step']}"] = float(step["duration_ms"])
    for number, layer in enumerate(report.get("layer_stats", []), start=1):
        out[f"format inspection, layer {number}"] = float(layer["duration_ms"])
    return out


def gate_costs(report: Mapping[str, Any]) -> dict[str, float]:
    """Milliseconds of one cold pull's vulnerability step and of format's inspection
    (its layers steps, and its per-layer inspection times, each summed over the
    layers), and the packages and matches the gate found."""
    steps: dict[tuple[str, str], float] = {}
    for step in report.get("layers", []):
        # format answers one layers step per layer: their sum.
        key = (step["layer"], step["step"])
        steps[key] = steps.get(key, 0.0) + float(step["duration_ms"])
    out = {
        "format layers steps": steps.get(("format", "layers"), 0.0),
        "format inspection, all layers": sum(
            float(layer["duration_ms"]) for layer in report.get("layer_stats", [])
        ),
    }
    if ("vulnerability", "vulnerabilities") in steps:
        out["vulnerability step"] = steps[("vulnerability", "vulnerabilities")]
        out["packages"] = float(len(report.get("inventory", [])))
        out["advisories matched"] = float(len(report.get("vulnerabilities", {}).get("matches", [])))
    return out
