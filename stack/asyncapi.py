"""Build ``docs/asyncapi.yaml``, the event contract as AsyncAPI 3.0, from the project's own sources.

Nothing in the document is kept by hand: channels, messages and senders follow the stage registry
(``common/topology.py``), payloads are the JSON Schemas in ``common/schemas/`` (their ``defs.json``
references rewritten to ``#/components/schemas``), headers and types come from ``deskgen.common.events``, partitions and replicas from the chart's defaults, reason codes from the
code that raises them (``reason_codes``), and examples are real events captured from the pipeline
(``docs/asyncapi-examples.json``, written by ``tests/e2e/test_backend_kit.py`` with
``DESKGEN_CAPTURE_EXAMPLES=1``).

    python stack/asyncapi.py          # rewrite docs/asyncapi.yaml
    python stack/asyncapi.py --check  # exit 1 if it differs from what the sources give
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from deskgen.common.topology import RESULT_KIND, STAGES, consumer_of, event_types

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
EXAMPLES = ROOT / "docs" / "asyncapi-examples.json"
SCHEMAS = ROOT / "common" / "schemas"
BINDING_VERSION = "0.5.0"

__all__ = ["build", "reason_codes", "messages", "DOCUMENT", "EXAMPLES"]

# The kinds no stage produces: kind -> (summary, who sends it). A stage's input that nobody produces and
# that is not listed here is sent by the backend.
_OTHER_SENDERS = {
    "uploaded": ("A backend stored a photo and asks for a generation.", "backend"),
    "dlq": ("An input that could not be processed, kept for inspection and replay.",
            f"any stage (with a rejected/failed result on {RESULT_KIND})"),
    "product": ("A product of the shop's catalogue was added or changed.", "backend (the shop's catalogue)"),
}
# Tables (the catalogue) are no pipeline hop: their reasons go on the DLQ records of refused table records,
# never into a job's result.
_TABLES = (ROOT / "common" / "catalogue", ROOT / "common" / "tables.py", ROOT / "services" / "generator" / "styles.py")

# Calls that carry a reason code as first argument (or reason=), and the status they end a job with.
_REASON_CALLS = {"InvalidInputError": "rejected", "Reject": "rejected", "_reject": "rejected"}


def messages() -> dict[str, tuple[str, str, str]]:
    """kind -> (message name, summary, who sends it): each stage's input and output in the topology's order,
    then the DLQ and the catalogue. The name comes from the CloudEvents type (com.deskgen.job.finished:
    jobFinished)."""
    rows: dict[str, tuple[str, str]] = {}
    for stage in STAGES.values():
        rows.setdefault(stage.consumes, _OTHER_SENDERS.get(stage.consumes, (f"The input of the {stage.name} stage.",
                                                                            "backend")))
        sender = "any stage (the one that ended the job)" if stage.produces == RESULT_KIND else stage.name
        rows[stage.produces] = (stage.summary, sender)
    rows.update({kind: _OTHER_SENDERS[kind] for kind in ("dlq", "product")})
    return {kind: (_message_name(_ce_types()[kind]), summary, sender) for kind, (summary, sender) in rows.items()}


def _ce_types() -> dict[str, str]:
    """Every kind's CloudEvents type, the pipeline's read from the topology now (a stage registered late too)."""
    from deskgen.common import events

    return {**events.CE_TYPES, **event_types()}


def _message_name(ce_type: str) -> str:
    noun, verb = ce_type.split(".")[-2:]
    return noun + verb.capitalize()


def reason_codes(paths: list[Path] | None = None) -> dict[str, list[str]]:
    """Every reason code the code can put in a job's result, read from its source: code -> statuses.

    By default every module of common/ and services/ but the tables' (``_TABLES``).
    """
    if paths is None:
        paths = [p for root in (ROOT / "common", ROOT / "services") for p in sorted(root.rglob("*.py"))
                 if not any(p == table or table in p.parents for table in _TABLES)]
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        returns = {f.name: [n.value for n in ast.walk(f) if isinstance(n, ast.Return) and n.value is not None]
                   for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(node) in _REASON_CALLS:
                keywords = {k.arg: k.value for k in node.keywords}
                reason = node.args[0] if node.args else keywords.get("reason")
                status = keywords.get("status")
                statuses = {status.value} if isinstance(status, ast.Constant) else {_REASON_CALLS[_called(node)]}
                if isinstance(reason, ast.Call) and _called(reason) in returns:  # e.g. _reject(_reason_for(exc))
                    sources = returns[_called(reason)]
                else:
                    sources = [reason] if reason is not None else []
                for source in sources:
                    for code in _strings(source):
                        found.setdefault(code, set()).update(statuses)
            elif isinstance(node, ast.Dict):  # a result built by hand: {"reason": reason or "result_invalid"}
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "reason":
                        for code in _strings(value):
                            found.setdefault(code, set()).update({"rejected", "failed"})
    return {code: sorted(statuses) for code, statuses in sorted(found.items())}


def _called(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def _strings(node: ast.AST) -> list[str]:
    """The string values an expression can take: a constant, either branch of ``a if c else b``, ``a or b``."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [s for value in node.values for s in _strings(value)]
    return []


