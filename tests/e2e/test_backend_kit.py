"""The backend kit against the real stack and the three real services (classifier on its real weights,
captioner and generator on tiny dev weights): the Java example (built here with Maven) and the Python
example each submit a desk drawing, a photo that is not a desk and a file that is not an image, with a
budget and product categories, and each job ends with exactly one terminal result whose products keep to
them. Real events from the run are checked against the
AsyncAPI document; ``DESKGEN_CAPTURE_EXAMPLES=1`` also stores them as its examples."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from jsonschema import Draft202012Validator

import asyncapi
from deskgen.common import events
from deskgen.common.topology import STAGES
from samples import write_samples
from support.catalogue import SAMPLE, products_cli
from support.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realweights]

JAVA_EXAMPLE = asyncapi.ROOT / "examples" / "backend-java"
PYTHON_EXAMPLE = asyncapi.ROOT / "examples" / "backend-python" / "backend.py"
# file -> (status, reason) the job must end with
EXPECTED = {"desk-drawing-1.png": ("succeeded", None), "coffee.jpg": ("rejected", "not_desk"),
            "not-a-photo.jpg": ("rejected", "image_undecodable")}
# What each example asks of the products: its options and the request they must become.
JAVA_WISHES = (["--budget", "300", "EUR", "--include", "monitor,desk lamp,keyboard"],
               {"budget": {"amount": 300, "currency": "EUR"},
                "categories": {"include": ["monitor", "desk lamp", "keyboard"]}})
PYTHON_WISHES = (["--budget", "400", "GBP", "--exclude", "monitor,desk"],
                 {"budget": {"amount": 400, "currency": "GBP"}, "categories": {"exclude": ["monitor", "desk"]}})


@pytest.fixture(scope="module")
def kit(stack, dev_models, tmp_path_factory):
    """One pipeline with the three real services and the sample catalogue, shared by both backends; the
    sample photos."""
    workdir = tmp_path_factory.mktemp("backend-kit")
    pipeline = Pipeline(stack, workdir)
    pipeline.create_topics()
    loaded = products_cli(pipeline, "load", str(SAMPLE))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    services = [pipeline.start(stage, real=True, **dev_models) for stage in STAGES]
    photos = {path.name: path for path, _ in write_samples(workdir / "photos") if path.name in EXPECTED}
    try:
        started = time.monotonic()
        for service in services:
            service.wait_ready()
        print(f"services ready in {time.monotonic() - started:.1f} s")
        yield pipeline, photos
    finally:
        pipeline.stop_all()


@pytest.fixture(scope="module")
def java_jar():
    """The Java example, built by Maven (dependencies from Maven Central on first use)."""
    if shutil.which("mvn") is None or shutil.which("java") is None:
        pytest.fail("no `mvn`/`java` on PATH: install Java 17 and Maven (Debian: openjdk-17-jdk-headless maven)")
    build = subprocess.run(["mvn", "-B", "-q", "package"], cwd=JAVA_EXAMPLE, capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return JAVA_EXAMPLE / "target" / "deskgen-backend-example.jar"


def _run_backend(kit, command: list[str], wishes: tuple[list[str], dict]) -> dict[str, dict]:
    """Run a backend example on the samples with ``wishes``' options; its parsed result lines by file name,
    after checking that each job has exactly one terminal result on the topic, that each upload carries the
    request the options make, and that the desk's products keep to it (and are printed)."""
    pipeline, photos = kit
    options, request = wishes
    started = time.monotonic()
    run = subprocess.run([*command, "--concept", "BASIC", *options, "--timeout", "240", *map(str, photos.values())],
                         env=pipeline.env, capture_output=True, text=True, timeout=300)
    print(f"{command[0]} backend: {time.monotonic() - started:.1f} s\n{run.stdout}{run.stderr[-2000:]}")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}\n{pipeline.describe_failure()}"
    printed = {m["file"]: m for m in (match.groupdict() for match in re.finditer(
        r"^result job=(?P<job>\S+) file=(?P<file>\S+) status=(?P<status>\S+) "
        r"reason=(?P<reason>\S+) stage=(?P<stage>\S+) timeline=(?P<timeline>.*)$", run.stdout, re.M))}
    assert set(printed) == set(EXPECTED), run.stdout
    results = pipeline.results([line["job"] for line in printed.values()], settle=2.0)
    for name, (status, reason) in EXPECTED.items():
        line = printed[name]
        assert (line["status"], line["reason"]) == (status, reason or "-"), line
        [result] = results[line["job"]]  # exactly one terminal result
        assert (result["status"], result.get("reason")) == (status, reason)
        assert line["timeline"].split(", ")[0].startswith("classifier ")
    assert printed["desk-drawing-1.png"]["timeline"].count("s, ") == 2  # classifier, captioner, generator
    jobs = {line["job"] for line in printed.values()}
    uploads = [r for r in pipeline.read("uploaded", until=lambda rs: len(jobs & {r["key"].decode() for r in rs}) == 3)
               if r["key"].decode() in jobs]
    assert [u["data"]["request"] for u in uploads] == [{"concept": "BASIC", **request}] * 3
    [desk] = results[printed["desk-drawing-1.png"]["job"]]
    _assert_products_keep_to(desk["captioning"], request)
    printed_products = re.search(r"^    products (.*)$", run.stdout, re.M)
    assert printed_products and all(f"{p['brand']} {p['name']}" in printed_products[1]
                                    for p in desk["captioning"]["products"]), run.stdout
    return printed


