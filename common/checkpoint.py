"""The only module that knows about Kafka transactions.

A batch's output records and its input offsets are committed atomically with
``send_offsets_to_transaction``: either the next stage sees every output and the input is
consumed, or neither happens and the batch is processed again.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from .errors import FatalError
from .events import Record
from .retry import Backoff

__all__ = ["Checkpoint"]

log = logging.getLogger("deskgen.checkpoint")

_CALL_TIMEOUT_S = 10.0
# librdkafka can block in a transactional call far past its own timeout after a broker restart
# (send_offsets_to_transaction: confluentinc/librdkafka#5456, #5511); past this margin we give up on it.
_OVERRUN_S = 5.0


class _Wedged(Exception):
    """A transactional call kept failing retriably for longer than the transaction may live."""


class Checkpoint:
    """A transactional producer bound to one consumer group member."""

    def __init__(self, producer_config: dict, stop: threading.Event, backoff: Backoff):
        self._config = producer_config
        self._producer = Producer(producer_config)
        self._stop = stop
        self._backoff = backoff
        self.transactional_id = producer_config["transactional.id"]
        # Past this, the broker has aborted the transaction anyway: retrying it any longer is pointless.
        self._give_up_s = producer_config.get("transaction.timeout.ms", 60000) / 1000

    def init(self) -> None:
        """Register the transactional id (fencing any crashed predecessor); waits for the broker."""
        attempt = 0
        while not self._stop.is_set():
            try:
                self._producer.init_transactions(_CALL_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal():
                    raise FatalError(f"cannot initialise transactions for {self.transactional_id}: {err.str()}") from None
                attempt += 1
                self._producer.poll(0)  # serve error callbacks: an authentication failure stops the wait
                if self._stop.is_set():
                    return
                log.warning("waiting for Kafka to initialise transactions (%s); attempt %d", err.str(), attempt)
                self._stop.wait(min(self._backoff.delay(attempt), 5.0))

    def commit(self, records: list[tuple[str, Record]], offsets: list[TopicPartition], consumer: Consumer) -> bool:
        """Produce ``records`` ((topic, record) pairs) and commit ``offsets`` atomically.

        Returns False when the transaction was aborted (the caller rewinds and redoes the batch).
        Raises FatalError when this producer has been fenced or broke irrecoverably.
        """
        try:
            return self._commit(records, offsets, consumer)
        except _Wedged as exc:
            # After a broker restart librdkafka can leave a request queued for a coordinator connection
            # that never comes back (it times out forever). A new producer under the same transactional
            # id starts clean, and registering it fences the old one and aborts its transaction.
            log.warning("transactional producer %s wedged (%s); replacing it", self.transactional_id, exc)
            self._replace_producer()
            return False

    def _commit(self, records: list[tuple[str, Record]], offsets: list[TopicPartition], consumer: Consumer) -> bool:
        try:
            self._producer.begin_transaction()
            for topic, record in records:
                self._produce(topic, record)
            self._retry_while_retriable(
                lambda: self._producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), _CALL_TIMEOUT_S))
            self._retry_while_retriable(lambda: self._producer.commit_transaction(_CALL_TIMEOUT_S))
            return True
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or err.code() == KafkaError._FENCED:
                raise FatalError(f"transactional producer {self.transactional_id} failed: {err.str()}") from None
            log.warning("aborting transaction: %s", err.str())
            self.abort()
            return False

    def abort(self) -> None:
        """Abort the open transaction, if any, retrying while the broker is unreachable."""
        try:
            self._retry_while_retriable(lambda: self._producer.abort_transaction(_CALL_TIMEOUT_S))
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError._STATE:
                return  # no transaction in progress
            raise FatalError(f"cannot abort transaction of {self.transactional_id}: {err.str()}") from None

    def close(self) -> None:
        self._producer.flush(5.0)

    def _replace_producer(self) -> None:
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer = Producer(self._config)
        self.init()

    def _produce(self, topic: str, record: Record) -> None:
        while True:
            try:
                self._producer.produce(topic, key=record.key, value=record.value, headers=record.headers)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _retry_while_retriable(self, call) -> None:
        attempt = 0
        give_up_at = time.monotonic() + self._give_up_s
        while True:
            try:
                _bounded(call, _CALL_TIMEOUT_S + _OVERRUN_S, self.transactional_id)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or self._stop.is_set() and attempt > 2:
                    raise
                if time.monotonic() > give_up_at:
                    raise _Wedged(f"failing for {self._give_up_s:.0f} s: {err.str()}") from None
                attempt += 1
                log.warning("Kafka call failed, retrying (%s)", err.str())
                time.sleep(min(self._backoff.delay(attempt), 5.0))


def _bounded(call, limit_s: float, transactional_id: str) -> None:
    """Run a librdkafka call that takes a timeout on a helper thread; FatalError if it outlives ``limit_s``.

    The stuck call cannot be cancelled: the process exits and its restart (same transactional id)
    fences the stuck producer and resolves its transaction before consuming from the committed offsets.
    """
    outcome: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            call()
            outcome["error"] = None
        except BaseException as exc:  # re-raised on the caller's thread
            outcome["error"] = exc

    helper = threading.Thread(target=target, name="kafka-txn-call", daemon=True)
    helper.start()
    helper.join(limit_s)
    if "error" not in outcome:
        raise FatalError(f"transactional producer {transactional_id}: a Kafka call still blocks after {limit_s:.0f} s, "
                         f"past its own timeout; exiting so that a restart fences it")
    if outcome["error"] is not None:
        raise outcome["error"]
