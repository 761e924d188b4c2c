"""`make bench-gpu` (tests/bench/gpu.py) says in one line why it cannot run where there is no CUDA device."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def test_without_cuda_it_exits_non_zero_with_one_line_naming_the_smoke_test():
    run = _run("generator")

    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "bench-gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or "
        "smoke-test it with --device cpu --size tiny"]


def test_an_unknown_bench_is_refused_by_name():
    run = _run("sdxl-turbo", "--device", "cpu")

    assert run.returncode == 2 and "unknown bench sdxl-turbo: choose from generator" in run.stderr