def _assert_products_keep_to(captioning: dict, request: dict) -> None:
    """Every product within the budget (in its currency), of an included category, of no excluded one."""
    products, budget, categories = captioning["products"], request["budget"], request["categories"]
    assert products or ("include" not in categories and captioning["products_note"]), captioning  # include: never none
    for product in products:
        assert product["price"]["currency"] == budget["currency"], product
        assert product["price"]["amount"] <= budget["amount"], product
        assert product["category"] in categories.get("include", [product["category"]]), product
        assert product["category"] not in categories.get("exclude", []), product


@pytest.fixture(scope="module")
def java_run(kit, java_jar):
    """The Java example's run over the samples (once per module): its result lines by file name."""
    return _run_backend(kit, ["java", "-jar", str(java_jar)], JAVA_WISHES)


def test_the_java_backend_gets_one_result_per_photo(kit, java_run):
    pipeline, _ = kit
    jobs = {line["job"] for line in java_run.values()}
    uploads = [r for r in pipeline.read("uploaded", until=lambda rs: len(rs) >= 3) if r["key"].decode() in jobs]
    for upload in uploads:  # the minimal event: no timeline, CloudEvents headers written by the Java SDK
        assert sorted(upload["data"]) == ["image_key", "job_id", "request", "uploaded_at"]
        assert upload["headers"]["ce_source"] == b"/examples/backend-java"
        assert upload["headers"]["ce_subject"] == upload["key"]


def test_the_python_backend_gets_one_result_per_photo(kit):
    _run_backend(kit, [sys.executable, str(PYTHON_EXAMPLE)], PYTHON_WISHES)


def test_real_events_match_the_asyncapi_document(kit, java_run):
    """Real records of every topic, checked against the document's header schema and the payload schemas;
    stored as the document's examples with DESKGEN_CAPTURE_EXAMPLES=1: the Java run's upload and refusals,
    and a keep_devices job with catalogue products for the hops and the success."""
    pipeline, photos = kit
    featured = pipeline.backend.submit(photos["desk-drawing-1.png"].read_bytes(), filename="desk-drawing-1.png",
                                       request={"concept": "BASIC", "mode": "keep_devices"})
    [result] = pipeline.results([featured], timeout=240)[featured]
    assert (result["status"], result["output"]["mode"]) == ("succeeded", "keep_devices"), result
    assert result["output"]["products"] and result["captioning"]["products"], "the sample catalogue recommends none"
    components = asyncapi.yaml.safe_load(asyncapi.DOCUMENT.read_text())["components"]
    examples: dict[str, list[dict]] = {}
    for kind in events.KINDS:
        message = asyncapi.messages()[kind][0]
        headers_schema = Draft202012Validator({"$ref": f"#/components/messages/{message}/headers", "components": components})
        payload_schema = Draft202012Validator({"$ref": f"#/components/schemas/{kind}Event", "components": components})
        chosen = _examples(kind, pipeline.read(kind, until=lambda rs: len(rs) >= 1, settle=0.5), featured)
        for record in chosen:
            headers = {name: value.decode() for name, value in record["headers"].items()}
            headers_schema.validate(headers)
            payload_schema.validate(record["data"])
            events.validate(kind, record["data"])
            assert headers["ce_subject"] == record["key"].decode() == record["data"]["job_id"]
        examples[kind] = [{"name": name, "summary": summary, "headers": {k: v.decode() for k, v in r["headers"].items()},
                           "payload": r["data"]} for name, summary, r in _named(kind, chosen)]
    if os.environ.get("DESKGEN_CAPTURE_EXAMPLES") == "1":
        asyncapi.EXAMPLES.write_text(json.dumps(examples, indent=2, ensure_ascii=False) + "\n")
        asyncapi.main([])


def _examples(kind: str, records: list[dict], featured: str) -> list[dict]:
    """The records worth showing: the Java backend's minimal upload event, the ``featured`` job's events,
    one refusal per reason, one DLQ record."""
    ours = [r for r in records if r["key"].decode() == featured]
    if kind == "uploaded":
        return [next(r for r in records if r["headers"]["ce_source"] == b"/examples/backend-java"), *ours]
    if kind == "generated":
        refused = {r["data"].get("reason"): r for r in records if r["data"]["status"] == "rejected"}
        return ours + [refused["not_desk"], refused["image_undecodable"]]
    return ours or records[:1]


def _named(kind: str, records: list[dict]):
    for record in records:
        data = record["data"]
        if kind == "generated":
            outcome = data["status"] if data["status"] == "succeeded" else f"{data['status']}-{data['reason']}"
            yield outcome, f"A real {data['status']} result ({data.get('reason') or 'every stage ran'}).", record
        elif kind == "dlq":
            yield "refused", f"A real DLQ record: the {data['stage']} refused the input ({data['reason']}).", record
        elif kind == "uploaded" and record["headers"]["ce_source"] == b"/examples/backend-java":
            yield "minimal", ("A real minimal upload event (no timeline), as the Java example publishes it: a "
                              "concept, a budget per product and the product categories to include."), record
        elif kind == "uploaded":
            yield "keep-devices", "A real upload asking to keep the photo's own devices.", record
        else:
            yield "real", f"A real {kind} event.", record


def test_publishing_the_same_job_twice_runs_it_twice(kit):
    """What the README tells backends: no dedup by job id, so one publish per job; both results carry its id."""
    pipeline, photos = kit
    job_id = f"twice-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        pipeline.backend.submit(photos["coffee.jpg"].read_bytes(), job_id=job_id, filename="coffee.jpg")
    results = pipeline.results([job_id], settle=5.0)[job_id]
    assert [(r["status"], r["reason"]) for r in results] == [("rejected", "not_desk")] * 2
