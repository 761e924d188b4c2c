"""The AsyncAPI document (docs/asyncapi.yaml): generated from the schemas and the code, accepted by the
official AsyncAPI parser, with examples that are real events."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

import asyncapi
from deskgen.common import events

VALIDATOR = asyncapi.ROOT / "stack" / "asyncapi-validator"


@pytest.fixture(scope="module")
def validate():
    """``validate(path) -> CompletedProcess``: the pinned @asyncapi/parser, installed with `npm ci` on first use."""
    if shutil.which("npm") is None:
        pytest.fail("no `npm` on PATH: install Node.js and npm (Debian: nodejs npm; .ci/run does)")
    marker = VALIDATOR / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < (VALIDATOR / "package-lock.json").stat().st_mtime:
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=VALIDATOR, check=True, timeout=600)
    return lambda path: subprocess.run(["node", str(VALIDATOR / "validate.mjs"), str(path)], capture_output=True,
                                       text=True, timeout=120)


def test_the_document_is_exactly_what_the_schemas_and_the_code_give():
    assert asyncapi.DOCUMENT.read_text() == asyncapi.build(), "docs/asyncapi.yaml is stale: run python stack/asyncapi.py"


def test_the_official_asyncapi_parser_accepts_the_document(validate):
    result = validate(asyncapi.DOCUMENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0, 6 channels, 6 operations, 6 messages" in result.stdout


def test_the_parser_refuses_a_document_with_a_broken_kafka_binding(validate, tmp_path):
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(asyncapi.DOCUMENT.read_text().replace("partitions: ", "partitions: x", 1))
    result = validate(broken)
    assert result.returncode == 1 and '"partitions" property type must be integer' in result.stdout, result.stdout


def test_payloads_are_the_json_schemas_with_their_references_pointing_into_components():
    document = asyncapi.yaml.safe_load(asyncapi.DOCUMENT.read_text())
    schemas = document["components"]["schemas"]
    for kind in events.KINDS:
        source = json.loads((asyncapi.SCHEMAS / f"{kind}.json").read_text())
        assert schemas[f"{kind}Event"]["required"] == source["required"]
        assert set(schemas[f"{kind}Event"]["properties"]) == set(source["properties"])
    assert "timeline" not in schemas["uploadedEvent"]["required"]
    assert not re.search(r"defs\.json|\$defs", asyncapi.DOCUMENT.read_text())


def test_every_message_has_real_examples_that_pass_the_contract():
    examples = json.loads(asyncapi.EXAMPLES.read_text())
    assert set(examples) == set(events.KINDS)
    for kind, cases in examples.items():
        assert cases, kind
        for case in cases:
            headers = case["headers"]
            assert headers["ce_type"] == events.CE_TYPES[kind] and headers["ce_specversion"] == "1.0"
            assert headers["ce_subject"] == case["payload"]["job_id"], case["name"]
            events.validate(kind, case["payload"])
    results = {case["payload"]["status"] for case in examples["generated"]}
    assert results == {"succeeded", "rejected"}
    succeeded = next(case["payload"] for case in examples["generated"] if case["payload"]["status"] == "succeeded")
    assert succeeded["request"]["mode"] == succeeded["output"]["mode"] == "keep_devices"  # the newest features
    assert succeeded["output"]["products"] and succeeded["captioning"]["products"]


def test_reason_codes_are_read_from_every_kind_of_place_that_sets_one():
    codes = asyncapi.reason_codes()
    assert codes["not_desk"] == ["rejected"]  # Reject(reason=...)
    assert codes["image_truncated"] == ["rejected"]  # _reject(_reason_for(exc))
    assert codes["retries_exhausted"] == ["failed"]  # InvalidInputError(..., status="failed")
    assert codes["result_invalid"] == ["failed", "rejected"]  # a result dict built by hand
    assert "truncated" not in codes


def test_the_backend_guide_lists_every_reason_code_the_code_can_set_with_its_status():
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([a-z/]+) \|", (asyncapi.ROOT / "docs" / "backend.md").read_text(), re.M))
    assert rows == {code: "/".join(statuses) for code, statuses in asyncapi.reason_codes().items()}


def test_the_catalogue_message_lists_exactly_the_reasons_a_refused_product_record_gets():
    from deskgen.common.catalogue.products import DLQ_REASONS, tombstone_record
    from deskgen.common.errors import InvalidInputError
    from deskgen.common.records import DECODE_REASONS

    description = asyncapi.yaml.safe_load(asyncapi.DOCUMENT.read_text())["components"]["messages"][
        "productUpserted"]["description"]
    listed = description.rsplit("one of these reasons: ", 1)[1].rstrip(".").split(", ")
    assert listed == list(DLQ_REASONS) and set(DECODE_REASONS) <= set(listed)  # the decoder's reasons too
    with pytest.raises(InvalidInputError) as refused:  # the CLI's own refusal never reaches the DLQ
        tombstone_record("bad id")
    assert refused.value.reason not in listed
    table_only = set(DLQ_REASONS) - set(DECODE_REASONS)  # the decoder's reasons also end jobs
    assert table_only and not table_only & set(asyncapi.reason_codes()), "a table's reason is no job result"
