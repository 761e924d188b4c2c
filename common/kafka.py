"""Kafka clients built from settings, and topic administration."""

from __future__ import annotations

import logging
import uuid
from typing import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .errors import FatalError
from .events import KINDS
from .settings import KafkaSettings, RuntimeSettings
from .topology import table_kinds

__all__ = ["make_consumer", "make_producer_config", "make_producer", "make_reader", "make_admin", "create_topics", "group_id"]

log = logging.getLogger("deskgen.kafka")


def group_id(kafka: KafkaSettings, stage_name: str) -> str:
    return f"{kafka.group_prefix}{stage_name}"


def _log_client_error(err: KafkaError) -> None:
    if err.code() == KafkaError._ALL_BROKERS_DOWN:
        log.warning("Kafka: all brokers are down; librdkafka keeps reconnecting")
    elif err.fatal():
        log.error("Kafka fatal error: %s", err)
    else:
        log.debug("Kafka: %s", err)


def make_consumer(kafka: KafkaSettings, stage_name: str, *, stats_cb: Callable[[str], None] | None = None,
                  error_cb: Callable[[KafkaError], None] | None = None) -> Consumer:
    """A ``read_committed`` consumer with manual offsets: offsets are committed only inside transactions."""
    config = {
        **kafka.client_config(),
        "group.id": group_id(kafka, stage_name),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(100, min(3000, kafka.session_timeout_ms // 3)),
        "max.poll.interval.ms": kafka.max_poll_interval_ms,
        "fetch.wait.max.ms": 50,
        "error_cb": error_cb or _log_client_error,
    }
    if stats_cb is not None:
        config.update({"statistics.interval.ms": 5000, "stats_cb": stats_cb})
    return Consumer(config)


def make_producer_config(kafka: KafkaSettings, transactional_id: str,
                         error_cb: Callable[[KafkaError], None] | None = None) -> dict:
    """Configuration of an idempotent, transactional producer."""
    return {
        **kafka.client_config(),
        "transactional.id": transactional_id,
        "transaction.timeout.ms": kafka.transaction_timeout_ms,
        "enable.idempotence": True,
        "linger.ms": 0,
        "error_cb": error_cb or _log_client_error,
    }


def make_producer(kafka: KafkaSettings, *, error_cb: Callable[[KafkaError], None] | None = None,
                  **overrides) -> Producer:
    """An idempotent (not transactional) producer, as a backend publishes with."""
    return Producer({**kafka.client_config(), "enable.idempotence": True, "acks": "all",
                     "error_cb": error_cb or _log_client_error, **overrides})


def make_reader(kafka: KafkaSettings, **overrides) -> Consumer:
    """A ``read_committed`` consumer that commits nothing, for ``assign``-ing partitions and reading them."""
    return Consumer({**kafka.client_config(), "group.id": f"deskgen-reader-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "error_cb": _log_client_error, **overrides})


def make_admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config())


def create_topics(kafka: KafkaSettings, runtime: RuntimeSettings, *, partitions: int, replication: int,
                  timeout: float = 30.0) -> list[tuple[str, str]]:
    """Create the pipeline's topics, then the stages' tables' topics (``StageSpec.tables``); existing ones are
    left as they are. Returns (topic, status) rows."""
    admin = make_admin(kafka)
    topics = [NewTopic(runtime.topic(kind), num_partitions=partitions, replication_factor=replication)
              for kind in KINDS]
    # A table's topic is compacted: the latest record per key (or its tombstone) stays, so a replay rebuilds it.
    topics += [NewTopic(runtime.topic(kind), num_partitions=partitions, replication_factor=replication,
                        config={"cleanup.policy": "compact"}) for kind in table_kinds()]
    rows = []
    for topic, future in admin.create_topics(topics, request_timeout=timeout).items():
        try:
            future.result(timeout)
            rows.append((topic, "created"))
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                rows.append((topic, "exists"))
            else:
                raise FatalError(f"cannot create topic {topic}: {err.str()}") from None
    return rows
