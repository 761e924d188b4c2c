"""A transaction that cannot finish within its timeout is abandoned and the transactional producer is
replaced in place: the batch is redone, nothing of the abandoned transaction becomes visible, and the
process does not have to exit. The broker stays down longer than the transaction may live, the way a
wedged coordinator connection after a restart (confluentinc/librdkafka#5456) looks from the caller.
Stops the shared broker for ~20 s."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]


def _uploaded(job_id: str):
    from deskgen.common import events

    return events.encode("uploaded", {"job_id": job_id, "image_key": f"uploads/{job_id}/original.jpg",
                                      "uploaded_at": events.now(), "request": {}, "timeline": {}}, source="/tests")


def test_a_transaction_outliving_its_timeout_is_abandoned_and_the_producer_replaced(pipeline, caplog):
    import localstack
    from deskgen.common.checkpoint import Checkpoint
    from deskgen.common.retry import Backoff

    pipeline.create_topics()
    out_topic, in_topic = pipeline.topic("classified"), pipeline.topic("uploaded")
    group = f"{pipeline.prefix}checkpoint"
    checkpoint = Checkpoint({"bootstrap.servers": pipeline.bootstrap, "transactional.id": group,
                             "transaction.timeout.ms": 3000, "enable.idempotence": True, "linger.ms": 0},
                            threading.Event(), Backoff(attempts=5, base_s=0.2, cap_s=1.0))
    checkpoint.init()
    consumer = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": group, "enable.auto.commit": False})

    caplog.set_level(logging.WARNING, logger="deskgen.checkpoint")
    outcome: dict[str, bool] = {}
    localstack.stop_kafka()
    try:
        worker = threading.Thread(target=lambda: outcome.update(first=checkpoint.commit(
            [(out_topic, _uploaded("abandoned"))], [TopicPartition(in_topic, 0, 7)], consumer)))
        worker.start()
        deadline = time.monotonic() + 60
        while "replacing it" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "replacing it" in caplog.text, caplog.text
    finally:
        localstack.start_kafka()
    worker.join(120)
    assert outcome == {"first": False}, "the abandoned transaction must be reported as aborted"

    assert checkpoint.commit([(out_topic, _uploaded("redone"))], [TopicPartition(in_topic, 0, 3)], consumer)
    records = pipeline.read("classified", until=lambda rs: len(rs) >= 1, timeout=30, settle=3)
    assert [r["data"]["job_id"] for r in records] == ["redone"]
    committed = consumer.committed([TopicPartition(in_topic, 0)], timeout=10)
    assert committed[0].offset == 3
    consumer.close()
    checkpoint.close()
