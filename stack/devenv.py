"""Settings that point the captioner and generator at tiny dev weights (built on first use).

Run as a script (``make env``: ``eval "$(make -s env)"``), it prints, as shell exports, everything the
CLI or a service started by hand needs: the local stack's client settings and these dev model settings.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import localstack

__all__ = ["dev_model_env"]

DEV_MODELS = Path(__file__).resolve().parents[1] / ".cache" / "dev-models"


def dev_model_env() -> dict[str, str]:
    """DESKGEN_* variables for the demo, e2e and chaos runs: tiny random weights, 64² images, 4 steps.

    The classifier keeps its default, the real packaged EfficientNet-Lite0 ImageNet weights.
    """
    # The generator's check names its newest part, so an older build is rebuilt.
    for stage, part in (("captioner", "deskgen-dev-weights.json"), ("generator", "sam/config.json")):
        if not (DEV_MODELS / f"{stage}-tiny" / part).exists():
            # Progress on stderr: stdout may be the settings being printed (main).
            print(f"==> building tiny dev weights for the {stage} (random weights, real formats)", file=sys.stderr,
                  flush=True)
            subprocess.run([sys.executable, "-m", "deskgen.common.cli", "models", "build-dev", stage, "--size", "tiny",
                            "--out", str(DEV_MODELS / f"{stage}-tiny")],
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=sys.stderr, check=True)
    generator = DEV_MODELS / "generator-tiny"
    return {
        "DESKGEN_CAPTIONER_MODEL": f"file://{DEV_MODELS / 'captioner-tiny'}",
        "DESKGEN_GENERATOR_MODEL": f"file://{generator}",
        **{f"DESKGEN_GENERATOR_LORA_{name.upper()}": f"file://{generator / 'loras' / name}"
           for name in ("dalle", "ott", "3d")},
        "DESKGEN_GENERATOR_FAST_LORA": f"file://{generator / 'loras' / 'fast'}",
        "DESKGEN_GENERATOR_FAST_SCHEDULER": "lcm",
        "DESKGEN_GENERATOR_SAM": f"file://{generator / 'sam'}",
        "DESKGEN_GENERATOR_STEPS": "4", "DESKGEN_GENERATOR_WIDTH": "64", "DESKGEN_GENERATOR_HEIGHT": "64",
        "DESKGEN_GENERATOR_MIN_SIDE": "32",
    }


def main() -> int:
    """Print the stack and dev model settings as shell exports (for ``eval``)."""
    settings = {**localstack.deskgen_env(), **dev_model_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name, value in settings.items():
        print(f"export {name}={shlex.quote(value)}")
    print("# each service started by hand needs its own DESKGEN_HTTP_PORT (default 8080)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
