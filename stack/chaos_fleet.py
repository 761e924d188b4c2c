"""The chaos run's stage processes: one per slot, every stage of the topology (``common/topology.py``),
restarted after each kill -9 or crash under the slot's DESKGEN_INSTANCE_ID."""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass

from deskgen.common import topology
from deskgen.common.topology import StageSpec
from pipeline import Pipeline, Service

__all__ = ["Fleet", "Supervisor", "slots", "stages"]

EXTRA_SLOTS = {"classifier": 2, "generator": 2}  # processes per stage where it is not one
_ASSIGNED = re.compile(r": assigned \[")


def stages() -> list[StageSpec]:
    """The stages under test: every stage of the topology, in pipeline order."""
    return list(topology.STAGES.values())


def slots(stage: str) -> int:
    """How many processes run ``stage``."""
    return EXTRA_SLOTS.get(stage, 1)


@dataclass
class _Slot:
    stage: str
    instance: str
    service: Service | None = None

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.instance}"


class Fleet:
    """The stage processes, one per slot; a slot keeps its DESKGEN_INSTANCE_ID across restarts.

    After ``start`` only the supervisor thread changes the slots.
    """

    def __init__(self, pipeline: Pipeline, env: dict[str, str]):
        self.pipeline, self.env = pipeline, env
        self.slots = [_Slot(stage.name, str(n)) for stage in stages() for n in range(slots(stage.name))]
        self.kills = 0
        self.crashes: list[str] = []  # processes that exited on their own: "slot: exit code, last log line"

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        slot.service = self.pipeline.start(slot.stage, instance=slot.instance, real=True, **self.env)

    @staticmethod
    def is_up(slot: _Slot) -> bool:
        """Alive and has joined its consumer group (so its transactional id is initialised)."""
        return slot.service.process.poll() is None and _ASSIGNED.search(slot.service.log()) is not None

    def wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.is_up(slot) for slot in self.slots):
            if time.monotonic() > deadline:
                down = [slot.name for slot in self.slots if not self.is_up(slot)]
                raise RuntimeError(f"not up after {timeout:.0f} s: {down}\n{self.pipeline.describe_failure()}")
            time.sleep(0.2)

    def kill_one(self, rng: random.Random) -> str | None:
        """kill -9 a random process that is up and restart its slot; None when none is up."""
        candidates = [slot for slot in self.slots if self.is_up(slot)]
        if not candidates:
            return None
        victim = rng.choice(candidates)
        victim.service.kill()
        self.kills += 1
        self._start(victim)
        return victim.name

    def reap(self) -> list[str]:
        """Restart processes that exited on their own; returns what happened to them."""
        reaped = []
        for slot in self.slots:
            code = slot.service.process.poll()
            if code is not None:
                lines = slot.service.log().strip().splitlines() or [""]
                reaped.append(f"{slot.name}: exit code {code}: {lines[-1][-200:]}")
                self._start(slot)
        self.crashes += reaped
        return reaped

    def stop(self) -> None:
        self.pipeline.stop_all()


class Supervisor(threading.Thread):
    """Restarts crashed processes; kills one random live process at each moment of the kill schedule."""

    def __init__(self, fleet: Fleet, rng: random.Random, say):
        super().__init__(name="chaos-supervisor", daemon=True)
        self.fleet, self.rng, self.say = fleet, rng, say
        self._due: list[float] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.error: BaseException | None = None

    def schedule_kills(self, moments: list[float]) -> None:
        with self._lock:
            self._due = sorted(moments)

    @property
    def kills_pending(self) -> int:
        with self._lock:
            return len(self._due)

    def run(self) -> None:
        try:
            while not self._stopped.wait(0.1):
                for crash in self.fleet.reap():
                    self.say(f"process exited on its own, restarted: {crash}")
                with self._lock:
                    due = bool(self._due) and time.monotonic() >= self._due[0]
                if due and self.fleet.kill_one(self.rng) is not None:
                    with self._lock:
                        self._due.pop(0)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        self._stopped.set()
        self.join()
