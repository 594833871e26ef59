"""The test stack survives the free_port race: a port taken between writing the
config and starting ``pullguard up`` is replaced, and the stack starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.stack import Pullguard, write_config

pytestmark = pytest.mark.e2e


def test_a_port_taken_before_start_is_moved_and_the_stack_starts(tmp_path: Path) -> None:
    path, config = write_config(tmp_path, "http://127.0.0.1:9")
    taken = config["services"]["fetcher"]
    host, port = taken.rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        stack = Pullguard(path, config)
        try:
            stack.start()
            # pullguard refused the taken port and started nothing; the second start worked.
            assert "Address already in use" in stack.log()
            assert stack.config["services"]["fetcher"] != taken
            assert taken not in path.read_text()
            assert stack.get("/v2/").status_code == 200
        finally:
            stack.stop()
