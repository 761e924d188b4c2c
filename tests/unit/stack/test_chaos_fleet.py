"""The chaos run covers every stage of the topology: a stage registered in ``common/topology.py`` gets its
processes, its settings and its backlog check with no edit to the chaos run."""

from __future__ import annotations

from chaos_checks import backlogs
from chaos_fleet import Fleet
from chaos_plan import Options, service_env
from support.toy_stage import toy_stage


class _RecordingPipeline:
    """What the fleet and the checks ask of a pipeline, recorded instead of done."""

    prefix = "t1."

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.groups: list[tuple[str, str]] = []

    def start(self, stage: str, *, instance: str, real: bool, **env: str) -> None:
        assert real, "the chaos run starts the real services"
        self.started.append((stage, instance))

    def backlog(self, group: str, kind: str) -> int:
        self.groups.append((group, kind))
        return 0


def test_the_fleet_runs_the_three_stages_two_one_and_two_processes():
    pipeline = _RecordingPipeline()
    Fleet(pipeline, {}).start()

    assert pipeline.started == [("classifier", "0"), ("classifier", "1"), ("captioner", "0"),
                                ("generator", "0"), ("generator", "1")]


def test_a_registered_fourth_stage_joins_the_fleet_and_its_checks():
    pipeline = _RecordingPipeline()
    with toy_stage():
        Fleet(pipeline, {}).start()
        found = backlogs(pipeline)
        env = service_env({}, Options())

    assert ("toy", "0") in pipeline.started
    assert found == {"classifier": 0, "captioner": 0, "generator": 0, "toy": 0}
    assert ("t1.toy", "sketched") in pipeline.groups
    assert env["DESKGEN_TOY_THREADS"] == "1"


def test_the_fourth_stage_is_gone_once_unregistered():
    with toy_stage():
        pass
    pipeline = _RecordingPipeline()
    Fleet(pipeline, {}).start()

    assert "toy" not in {stage for stage, _ in pipeline.started}
