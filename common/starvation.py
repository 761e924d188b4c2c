"""Notices an owned partition that the Kafka client has stopped fetching.

A chaos run once left a stage owning a partition with a committed record on it and fetching nothing
for minutes, while another consumer took the record at once after a rebalance. Whatever the client
bug, the cure is a fresh consumer. The loop reports every fetched message; every few seconds the
partitions that fetched nothing lately are checked against the broker: a position below the
last stable offset (``read_committed`` watermark) means records are waiting. The client's position
already steps over transaction markers and aborted records, so an idle partition sits at that offset;
before anything was fetched since the assignment, the committed offset stands in. Waiting for
``limit_s`` with no fetch from that partition is a FatalError: the process exits and a restart
takes the partition over. A failed broker query restarts every clock (nothing can be concluded
while the broker is away), and so does a batch, during which partitions are paused on purpose.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from .errors import FatalError

__all__ = ["FetchWatch"]

log = logging.getLogger("deskgen.starvation")

_QUERY_TIMEOUT_S = 5.0


class FetchWatch:
    """Per owned partition: when it last fetched, and since when records have waited unfetched."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self._check_every_s = min(10.0, limit_s / 2)
        self._next_check = 0.0
        self._fetched_at: dict[tuple[str, int], float] = {}
        self._waiting_since: dict[tuple[str, int], float] = {}

    def assigned(self, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        for p in partitions:
            self._fetched_at[(p.topic, p.partition)] = now

    def revoked(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._fetched_at.pop((p.topic, p.partition), None)
            self._waiting_since.pop((p.topic, p.partition), None)

    def fetched(self, message: Message) -> None:
        key = (message.topic(), message.partition())
        if key in self._fetched_at:
            self._fetched_at[key] = time.monotonic()
        self._waiting_since.pop(key, None)

    def batch_done(self) -> None:
        """Partitions were paused while the batch was handled: their clocks start again."""
        self.assigned([TopicPartition(topic, partition) for topic, partition in self._fetched_at])
        self._waiting_since.clear()

    def check(self, consumer: Consumer) -> None:
        """Every few seconds: FatalError if a partition's records have waited ``limit_s`` unfetched."""
        now = time.monotonic()
        if self.limit_s <= 0 or now < self._next_check:
            return
        self._next_check = now + self._check_every_s
        quiet = [TopicPartition(topic, partition) for (topic, partition), at in self._fetched_at.items()
                 if now - at >= self._check_every_s]
        if not quiet:
            return
        try:
            positions = consumer.position(quiet)  # the fetcher's, past transaction markers and aborted records
            unstarted = [p for p in positions if p.offset < 0]
            committed = {(p.topic, p.partition): p.offset
                         for p in (consumer.committed(unstarted, timeout=_QUERY_TIMEOUT_S) if unstarted else [])}
            ends = [consumer.get_watermark_offsets(p, timeout=_QUERY_TIMEOUT_S, cached=False) for p in positions]
        except KafkaException as exc:
            log.debug("fetch watch: broker query failed (%s); clocks restart", exc)
            self._waiting_since.clear()
            return
        for p, (low, stable_end) in zip(positions, ends):
            key = (p.topic, p.partition)
            position = p.offset if p.offset >= 0 else max(committed.get(key, -1), low)
            if stable_end <= position or key not in self._fetched_at:
                self._waiting_since.pop(key, None)
                continue
            since = self._waiting_since.setdefault(key, now)
            if now - since >= self.limit_s:
                raise FatalError(f"partition {p.topic}[{p.partition}] has {stable_end - position} committed record(s) "
                                 f"from offset {position} that this consumer has not fetched for {now - since:.0f} s; "
                                 "exiting so that a fresh consumer takes it over")
