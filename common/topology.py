"""The pipeline's topology: every stage, what it consumes and produces, how it is built and shipped.

This table is the one place the stage → topic map is written. Everything that needs the topology reads
it: the runtime and the CLI, the chart (through the generated ``helm/deskgen/topology.yaml``), the
AsyncAPI document, the chaos fleet, the image builds, the cluster scripts and tests, the demo. It
imports nothing heavy, so tools read it without torch.

A stage module (``StageSpec.module``) provides ``build_stage(settings)``; its settings class and its
dev-weights builder are named here as ``"module:attribute"`` and imported only when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["StageSpec", "STAGES", "register", "unregister", "spec", "consumer_of", "event_kinds", "event_types",
           "table_kinds", "resolve", "chart_yaml", "CHART_FILE", "RESULT_KIND"]

PACKAGE = "deskgen"
RESULT_KIND = "generated"  # the one terminal result of every job: the last stage's output, or any stage's refusal
CHART_FILE = "helm/deskgen/topology.yaml"  # chart_yaml(), committed; tests/chart checks it for drift
_TYPE_PREFIX = "com.deskgen.photo."


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline.

    Attributes:
        name: the service name (``deskgen run NAME``, the chart's component, the image name).
        consumes: the event kind it reads (its topic is prefix + kind).
        produces: the event kind it writes.
        section: the key its output is stored under in the produced event's data.
        module: the module whose ``build_stage(settings)`` builds it.
        settings: ``"module:Class"`` of its settings (``DESKGEN_<NAME>_*``).
        devweights: ``"module:function"`` building its dev weights, ``function(out, size=..., **options)``;
            empty when the stage has none.
        image: the image target that ships it (``docker/Dockerfile`` stage).
        accelerator: whether it runs on a GPU node (the chart's node selector and tolerations).
        summary: what its produced event says (the AsyncAPI message summary).
        event_type: the CloudEvents type of its produced event; empty: ``com.deskgen.photo.<produces>``.
        tables: the kinds of the compacted topics it reads whole (``Stage.tables``' kinds, ``common/tables.py``).
    """

    name: str
    consumes: str
    produces: str
    section: str
    module: str
    settings: str
    devweights: str = ""
    image: str = ""
    accelerator: bool = False
    summary: str = ""
    event_type: str = ""
    tables: tuple[str, ...] = ()

    def settings_class(self) -> type:
        return resolve(self.settings)

    def image_target(self) -> str:
        return self.image or self.name


STAGES: dict[str, StageSpec] = {}


def register(stage: StageSpec) -> StageSpec:
    """Add ``stage`` to the topology (after the ones before it); its name and consumed kind must be new."""
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is already registered")
    if consumer_of(stage.consumes):
        raise ValueError(f"kind {stage.consumes!r} already has a consumer: {consumer_of(stage.consumes).name}")
    STAGES[stage.name] = stage
    return stage


def unregister(name: str) -> StageSpec:
    """Remove the stage ``name`` (a test's toy stage) and return it."""
    return STAGES.pop(spec(name).name)


def spec(name: str) -> StageSpec:
    """The registered stage ``name``; KeyError names the known ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; known: {', '.join(STAGES)}") from None


def consumer_of(kind: str) -> StageSpec | None:
    """The stage that consumes ``kind``, or None (``generated`` ends the pipeline)."""
    return next((stage for stage in STAGES.values() if stage.consumes == kind), None)


def event_kinds() -> tuple[str, ...]:
    """Every event kind in pipeline order (each stage's input, then the last output), then ``dlq``."""
    kinds: list[str] = []
    for stage in STAGES.values():
        for kind in (stage.consumes, stage.produces):
            if kind not in kinds:
                kinds.append(kind)
    return (*kinds, "dlq")


def event_types() -> dict[str, str]:
    """The CloudEvents type of every pipeline kind (``event_kinds()`` but ``dlq``)."""
    types = {kind: f"{_TYPE_PREFIX}{kind}" for kind in event_kinds()[:-1]}
    types.update({stage.produces: stage.event_type for stage in STAGES.values() if stage.event_type})
    return types


def table_kinds() -> tuple[str, ...]:
    """Every kind a stage reads as a table (a compacted topic), in pipeline order, once each."""
    return tuple(dict.fromkeys(kind for stage in STAGES.values() for kind in stage.tables))


def chart_yaml() -> str:
    """The chart's view of the topology (``CHART_FILE``): each stage's name and kinds, then every kind."""
    lines = [f"# Generated from common/topology.py by `deskgen topology > {CHART_FILE}`: do not edit by hand.",
             "stages:"]
    for stage in STAGES.values():
        lines += [f"  - name: {stage.name}", f"    consumes: {stage.consumes}", f"    produces: {stage.produces}"]
    lines.append(f"kinds: [{', '.join(event_kinds())}]")
    return "\n".join(lines) + "\n"


def resolve(reference: str) -> Any:
    """``"module:attribute"`` → the attribute, importing the module."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _service(name: str) -> str:
    return f"{PACKAGE}.services.{name}"


register(StageSpec(
    name="classifier", consumes="uploaded", produces="classified", section="classification",
    module=f"{_service('classifier')}.stage", settings=f"{_service('classifier')}.settings:ClassifierSettings",
    devweights=f"{_service('classifier')}.devweights:build_dev", summary="The classifier found a desk setup."))
register(StageSpec(
    name="captioner", consumes="classified", produces="captioned", section="captioning",
    module=f"{_service('captioner')}.stage", settings=f"{_service('captioner')}.settings:CaptionerSettings",
    devweights=f"{_service('captioner')}.devweights:build_dev", tables=("product-vectors", "products"),
    summary="The captioner wrote captions and the generation prompt."))
register(StageSpec(
    name="generator", consumes="captioned", produces=RESULT_KIND, section="output",
    module=f"{_service('generator')}.stage", settings=f"{_service('generator')}.settings:GeneratorSettings",
    devweights=f"{_service('generator')}.devweights:build_dev", accelerator=True, tables=("styles",),
    summary="The one terminal result of a job: succeeded, rejected or failed.", event_type="com.deskgen.job.finished"))
