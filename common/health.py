"""The service's HTTP endpoints: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["HealthState", "serve_http"]


class HealthState:
    """What the probes report. ``alive`` turns false when the loop is stopping, or has not
    completed a step for ``stall_s`` seconds once it started (a wedged client library).
    ``tables_ready`` says whether the stage's tables have caught up and still follow their topics."""

    def __init__(self, stall_s: float = 300.0, tables_ready: Callable[[], bool] = lambda: True) -> None:
        self.tables_ready = tables_ready
        self.running = True
        self.model_loaded = False
        self.group_joined = False
        self.broker_reachable = False
        self._stall_s = stall_s
        self._last_beat: float | None = None

    def beat(self) -> None:
        """The loop made progress."""
        self._last_beat = time.monotonic()

    @property
    def alive(self) -> bool:
        stalled = self._last_beat is not None and time.monotonic() - self._last_beat > self._stall_s
        return self.running and not stalled

    @property
    def ready(self) -> bool:
        return (self.alive and self.model_loaded and self.tables_ready() and self.group_joined
                and self.broker_reachable)

    def as_dict(self) -> dict[str, bool]:
        return {"alive": self.alive, "model_loaded": self.model_loaded, "tables_ready": self.tables_ready(),
                "group_joined": self.group_joined, "broker_reachable": self.broker_reachable, "ready": self.ready}


def serve_http(state: HealthState, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoints on a daemon thread; returns the server (``server_address`` has the port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                ok = state.alive if self.path == "/healthz" else state.ready
                self._send(200 if ok else 503, json.dumps(state.as_dict()).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes are frequent; keep the log for the pipeline
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
