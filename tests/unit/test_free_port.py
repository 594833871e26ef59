"""tests/support/stack.py:free_port under parallel workers: no two workers
hand out the same port, and each worker finds ports of its own share."""

from __future__ import annotations

import pytest

from tests.support.stack import free_port


@pytest.mark.parametrize("worker", [0, 1, 2])
def test_each_worker_hands_out_only_ports_of_its_own_share(
    worker: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    ports = [free_port() for _ in range(5)]
    assert len(set(ports)) == 5
    assert {(port // 2) % 3 for port in ports} == {worker}
