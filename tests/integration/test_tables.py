"""Tables the runtime owns, on the real broker: a stage that declares a table is ready only once the table has
replayed its topic; a feed that fails turns readiness false and stops the service; bad rows reach the DLQ
through the runtime's DLQ record, and a row that cannot be dead-lettered fails the feed."""

from __future__ import annotations

import json
import threading

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from prometheus_client import REGISTRY

from deskgen.common import events
from deskgen.common.catalogue import decode_product, product_record
from deskgen.common.kafka import make_admin
from deskgen.common.runtime import Runtime
from deskgen.common.settings import ImageSettings, KafkaSettings, RuntimeSettings, S3Settings, load
from deskgen.common.stage import Stage
from deskgen.common.storage import ObjectStore
from deskgen.common.tables import Change, Table
from support.catalogue import SAMPLE, poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCTS = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:5]]


class Names(Table):
    """Product names by id, on the products topic; ``apply`` waits for ``gate`` and fails on a name "boom"."""

    name, kind, reasons = "names", events.CATALOGUE_KIND, ("event_invalid",)

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.gate = threading.Event()
        self.loaded_in = None

    def load(self, state_dir):
        self.loaded_in = state_dir

    def decode(self, key, value, headers):
        return decode_product(key, value, headers)["name"]

    def apply(self, changes: list[Change]) -> None:
        self.gate.wait()
        for change in changes:
            if change.value == "boom":
                raise RuntimeError("a row this table cannot hold")
            if change.value is None:
                self.rows.pop(change.key, None)
            else:
                self.rows[change.key] = change.value


class WithTable(Stage):
    name = "classifier"

    def __init__(self, table: Table):
        self.tables = (table,)


def _up() -> float | None:
    return REGISTRY.get_sample_value("deskgen_table_up", {"stage": "classifier", "table": "names"})


@pytest.fixture
def service(pipeline, tmp_path):
    """Start the runtime of a stage with the ``Names`` table on a thread; yields (runtime, table, exit code)."""
    pipeline.create_topics()
    table = Names()
    runtime = Runtime(WithTable(table), runtime=load(RuntimeSettings).model_copy(update={"state_dir": tmp_path}),
                      kafka=load(KafkaSettings), store=ObjectStore(load(S3Settings)), images=ImageSettings())
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(runtime.run()), daemon=True)

    def start():
        thread.start()
        return runtime, table, exit_code

    yield start
    runtime.stop()
    table.gate.set()
    if thread.ident is not None:
        thread.join(60)
        assert not thread.is_alive(), "the runtime did not stop"


def test_readiness_waits_for_the_table_to_catch_up_and_bad_rows_go_to_the_dlq(pipeline, service, tmp_path):
    for product in PRODUCTS:
        pipeline.produce_raw("products", product["id"].encode(), *_record(product))
    bad = product_record(PRODUCTS[0])
    pipeline.produce_raw("products", b"BAD-1", bad.value.replace(b'"available":', b'"availabl":'), bad.headers)
    pipeline.produce_raw("products", b"", bad.value, bad.headers)  # an empty key (a compacted topic refuses none)
    pipeline.produce_raw("products", PRODUCTS[1]["id"].encode(), None)  # a tombstone

    runtime, table, exit_code = service()
    poll(lambda: table.loaded_in is not None, what="the table loaded")
    assert table.loaded_in == tmp_path and not runtime.health.ready and _up() == 0
    assert runtime.health.as_dict()["tables_ready"] is False

    table.gate.set()
    poll(lambda: runtime.health.ready, timeout=60, what="readiness")
    assert table.rows == {p["id"]: p["name"] for p in PRODUCTS if p["id"] != PRODUCTS[1]["id"]} and _up() == 1
    dead = pipeline.dlq(2)
    assert sorted((d["stage"], d["reason"], d["job_id"], d["source"]["topic"]) for d in dead) == [
        ("classifier", "event_invalid", None, pipeline.topic("products")),
        ("classifier", "table_key_missing", None, pipeline.topic("products"))]

    runtime.stop()
    poll(lambda: exit_code == [0], what="a clean stop")
    assert not any(feed._thread.is_alive() for feed in runtime.tables.feeds), "a table's feed was left running"


def test_a_failed_feed_turns_readiness_false_and_stops_the_service(pipeline, service):
    runtime, table, exit_code = service()
    table.gate.set()
    poll(lambda: runtime.health.ready, timeout=60, what="readiness")

    pipeline.produce_raw("products", b"BOOM", *_record({**PRODUCTS[0], "id": "BOOM", "name": "boom"}))

    poll(lambda: exit_code == [2], what="the service to stop with exit code 2")
    assert not runtime.health.ready and _up() == 0


def test_a_bad_row_that_cannot_be_dead_lettered_fails_the_feed_instead_of_vanishing(pipeline, service):
    dlq = ConfigResource(ConfigResource.Type.TOPIC, pipeline.topic("dlq"), incremental_configs=[
        ConfigEntry("max.message.bytes", "64", incremental_operation=AlterConfigOpType.SET)])
    admin = make_admin(pipeline.kafka)
    for future in admin.incremental_alter_configs([dlq]).values():
        future.result(30)
    bad = product_record(PRODUCTS[0])
    pipeline.produce_raw("products", b"BAD-1", bad.value.replace(b'"available":', b'"availabl":'), bad.headers)

    runtime, table, exit_code = service()
    table.gate.set()

    poll(lambda: exit_code == [2], timeout=60, what="the service to stop with exit code 2")
    assert "could not be sent" in str(runtime.tables.feeds[0].error) and _up() == 0


def _record(product: dict) -> tuple[bytes | None, list]:
    record = product_record(product)
    return record.value, record.headers
