"""The schedulers a request may name: one table, read by the settings (names) and the model (classes).

Torch-free until ``build_scheduler`` runs, so the settings import it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEDULER_NAMES", "FAST_SCHEDULER_NAMES", "build_scheduler"]

# name → (diffusers scheduler class, config overrides); "default" is the scheduler saved with the base model.
_STANDARD = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
# Few-step schedulers, used only with the fast LoRA they match: LCM/TCD for LCM and TCD LoRAs,
# Euler with trailing timesteps for SDXL-Lightning and Hyper-SD.
_FEW_STEP = {
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "euler_trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}
SCHEDULER_NAMES = ("default", *_STANDARD)
FAST_SCHEDULER_NAMES = tuple(_FEW_STEP)


def build_scheduler(name: str, config: Any) -> Any:
    """The scheduler ``name`` (not ``default``) built from a pipeline's scheduler ``config``."""
    import diffusers

    class_name, overrides = {**_STANDARD, **_FEW_STEP}[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)
