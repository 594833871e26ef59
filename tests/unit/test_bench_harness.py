"""The benchmark's own parts that need no registry: the throttling proxy and the arithmetic.

No test here measures time: the proxy is checked for forwarding bytes intact,
its pacing as arithmetic on given clock readings, and the table's ratios
from given numbers.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import threading
from pathlib import Path

import pytest

from tests.bench import phases, run, table
from tests.bench.throttle import Pace, ThrottleProxy

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


class EchoServer:
    """A loopback server that sends back, on each connection, all it received (until EOF)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # accept() wakes up to see close()
        self.port = int(self.sock.getsockname()[1])
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(30)
                received = bytearray()
                while piece := conn.recv(65536):
                    received += piece
                conn.sendall(received)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.sock.close()


def _through(proxy: ThrottleProxy, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        back = bytearray()
        while piece := conn.recv(65536):
            back += piece
    return bytes(back)


@pytest.mark.parametrize("rate", [None, 1e9])
def test_the_proxy_forwards_every_byte_both_ways_intact(rate: float | None) -> None:
    server = EchoServer()
    try:
        with ThrottleProxy(("127.0.0.1", server.port), rate) as proxy:
            assert _through(proxy, PAYLOAD) == PAYLOAD
            assert _through(proxy, b"second connection") == b"second connection"
            assert proxy.connections == 2
    finally:
        server.close()


def test_the_proxy_closes_a_client_whose_target_is_down() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])  # bound but not listening: connections are refused
        with ThrottleProxy(("127.0.0.1", port), None) as proxy:
            assert _closed_by_proxy(proxy)


