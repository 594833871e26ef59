"""A loopback HTTP proxy in front of a real registry that holds one blob half-sent.

It forwards every request to the registry unchanged. A GET of the gated
blob sends its headers and first half, sets :attr:`GatedProxy.reached`, and
sends the rest only once the test calls :meth:`GatedProxy.release` (or
after ``hold`` seconds): a pull in flight, held there for as long as the
test needs, through a real registry's answers.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_CHUNK = 64 * 1024


class GatedProxy:
    def __init__(self, upstream_url: str, gated_digest: str, hold: float = 120.0) -> None:
        self.upstream = urlsplit(upstream_url).netloc
        self.gated_suffix = f"/blobs/{gated_digest}"
        self.hold = hold
        self.reached = threading.Event()
        self._gate = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> GatedProxy:
        self._thread.start()
        return self

    def release(self) -> None:
        self._gate.set()

    def stop(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._forward(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._forward(body=True)

            def _forward(self, body: bool) -> None:
                connection = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream
                connection.request(self.command, self.path, headers=headers)
                answer = connection.getresponse()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(name, value)
                data = answer.read() if body else b""
                if "Content-Length" not in answer.headers:
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                gated = body and self.path.split("?")[0].endswith(proxy.gated_suffix)
                half = len(data) // 2 if gated else len(data)
                for start in range(0, half, _CHUNK):
                    self.wfile.write(data[start : min(start + _CHUNK, half)])
                if gated:
                    self.wfile.flush()
                    proxy.reached.set()
                    proxy._gate.wait(proxy.hold)
                self.wfile.write(data[half:])
                self.wfile.flush()
                connection.close()
                self.close_connection = True

        return Handler
