"""Every process, the gateway included, runs through ``run_process``: telemetry is
set up and shut down, so the spans of the last requests reach the exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    from dataclasses import replace

    from pullguard.services.runtime.config import Telemetry, load_config
    from pullguard.services.runtime.main import run_process
    from pullguard.services.runtime.telemetry import tracer

    config = replace(load_config(None), telemetry=Telemetry(exporter="console"))

    async def serve() -> None:
        with tracer("probe").start_as_current_span("last-request-before-exit"):
            pass
        {ending}

    try:
        run_process("probe", config, serve)
    except RuntimeError:
        pass
    print("run_process returned", flush=True)
    """
)


def _exported_before_return(ending: str) -> bool:
    """Whether the span was exported by run_process itself, not at interpreter exit."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(ending=ending)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    span = done.stdout.find("last-request-before-exit")
    return 0 <= span < done.stdout.index("run_process returned")


def test_spans_are_flushed_when_the_process_ends() -> None:
    # The batch processor would hold this span for seconds; shutdown exports it.
    assert _exported_before_return("return None")


def test_spans_are_flushed_when_serving_fails() -> None:
    assert _exported_before_return("raise RuntimeError('bind failed')")
