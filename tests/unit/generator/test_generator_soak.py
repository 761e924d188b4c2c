"""A short memory soak in CI; the full one (≥ 300 jobs, a printed table) is tests/bench/soak_generator.py."""

import pytest

from bench.soak_generator import growth, soak

pytestmark = pytest.mark.slow

SIZES = [(32, 32), (48, 32)]  # the smallest the tiny model takes: CI pays for memory, not pixels


def test_memory_stays_flat_across_presets_modes_fast_and_sizes(tiny_dir):
    # 8 jobs cover every size × mode × fast combination: one round warms up, two more must not grow.
    readings = soak(tiny_dir, jobs=24, every=8, report=lambda *reading: None, sizes=SIZES)

    assert growth(readings, warmup_readings=1) <= 0.05, [f"{r / 2**20:.0f} MB" for r in readings]
