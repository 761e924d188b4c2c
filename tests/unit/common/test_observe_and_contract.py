"""Metrics the runtime observes, and the job id pattern's single source."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deskgen.common import events, metrics
from deskgen.common.observe import observe_gpu_memory

ROOT = Path(__file__).resolve().parents[3]


def _gpu_samples(stage: str) -> dict[str, float]:
    return {s.labels["kind"]: s.value for family in metrics.GPU_MEMORY.collect() for s in family.samples
            if s.labels["stage"] == stage}


def test_gpu_memory_is_set_on_cuda_and_absent_on_a_cpu():
    observe_gpu_memory("gpu-test")
    samples = _gpu_samples("gpu-test")
    if torch.cuda.is_available():
        assert set(samples) == {"allocated", "peak"} and samples["peak"] >= samples["allocated"] >= 0
    else:
        assert samples == {}


def test_the_job_id_pattern_is_written_once_in_the_schema():
    pattern = json.loads((ROOT / "common/schemas/defs.json").read_text())["$defs"]["job_id"]["pattern"]
    assert events.JOB_ID.pattern == pattern
    holders = [p.name for p in (ROOT / "common").rglob("*.py") if pattern in p.read_text()]
    assert holders == []
