"""Fixtures of the end-to-end tests: a real Prometheus (Debian's ``prometheus`` package) on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from chart.prometheus_local import write_prometheus_config
from support.pipeline import answers_ok


@dataclass
class PrometheusServer:
    """One Prometheus process scraping local targets, with its own TSDB folder; stopped by PID."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @classmethod
    def start(cls, folder: Path, targets: dict[str, Iterable[str]], timeout: float = 60.0) -> PrometheusServer:
        """Start Prometheus with ``prometheus_local``'s configuration (1 s scrapes) and wait until it is ready."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("no `prometheus` on PATH: install Debian's prometheus package (.ci/run does)")
        folder.mkdir(parents=True, exist_ok=True)
        config = write_prometheus_config(folder, targets)
        port = _free_port()
        log_path = folder / "prometheus.log"
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=folder)
        server = cls(process, port, log_path)
        server._wait_ready(timeout)
        return server

    def query(self, expr: str) -> list[dict]:
        """The instant-query result of ``expr`` (the ``data.result`` list of /api/v1/query)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the reason in the body
            raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode(errors='replace')}") from exc
        assert body["status"] == "success", body
        return body["data"]["result"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if answers_ok(f"http://127.0.0.1:{self.port}/-/ready"):
                return
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"Prometheus not ready within {timeout:.0f} s:\n{self.log()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path, request):
    """A starter ``start(targets) -> PrometheusServer``; servers are stopped after the test and their
    log printed if it failed."""
    servers: list[PrometheusServer] = []

    def start(targets: dict[str, Iterable[str]]) -> PrometheusServer:
        server = PrometheusServer.start(tmp_path / f"prometheus-{len(servers)}", targets)
        servers.append(server)
        return server

    yield start
    report = getattr(request.node, "rep_call", None)
    for server in servers:
        server.stop()
        if report is not None and report.failed:
            print(f"--- prometheus ---\n{server.log()[-3000:]}")
