"""The chart's values (validated by the schema, every key documented) and the stage images the chart deploys."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from chart_env import CHART, ROOT, STAGES, run
from deskgen.common import topology

def _resolve(schema: dict, node: dict) -> dict:
    if "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        merged = {**_resolve(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}
        merged["properties"] = {**target.get("properties", {}), **node.get("properties", {})}
        return merged
    return node


def _has_doc_comment(lines: list[str], number: int) -> bool:
    """Whether the comment block right above line `number` holds a `# -- ` doc comment."""
    block = []
    for line in reversed(lines[:number]):
        if not line.lstrip().startswith("#"):
            break
        block.append(line.lstrip())
    return any(line.startswith("# -- ") for line in block)


def test_values_yaml_validates_against_the_schema_and_every_chart_key_is_documented():
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load("\n".join(lines)))
    # (indent, schema node, whether a comment above the head documents the whole block)
    stack: list[tuple[int, dict, bool]] = [(-1, schema, False)]
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack[-1][0] >= indent:
            stack.pop()
        _, parent_node, parent_documented = stack[-1]
        parent = _resolve(schema, parent_node)
        if "properties" not in parent:  # inside a free-form Kubernetes object, documented at its head
            stack.append((indent, {}, True))
            continue
        assert key in parent["properties"], f"values.yaml:{number + 1}: {key} is not in the schema"
        node = _resolve(schema, parent["properties"][key])
        commented = _has_doc_comment(lines, number) or parent_documented
        is_section = "properties" in node and line.rstrip().endswith(":")
        if not is_section and not commented:
            undocumented.append(f"values.yaml:{number + 1}: {key}")
        stack.append((indent, node, commented))
    assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


def test_schema_shares_one_stage_definition():
    schema = json.loads((CHART / "values.schema.json").read_text())
    for stage in STAGES:
        assert schema["properties"][stage]["$ref"] == "#/$defs/stage"
        assert schema["properties"][stage]["unevaluatedProperties"] is False


DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_the_dockerfile_passes_hadolint(tools):
    run(tools.hadolint, DOCKERFILE)


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_image_matches_the_chart(stage):
    """The stage's image (its target in the multi-stage Dockerfile, ``StageSpec.image_target()``): the public
    base by default, the stage entry point, the non-root user, the HTTP port and the model cache volume the
    chart mounts."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, re.M)
    target = topology.spec(stage).image_target()
    section = next(part for part in re.split(r"^FROM ", text, flags=re.M) if re.match(rf"\S+ AS {target}$", part, re.M))
    assert f'ENTRYPOINT ["deskgen", "run", "{stage}"]' in section
    assert re.search(r"^USER 10001:10001$", section, re.M)
    assert "EXPOSE 8080" in section
    mount = yaml.safe_load((CHART / "values.yaml").read_text())[stage]["modelCache"]["mountPath"]
    assert f'VOLUME ["{mount}"]' in section
