"""The LoRA training Job (training.lora): off by default; when on, a valid Job that runs `deskgen train lora`
with the generator's image on a GPU node, named after its values, refused without its S3 locations."""

from __future__ import annotations

import pytest

from chart_env import KUBE_VERSIONS, by_kind, run

ON = ("training.lora.enabled=true", "training.lora.name=desk", "training.lora.data=s3://deskgen/training/desk",
      "training.lora.upload=s3://deskgen/adapters/desk/1")


def _job(render, *sets: str) -> dict:
    jobs = [job for name, job in by_kind(render.objects("default", KUBE_VERSIONS[-1], *ON, *sets), "Job").items()
            if "train-lora" in name]
    assert len(jobs) == 1
    return jobs[0]


def test_off_by_default(render):
    assert not [name for name in by_kind(render.objects("default"), "Job") if "train-lora" in name]


def test_the_job_trains_with_the_generators_image_on_a_gpu_node_and_resumes(render):
    job = _job(render)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert container["command"] == ["deskgen"] and args[:2] == ["train", "lora"]
    options = dict(zip(args[2::2], args[3::2]))
    assert options["--data"] == "s3://deskgen/training/desk" and options["--upload"] == "s3://deskgen/adapters/desk/1"
    assert options["--base"] == "hf://fluently/Fluently-XL-v2" and options["--steps"] == "3000"
    assert "--resume" in args and "--gradient-checkpointing" in args
    assert container["image"].startswith("deskgen/generator:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["restartPolicy"] == "OnFailure"  # the same pod, its scratch volume and checkpoints kept
    env = {e["name"]: e for e in container["env"]}
    assert env["DESKGEN_GENERATOR_DEVICE"]["value"] == "cuda" and "DESKGEN_S3_SECRET_KEY" in env


def test_new_values_make_a_new_job_and_the_same_values_the_same_one(render):
    first, same, other = _job(render), _job(render), _job(render, "training.lora.steps=500")
    assert first["metadata"]["name"] == same["metadata"]["name"] != other["metadata"]["name"]


def test_the_rendered_job_passes_kubernetes_validate_strict(tools, render, tmp_path):
    manifest = tmp_path / "training.yaml"
    manifest.write_text(render.text("default", KUBE_VERSIONS[-1], *ON))
    done = run(tools.kubernetes_validate, "--strict", "--kubernetes-version", KUBE_VERSIONS[-1], manifest, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("sets, says", [
    (("training.lora.enabled=true",), "training.lora.enabled needs training.lora.data and training.lora.upload"),
    ((*ON[:2], "training.lora.data=/local/photos", ON[3]), "/training/lora/data"),
    ((*ON, "training.lora.name=Not_A_Label"), "/training/lora/name"),
])
def test_incomplete_or_malformed_values_are_refused(render, sets, says):
    assert says in render.fails(*sets)
