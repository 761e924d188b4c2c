"""Session fixtures of the chart tests (see chart_env)."""

from __future__ import annotations

import pytest

from chart_env import Renderer, Tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    """The pinned helm, kubernetes-validate, hadolint and promtool (installed when missing)."""
    return Tools.installed()


@pytest.fixture(scope="session")
def render(tools: Tools) -> Renderer:
    """Cached `helm template` of the chart."""
    return Renderer(tools)
