"""`pullguard up`'s supervisor: readiness probes and address conflicts."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pullguard.gateway.supervisor import Stack, http_ready
from pullguard.services.runtime.errors import PullguardError
from tests.support.configs import make_config


def test_http_ready_is_false_for_a_server_of_another_protocol() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(1024)
                connection.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00 not http\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        assert http_ready(f"127.0.0.1:{port}") is False
        thread.join(5)


def test_two_services_on_one_address_are_refused_before_starting(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    stack = Stack.plan(config, None)
    stack.addresses["format"] = stack.addresses["analysis"]
    with pytest.raises(PullguardError, match="would both listen on"):
        stack.start()
    assert stack.processes == {}
