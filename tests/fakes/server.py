"""What every loopback fake provider shares: a threaded HTTP server on 127.0.0.1 (a random
port) that hands each request to the fake's `handle(handler, method)`, and `send()`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Base of the fakes: start(), stop(), origin. Subclasses implement handle()."""

    server: ThreadingHTTPServer | None = None

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # http.server writes the status line, headers and body in separate sends; with
            # Nagle on, loopback answers wait ~40 ms for the client's delayed ACK (NOTES.md).
            disable_nagle_algorithm = True

            def do_GET(self):
                fake.handle(self, "GET")

            def do_POST(self):
                fake.handle(self, "POST")

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # serve_forever() checks for shutdown() once per poll interval (0.5 s by default),
        # which every test that stops a fake would wait out.
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def send(handler, status: int, body=None, headers: dict | None = None) -> None:
    """Answer with a JSON (dict/list), text or bytes body and a Content-Length."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        payload = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = body or b""
    try:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (a timeout test): nothing to answer