def _component_schemas() -> dict[str, Any]:
    """defs.json's ``$defs`` and one schema per kind, with references pointing into components."""
    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (_ref(v) if k == "$ref" else rewrite(v)) for k, v in node.items() if k not in ("$schema", "$id")}
        return [rewrite(v) for v in node] if isinstance(node, list) else node

    schemas = {"cloudEventsHeaders": _headers_schema(), **rewrite(json.loads((SCHEMAS / "defs.json").read_text())["$defs"])}
    for kind in messages():
        schema = rewrite(json.loads((SCHEMAS / f"{kind}.json").read_text()))
        schemas.update(schema.pop("$defs", {}))  # a schema's own definitions (product.json's category)
        schemas[f"{kind}Event"] = schema
    return schemas


def _ref(ref: str) -> str:
    name = ref.split("/$defs/", 1)[1]
    return f"#/components/schemas/{name}"


def _headers_schema() -> dict[str, Any]:
    """The Kafka headers every event carries (``events.encode`` writes them, ``events.decode`` checks them)."""
    from deskgen.common import events

    return {
        "type": "object",
        "description": "CloudEvents 1.0, Kafka protocol binding, binary content mode: attributes are ce_* "
                       "headers, the value is the data. A W3C traceparent travels beside them.",
        "required": list(events._REQUIRED_ATTRS),
        "properties": {
            "ce_specversion": {"type": "string", "const": "1.0"},
            "ce_id": {"type": "string", "description": "Unique per event (the pipeline uses a UUID)."},
            "ce_source": {"type": "string", "description": "Who produced it: /deskgen/<stage>, or the backend's own URI."},
            "ce_type": {"type": "string", "enum": list(_ce_types().values())},
            "ce_time": {"type": "string", "format": "date-time"},
            "ce_subject": {"$ref": "#/components/schemas/job_id", "description": "The job id (= the Kafka key)."},
            "content-type": {"type": "string", "const": "application/json"},
            "traceparent": {"type": "string", "pattern": events._TRACEPARENT.pattern,
                            "description": "W3C trace context: same trace id along the pipeline, a new span per hop."},
        },
    }


def _product_headers() -> dict[str, Any]:
    """The same CloudEvents headers, but ``ce_subject`` is the product id, not a job id."""
    from deskgen.common import events

    headers = _headers_schema()
    headers["properties"]["ce_type"] = {"type": "string", "const": events.CE_TYPES["product"]}
    headers["properties"]["ce_subject"] = {"type": "string", "description": "The product id (= the Kafka key)."}
    return headers


def _message(kind: str, examples: list[dict]) -> dict[str, Any]:
    name, summary, sender = messages()[kind]
    if kind == "product":
        from deskgen.common.catalogue.products import DLQ_REASONS

        return {
            "name": name,
            "title": _ce_types()[kind],
            "summary": summary,
            "description": (f"Produced by: {sender}. Kafka key = product id (UTF-8), equal to the payload's id; "
                            "a record with a null value (tombstone) deletes the product. Every captioner replica "
                            "reads the whole topic. A record that fails its schema changes nothing and goes to "
                            f"the DLQ with one of these reasons: {', '.join(DLQ_REASONS)}."),
            "contentType": "application/json",
            "headers": _product_headers(),
            "payload": {"$ref": f"#/components/schemas/{kind}Event"},
            "bindings": {"kafka": {"key": {"type": "string", "description": "The product id."},
                                   "bindingVersion": BINDING_VERSION}},
        }
    message: dict[str, Any] = {
        "name": name,
        "title": _ce_types()[kind],
        "summary": summary,
        "description": f"Produced by: {sender}. Kafka key = job id (UTF-8).",
        "contentType": "application/json",
        "correlationId": {"location": "$message.payload#/job_id", "description": "The job id (also the Kafka key)."},
        "headers": {"type": "object", "allOf": [{"$ref": "#/components/schemas/cloudEventsHeaders"},
                                                {"properties": {"ce_type": {"const": _ce_types()[kind]}}}]},
        "payload": {"$ref": f"#/components/schemas/{kind}Event"},
        "bindings": {"kafka": {"key": {"$ref": "#/components/schemas/job_id"}, "bindingVersion": BINDING_VERSION}},
    }
    if kind == RESULT_KIND:
        codes = reason_codes()
        message["description"] += (" Exactly one per published upload event, written in a Kafka transaction: "
                                   "read it with isolation.level=read_committed. A result that is not `succeeded` "
                                   "carries `reason` and `detail`. Reason codes (status): " +
                                   ", ".join(f"{code} ({'/'.join(statuses)})" for code, statuses in codes.items()) + ".")
    if examples:
        message["examples"] = examples
    return message