def _closed_by_proxy(proxy: ThrottleProxy) -> bool:
    """Whether the proxy hangs up on a client without answering.

    It may hang up before the client has finished sending: then the send or
    the shutdown fails with ENOTCONN, EPIPE or ECONNRESET, which is the same
    answer, come earlier."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn:
        try:
            conn.sendall(b"anyone there?")
            conn.shutdown(socket.SHUT_WR)
            return conn.recv(65536) == b""
        except (BrokenPipeError, ConnectionResetError):
            return True
        except OSError as error:
            if error.errno == errno.ENOTCONN:
                return True
            raise


def test_pace_spaces_bytes_at_the_rate_over_all_connections() -> None:
    pace = Pace(100.0)  # bytes a second
    assert pace.delay(0.0, 50) == pytest.approx(0.5)
    # Queued behind the first 50 bytes, whoever sends them.
    assert pace.delay(0.0, 50) == pytest.approx(1.0)
    assert pace.delay(0.5, 100) == pytest.approx(1.5)
    # An idle link starts afresh.
    assert pace.delay(10.0, 100) == pytest.approx(1.0)
    assert Pace(None).delay(0.0, 10**9) == 0.0
    with pytest.raises(ValueError, match="rate of 0"):
        Pace(0)


def test_ratios_and_overhead_are_computed_from_the_given_medians() -> None:
    medians = {
        "direct": 0.60,
        "dist cold": 1.24,
        "dist warm": 0.56,
        "pullguard cold": 2.15,
        "pullguard warm": 0.64,
        "sha256": 0.17,
    }
    cold, verification, warm = table.main_goals(medians, "256 MiB")
    assert cold.value == pytest.approx(2.15 / 1.24) and cold.limit == 1.0 and not cold.met
    assert verification.value == pytest.approx((2.15 - 0.60 - 0.64) / 0.17)
    assert warm.value == pytest.approx(0.64 / 0.60) and warm.met
    assert table.main_goals({**medians, "pullguard cold": 1.2}, "x")[0].met


def test_a_missing_or_zero_denominator_is_no_ratio_and_no_pass() -> None:
    assert math.isnan(table.ratio(1.0, 0.0))
    assert math.isnan(table.ratio(math.nan, 1.0))
    goal = table.main_goals({}, "x")[0]
    assert math.isnan(goal.value) and not goal.met
    assert "n/a" in table.render_goals([goal])


def test_linearity_extrapolates_the_two_smaller_sizes() -> None:
    # 0.5 s + 1 s/256 MiB predicts 4.5 s at 1 GiB.
    goal = table.linearity_goal({64: 0.75, 256: 1.5, 1024: 4.5})
    assert goal.value == pytest.approx(1.0) and goal.met
    assert table.linearity_goal({64: 0.75, 256: 1.5, 1024: 9.0}).value == pytest.approx(2.0)
    assert math.isnan(table.linearity_goal({64: 0.75, 256: 1.5}).value)


def test_spread_is_the_slowest_over_the_fastest() -> None:
    goal = table.spread_goal("layers", [2.0, 2.1, 2.4], 1.1)
    assert goal.value == pytest.approx(1.2) and not goal.met
    assert math.isnan(table.spread_goal("layers", [2.0, math.nan], 1.1).value)


def test_rendering_shows_medians_and_verdicts() -> None:
    rows = table.render_rows([table.Row("pullguard cold", [2.0, 1.0, 3.0])], "measurement")
    assert "pullguard cold" in rows and "2.00 s" in rows and "2.00 1.00 3.00" in rows
    matrix = table.render_matrix("rss", {"gateway": {"64 MiB": 80.0, "1024 MiB": 81.5}})
    assert matrix.splitlines()[1].split() == ["gateway", "80.00", "81.50"]
    goals = table.render_goals([table.Goal("a", 0.5, 1.0), table.Goal("b", 2.0, 1.0)])
    assert goals.splitlines()[1].endswith("yes") and goals.splitlines()[2].endswith("NO")


def test_breakdown_reads_phases_steps_and_layers_from_a_decision() -> None:
    report = {
        "timings": {
            "manifest": 70.0,
            "fetch": 890.0,
            "verify": 350.0,
            "admission": 2.0,
            "total": 1315.0,
        },
        "layers": [{"layer": "fetcher", "step": "blobs", "duration_ms": 889.0}],
        "layer_stats": [{"duration_ms": 120.0}, {"duration_ms": 110.0}],
    }
    got = phases.breakdown(report, wall_s=1.9)
    assert [k for k in got if k.startswith("phase")][:4] == [f"phase {p}" for p in phases.PHASES]
    assert got["phase record (rest of the decision)"] == pytest.approx(3.0)
    assert got["phase serve (client wait - decision)"] == pytest.approx(585.0)
    assert got["step fetcher blobs"] == 889.0
    assert got["format inspection, layer 2"] == 110.0


def test_quick_drops_the_1_gib_image_and_a_round() -> None:
    full, quick = run.parse([]), run.parse(["--quick"])
    assert (full.rounds, full.sizes, full.layer_counts) == (3, [64, 256, 1024], [1, 4, 16])
    assert (quick.rounds, quick.sizes) == (2, [64, 256])
    assert run.parse(["--quick", "--rounds", "3"]).rounds == 3
    with pytest.raises(SystemExit):
        run.parse(["--sections", "main,bogus"])


def test_the_database_section_runs_only_when_asked_for() -> None:
    assert "database" not in run.parse([]).sections
    assert run.parse(["--sections", "database"]).sections == ("database",)


def test_the_vulnerability_section_runs_only_when_asked_for() -> None:
    assert "vulnerability" not in run.parse([]).sections
    assert run.parse(["--sections", "vulnerability"]).sections == ("vulnerability",)


def test_gate_costs_read_the_vulnerability_step_and_formats_inspection() -> None:
    report = {
        "layers": [
            {"layer": "format", "step": "layers", "duration_ms": 40.0},
            {"layer": "format", "step": "layers", "duration_ms": 2.0},
            {"layer": "vulnerability", "step": "vulnerabilities", "duration_ms": 12.5},
        ],
        "layer_stats": [{"duration_ms": 10.0}, {"duration_ms": 20.0}],
        "inventory": [{"name": "lib0000"}] * 3,
        "vulnerabilities": {"matches": [{}, {}]},
    }
    assert phases.gate_costs(report) == {
        "format layers steps": 42.0,
        "format inspection, all layers": 30.0,
        "vulnerability step": 12.5,
        "packages": 3.0,
        "advisories matched": 2.0,
    }
    ungated = {"layers": report["layers"][:1], "layer_stats": report["layer_stats"]}
    assert set(phases.gate_costs(ungated)) == {
        "format layers steps",
        "format inspection, all layers",
    }


def test_the_generated_database_and_status_match_as_the_section_says() -> None:
    """Each outdated package (one in ten) matches six of its source's ten records."""
    from pullguard.services.vulnerability.records import parse_record
    from tests.bench import vulnerability

    records = [vulnerability._record(n) for n in range(0, vulnerability.RECORDS, 5_000)]
    assert len(records) == 10 and {r["affected"][0]["package"]["name"] for r in records} == {
        "src0000"
    }
    fixed = [r["affected"][0]["ranges"][0]["events"][1]["fixed"] for r in records]
    assert fixed == [f"1.0-{k}" for k in range(10)]  # 1.0-3 is before six of them
    parse_record(json.dumps(records[0]).encode(), "DEBIAN-CVE-2024-00000.json")
    status = vulnerability.dpkg_status().decode()
    assert status.count("Package: ") == vulnerability.PACKAGES
    assert status.count("Version: 1.0-3\n") == vulnerability.PACKAGES // 10


@pytest.mark.parametrize("sections", ["main,sizes,layers", "sizes,layers"])
def test_the_default_image_counts_in_the_scaling_goals_with_or_without_main(
    sections: str, tmp_path: Path
) -> None:
    bench = run.Bench(tmp_path, None, run.parse(["--quick", "--sections", sections]))  # type: ignore[arg-type]
    alone = "main" not in sections
    m = {
        "64 MiB: pullguard cold": 1.0,
        ("256 MiB: pullguard cold" if alone else "pullguard cold"): 3.0,
        "1 layers: pullguard cold": 3.5,
        ("4 layers: pullguard cold" if alone else "pullguard cold"): 3.0,
    }
    assert bench.sized(m, "pullguard cold", [64, 256]) == {64: 1.0, 256: 3.0}
    assert bench.layered(m, 4) == 3.0
