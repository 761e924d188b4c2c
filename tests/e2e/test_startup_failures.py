"""A service that cannot start says so in one line naming the setting to change, and exits non-zero."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deskgen.common.topology import STAGES

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _start(stage: str, **env: str) -> subprocess.CompletedProcess:
    """``deskgen run STAGE`` with the stack's settings plus ``env``; it must exit on its own."""
    return subprocess.run([sys.executable, "-m", "deskgen.common.cli", "run", stage], cwd=ROOT, text=True,
                          env={**os.environ, "DESKGEN_INSTANCE_ID": "startup-test", **env},
                          capture_output=True, timeout=120)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    [line] = [line for line in output.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    return line


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_second_service_on_the_same_port_names_the_port_setting(stack, stage):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_error_line(_start(stage, DESKGEN_HTTP_PORT=str(port)))
    assert f"port {port}" in line and "DESKGEN_HTTP_PORT" in line


def test_a_bad_setting_is_named(stack):
    line = _one_error_line(_start("classifier", DESKGEN_HTTP_PORT="eighty"))
    assert "DESKGEN_HTTP_PORT" in line


def test_a_bad_stage_setting_is_named(stack):
    line = _one_error_line(_start("generator", DESKGEN_GENERATOR_DTYPE="float8"))
    assert "DESKGEN_GENERATOR_DTYPE" in line
