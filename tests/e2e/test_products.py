"""Products through the real captioner and generator (tiny dev weights, the real MiniLM and
EfficientNet-Lite0 weights) on the real stack: an empty catalogue first, then live products."""

from __future__ import annotations

import json

import pytest

from deskgen.common import events
from support.catalogue import SAMPLE, poll, products_cli, write_products

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realweights]


def test_products_flow_through_the_real_captioner_and_generator(pipeline, dev_models, tmp_path):
    pipeline.create_topics()
    env = dict(dev_models)
    captioner = pipeline.start("captioner", real=True, **env)
    generator = pipeline.start("generator", real=True, **env, DESKGEN_GENERATOR_LOCATOR="cam")
    captioner.wait_ready()
    generator.wait_ready()

    def job(job_id: str) -> None:
        pipeline.store.put(f"uploads/{job_id}/original.png", _desk_png(), "image/png")
        pipeline.publish("classified", {
            "job_id": job_id, "image_key": f"uploads/{job_id}/original.png", "uploaded_at": events.now(),
            "request": {}, "timeline": {},
            "classification": {"label": "desk", "score": 0.6, "threshold": 0.15, "inference_ms": 1.0,
                               "model": {"name": "t", "version": "1"},
                               "evidence": [{"label": "monitor", "prob": 0.4}, {"label": "computer keyboard", "prob": 0.2}]}})

    job("job-empty")  # the catalogue is still empty: the job succeeds with no products and says why
    [empty] = pipeline.results(["job-empty"], timeout=240)["job-empty"]
    assert empty["status"] == "succeeded", empty
    assert (empty["output"]["products"], empty["captioning"]["products_note"]) == ([], "the catalogue is empty")

    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    chosen = [next(p for p in sample if p["category"] == c and p["available"]) for c in ("monitor", "keyboard")]
    hidden = {**chosen[0], "id": "MON-HIDDEN", "available": False, "name": chosen[0]["name"] + " Pro"}
    assert products_cli(pipeline, "load", write_products(tmp_path / "p.jsonl", [*chosen, hidden])).returncode == 0

    found: list[dict] = []

    def recommended() -> bool:  # the live catalogue reaches the service within seconds: poll with new jobs
        job_id = f"job-{len(found)}"
        job(job_id)
        [result] = pipeline.results([job_id], timeout=240)[job_id]
        found.append(result)
        return len(result["output"]["products"]) == 2

    poll(recommended, timeout=120, what="products in the result")
    result = found[-1]
    products = result["output"]["products"]
    assert [p["category"] for p in products] == ["monitor", "keyboard"]
    assert {p["id"] for p in products} == {chosen[0]["id"], chosen[1]["id"]}
    assert f"featuring a {chosen[0]['brand']} monitor and a {chosen[1]['brand']} keyboard" in result["captioning"]["prompt"]
    for product in products:
        location = product["location"]
        assert location["detector"].startswith("cam:")
        for value in (location["box"] or []) + list((location["centre"] or {}).values()):
            assert 0.0 <= value <= 1.0


def _desk_png() -> bytes:
    import io

    from samples import draw_desk

    buffer = io.BytesIO()
    draw_desk(seed=2).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_budget_and_product_categories_narrow_what_the_real_captioner_recommends(pipeline, dev_models):
    """The request's budget and categories through the real captioner on the sample catalogue: within the budget
    and in its currency only; an excluded category never; an included one even when unseen, and nothing else;
    a category both included and excluded ends the job as rejected (categories_conflict)."""
    pipeline.create_topics()
    assert products_cli(pipeline, "load", str(SAMPLE)).returncode == 0
    captioner = pipeline.start("captioner", real=True, **dev_models)
    captioner.wait_ready()  # ready = the catalogue replayed
    evidence = [{"label": "monitor", "prob": 0.4}, {"label": "computer keyboard", "prob": 0.3},
                {"label": "desk", "prob": 0.2}, {"label": "table lamp", "prob": 0.2}, {"label": "mouse", "prob": 0.1}]
    requests = {"plain": {}, "budget": {"budget": {"amount": 150, "currency": "EUR"}},
                "exclude": {"categories": {"exclude": ["monitor", "keyboard"]}},
                "include": {"categories": {"include": ["webcam", "monitor"]}},
                "conflict": {"categories": {"include": ["monitor"], "exclude": ["monitor"]}}}
    for job_id, request in requests.items():
        key = pipeline.upload(_desk_png(), job_id, ext="png")
        pipeline.publish("classified", {
            "job_id": job_id, "image_key": key, "uploaded_at": events.now(), "request": request, "timeline": {},
            "classification": {"label": "desk", "score": 0.6, "threshold": 0.15, "inference_ms": 1.0,
                               "model": {"name": "t", "version": "1"}, "evidence": evidence}})

    [conflict] = pipeline.results(["conflict"], timeout=240)["conflict"]
    assert (conflict["status"], conflict["reason"], conflict["stage"]) == ("rejected", "categories_conflict", "captioner")
    assert "monitor" in conflict["detail"]
    captioned = {r["data"]["job_id"]: r["data"]["captioning"] for r in pipeline.read(
        "captioned", until=lambda rs: len({r["data"]["job_id"] for r in rs}) >= 4, timeout=240)}
    products = {job_id: captioned[job_id]["products"] for job_id in ("plain", "budget", "exclude", "include")}

    assert {"monitor", "keyboard"} <= {p["category"] for p in products["plain"]}
    assert any(p["price"]["currency"] != "EUR" or p["price"]["amount"] > 150 for p in products["plain"])
    assert products["budget"] and all(p["price"]["currency"] == "EUR" and p["price"]["amount"] <= 150
                                      for p in products["budget"])
    assert products["exclude"] and not {"monitor", "keyboard"} & {p["category"] for p in products["exclude"]}
    assert [(p["category"], p["words"][0]) for p in products["include"]] == [("monitor", "imagenet:monitor"),
                                                                            ("webcam", "requested:webcam")]
