"""``deskgen`` commands that read the stage registry: config, models build-dev, topology."""

from __future__ import annotations

from deskgen.common import topology
from deskgen.common.cli import main
from support.toy_stage import toy_stage


def test_config_names_a_stage_whose_settings_cannot_be_imported_and_fails(capsys):
    with toy_stage():
        code = main(["config"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "left out the settings of toy (deskgen.services.toy.settings:ToySettings): No module named" in err
    assert "DESKGEN_CAPTIONER_MODEL" in out  # the stages it could import are listed


def test_config_lists_every_registered_stage_settings(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for stage in topology.STAGES:
        assert f"`DESKGEN_{stage.upper()}_" in out


def test_build_dev_calls_the_registered_builder_with_its_architecture(tmp_path, capsys):
    with toy_stage():
        assert main(["models", "build-dev", "toy", "--out", str(tmp_path / "w"), "--arch", "card"]) == 0
        assert (tmp_path / "w" / "weights.txt").read_text() == "tiny card\n"
        assert main(["models", "build-dev", "toy", "--out", str(tmp_path / "d")]) == 0
        assert (tmp_path / "d" / "weights.txt").read_text() == "tiny paper\n"  # the builder's own default


def test_build_dev_refuses_a_stage_without_a_builder(capsys):
    with toy_stage(devweights=""):
        assert main(["models", "build-dev", "toy"]) == 2
    assert "toy has no dev-weights builder" in capsys.readouterr().err


def test_topology_prints_the_chart_file(capsys):
    assert main(["topology"]) == 0
    assert capsys.readouterr().out == topology.chart_yaml()