def _channel(kind: str) -> str:
    from deskgen.common import events

    return events.CATALOGUE_KIND if kind == "product" else kind


def _channels(topics: dict[str, Any]) -> dict[str, Any]:
    channels = {}
    for kind, (name, _, _) in messages().items():
        topic = f"{topics['prefix']}{_channel(kind)}"
        channels[_channel(kind)] = {
            "address": topic,
            "title": topic,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {
                "topic": topic, "partitions": topics["partitions"], "replicas": topics["replicationFactor"],
                "topicConfiguration": {"cleanup.policy": ["compact" if kind == "product" else "delete"]},
                "bindingVersion": BINDING_VERSION}},
        }
    return channels


def _operations() -> dict[str, Any]:
    names = messages()

    def operation(action: str, kind: str, summary: str, description: str, **kafka: Any) -> dict[str, Any]:
        name, channel = names[kind][0], _channel(kind)
        result = {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary,
                  "description": description, "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}]}
        if kafka:
            result["bindings"] = {"kafka": {**kafka, "bindingVersion": BINDING_VERSION}}
        return result

    def hop(kind: str) -> str:
        producer = next(stage.name for stage in STAGES.values() if stage.produces == kind)
        consumer = consumer_of(kind)
        return f"Internal hop ({producer} -> {consumer.name})" if consumer else f"The output of {producer}"

    group = {"type": "string", "description": "The backend's own consumer group (one per backend service)."}
    first = next(iter(STAGES.values())).consumes
    watched = [stage.produces for stage in STAGES.values() if stage.produces != RESULT_KIND]
    return {
        "submitJob": operation(
            "send", first, "Store the photo at uploads/<job_id>/original.<ext>, then publish this event.",
            "Key = job id. Use an idempotent producer (acks=all). Publishing the same job twice runs it twice "
            "and gives two results; the objects are overwritten, not duplicated (keys derive from the job id)."),
        "receiveResult": operation(
            "receive", RESULT_KIND, "Read each job's one terminal result.",
            "Consume with isolation.level=read_committed (stages write results in transactions; an aborted "
            "attempt is never seen) and match results to jobs by key = job id.", groupId=group),
        **{f"watch{kind.capitalize()}": operation("receive", kind, "Optional: follow a job's progress.",
                                                  f"{hop(kind)}; a backend need not read it.", groupId=group)
           for kind in watched},
        "inspectDlq": operation("receive", "dlq", "Optional: inspect refused inputs.",
                                "Operators read it to find and replay refused records; each also has a result "
                                f"on {RESULT_KIND}.", groupId=group),
        "publishProduct": operation(
            "send", "product", "Add, change or (with a null value) delete a catalogue product.",
            "Key = product id. Recommendations follow within seconds; the topic is compacted, so the latest "
            "record per product is the catalogue."),
    }


def build() -> str:
    """The AsyncAPI document as YAML text."""
    topics = yaml.safe_load((ROOT / "helm" / "deskgen" / "values.yaml").read_text())["topics"]
    examples = json.loads(EXAMPLES.read_text()) if EXAMPLES.exists() else {}
    document = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "deskgen events",
            "version": "1.0.0",
            "description": (
                "The event contract of the deskgen pipeline (uploaded -> classified -> captioned -> generated). "
                "CloudEvents 1.0 in Kafka binary content mode; key = job id; JSON data validated against "
                "the JSON Schemas in common/schemas/ on consume and on produce. Generated by "
                "stack/asyncapi.py: do not edit by hand."),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:19092", "protocol": "kafka",
                              "description": "`make stack-up`'s broker (topic prefix and partitions as configured)."}},
        "channels": _channels(topics),
        "operations": _operations(),
        "components": {
            "messages": {name: _message(kind, examples.get(kind, [])) for kind, (name, _, _) in messages().items()},
            "schemas": _component_schemas(),
        },
    }
    header = "# Generated by stack/asyncapi.py from common/schemas/ and the code: do not edit by hand.\n"
    return header + yaml.dump(document, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=120)


class _NoAliases(yaml.SafeDumper):
    """Writes a shared object out in full each time (no YAML anchors in a document people read)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/asyncapi.yaml is out of date")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT.relative_to(ROOT)} is out of date: run python stack/asyncapi.py", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.parent.mkdir(exist_ok=True)
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
