"""The local stack is real: a Kafka broker that runs transactions and an S3 server that speaks S3."""

from __future__ import annotations

import io
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from minio import Minio
from minio.error import S3Error

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "stack"))
import localstack  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running_stack() -> Iterator[None]:
    localstack.up()


@pytest.fixture
def topic(running_stack: None) -> Iterator[str]:
    name = f"test.localstack.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": localstack.kafka_bootstrap()})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def _consume_all(consumer: Consumer, expected: int, timeout_s: float = 30.0) -> list[bytes]:
    values: list[bytes] = []
    for _ in range(int(timeout_s / 0.5)):
        message = consumer.poll(0.5)
        if message is None:
            if len(values) >= expected:
                break
            continue
        if message.error():
            raise KafkaException(message.error())
        values.append(message.value())
    return values


def test_read_committed_consumer_sees_committed_transactions_only(topic: str) -> None:
    producer = Producer({
        "bootstrap.servers": localstack.kafka_bootstrap(),
        "transactional.id": f"test-localstack-{uuid.uuid4().hex[:8]}",
    })
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"job-1", value=b"committed-1")
    producer.produce(topic, key=b"job-2", value=b"committed-2")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"job-3", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"job-4", value=b"committed-3")
    producer.commit_transaction(30)

    consumer = Consumer({
        "bootstrap.servers": localstack.kafka_bootstrap(),
        "group.id": f"test-localstack-{uuid.uuid4().hex[:8]}",
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    try:
        values = _consume_all(consumer, expected=3)
    finally:
        consumer.close()
    assert sorted(values) == [b"committed-1", b"committed-2", b"committed-3"]


def test_sasl_plain_listener_accepts_the_stack_user(running_stack: None) -> None:
    user, password = localstack.sasl_credentials()
    admin = AdminClient({
        "bootstrap.servers": localstack.kafka_sasl_bootstrap(),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    })
    metadata = admin.list_topics(timeout=15)
    assert 1 in metadata.brokers


@pytest.fixture
def s3(running_stack: None) -> Minio:
    access_key, secret_key = localstack.s3_credentials()
    return Minio(localstack.s3_endpoint(), access_key=access_key, secret_key=secret_key, secure=False)


def test_s3_roundtrip_and_missing_object(s3: Minio) -> None:
    bucket = f"test-localstack-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(bucket)
    payload = b"\x89PNG" + bytes(range(256)) * 40
    s3.put_object(bucket, "uploads/job-1/original.png", io.BytesIO(payload), len(payload), content_type="image/png")
    s3.put_object(bucket, "generated/job-1/mix.png", io.BytesIO(b"x"), 1)

    response = s3.get_object(bucket, "uploads/job-1/original.png")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    assert s3.stat_object(bucket, "uploads/job-1/original.png").size == len(payload)
    listed = [item.object_name for item in s3.list_objects(bucket, prefix="uploads/", recursive=True)]
    assert listed == ["uploads/job-1/original.png"]

    with pytest.raises(S3Error) as missing:
        s3.get_object(bucket, "uploads/job-2/original.png")
    assert missing.value.code == "NoSuchKey"
    with pytest.raises(S3Error) as missing:
        s3.stat_object(bucket, "uploads/job-2/original.png")
    assert missing.value.code == "NoSuchKey"

    for name in ("uploads/job-1/original.png", "generated/job-1/mix.png"):
        s3.remove_object(bucket, name)
    s3.remove_bucket(bucket)
