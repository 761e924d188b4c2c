"""Shared pieces of the chart tests: paths, scenarios, the pinned tools and a caching renderer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deskgen.common import topology

__all__ = ["CHART", "FULLNAME", "KUBE_VERSIONS", "NAMESPACE", "RELEASE", "ROOT", "SCENARIOS", "STAGES", "Renderer", "Tools",
           "by_kind", "container", "env_of", "load_values", "run", "stage_deployments"]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "deskgen"
TOOLS = ROOT / ".cache" / "tools"
# ci/<scenario>-values.yaml; "default" is the chart's own defaults.
SCENARIOS = sorted(path.stem.removesuffix("-values") for path in (CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ["1.28.0", "1.34.0"]
RELEASE = "rel"
NAMESPACE = "deskgen"
FULLNAME = f"{RELEASE}-deskgen"
STAGES = {stage.name: stage.consumes for stage in topology.STAGES.values()}  # stage -> the kind it consumes


class Tools:
    """Paths of the pinned helm, kubernetes-validate, hadolint and promtool binaries."""

    def __init__(self) -> None:
        self.helm = TOOLS / "bin" / "helm"
        self.kubernetes_validate = TOOLS / "venv" / "bin" / "kubernetes-validate"
        self.hadolint = TOOLS / "venv" / "bin" / "hadolint"
        self.promtool = Path(shutil.which("promtool") or "/usr/bin/promtool")

    def missing(self) -> list[str]:
        return [str(p) for p in (self.helm, self.kubernetes_validate, self.hadolint, self.promtool) if not p.exists()]

    @classmethod
    def installed(cls) -> "Tools":
        """The tools, installed through helm/chart-check.sh --tools-only when missing; fails the test otherwise."""
        found = cls()
        if found.missing():
            done = subprocess.run([ROOT / "helm" / "chart-check.sh", "--tools-only"], capture_output=True, text=True)
            if done.returncode != 0 or found.missing():
                pytest.fail(
                    "chart tools missing (" + ", ".join(found.missing()) + "); `make chart-check` installs them "
                    f"(helm/chart-check.sh --tools-only said:\n{done.stderr})"
                )
        return found


def run(*command: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; with check, fail the test showing the output."""
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def _scenario_args(scenario: str) -> list[str]:
    return ["-f", str(CHART / "ci" / f"{scenario}-values.yaml")]


class Renderer:
    """`helm template` with caching; returns the manifest text or the parsed objects."""

    def __init__(self, tools: Tools) -> None:
        self._tools = tools
        self._cache: dict[tuple, str] = {}

    def text(self, scenario: str = "default", kube_version: str = KUBE_VERSIONS[-1], *sets: str) -> str:
        key = (scenario, kube_version, sets)
        if key not in self._cache:
            args = [self._tools.helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", kube_version]
            args += _scenario_args(scenario) + [f"--set={s}" for s in sets]
            self._cache[key] = run(*args).stdout
        return self._cache[key]

    def objects(self, scenario: str = "default", kube_version: str = KUBE_VERSIONS[-1], *sets: str) -> list[dict]:
        return [doc for doc in yaml.safe_load_all(self.text(scenario, kube_version, *sets)) if doc]

    def fails(self, *sets: str) -> str:
        """Render the defaults with --set values that must be refused; return helm's error text."""
        args = [self._tools.helm, "template", RELEASE, CHART, "--kube-version", KUBE_VERSIONS[-1]]
        done = run(*args, *[f"--set={s}" for s in sets], check=False)
        assert done.returncode != 0, f"helm template accepted {sets}"
        return done.stderr


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def stage_deployments(objects: list[dict]) -> dict[str, dict]:
    deployments = by_kind(objects, "Deployment")
    return {stage: deployments[f"{FULLNAME}-{stage}"] for stage in STAGES if f"{FULLNAME}-{stage}" in deployments}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment)["env"]}


def load_values(scenario: str) -> dict:
    """The chart defaults merged with the scenario's values file (maps merge, lists replace)."""

    def merge(base: dict, override: dict) -> dict:
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return merged

    return merge(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text()) or {})
