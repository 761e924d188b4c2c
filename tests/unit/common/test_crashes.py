"""The crash ledger: deaths are counted only for events in hand when a process dies, across restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from confluent_kafka import Message

from deskgen.common.crashes import CrashLedger
from deskgen.common.errors import FatalError

TOPIC = "deskgen.uploaded"


def _messages(*offsets: int) -> list[Message]:
    return [Message(topic=TOPIC, partition=0, offset=o) for o in offsets]


def _die_holding(path, offsets: list[int]) -> None:
    """A process that is SIGKILLed while the stage holds a batch of these offsets."""
    script = (f"import os, signal; from pathlib import Path; from confluent_kafka import Message; "
              f"from deskgen.common.crashes import CrashLedger; "
              f"batch = [Message(topic='{TOPIC}', partition=0, offset=o) for o in {offsets!r}]; "
              f"ledger = CrashLedger(Path({str(path)!r}), limit=3)\n"
              f"with ledger.holding(batch): os.kill(os.getpid(), signal.SIGKILL)")
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert died.returncode == -signal.SIGKILL, died.stderr


def test_a_batch_in_hand_at_a_death_counts_one_death_per_event_at_the_next_start(tmp_path):
    path = tmp_path / "state" / "ledger.json"
    first, second, other = _messages(4, 5, 9)
    _die_holding(path, [4, 5])
    ledger = CrashLedger(path, limit=3)
    assert (ledger.deaths(first), ledger.deaths(second), ledger.deaths(other)) == (1, 1, 0)
    recreated = Message(topic=TOPIC, partition=0, offset=4, timestamp=(1, 1_795_000_000_000))
    assert ledger.deaths(recreated) == 0, "another record at the same offset (a recreated topic)"
    assert json.loads(path.read_text())["in_hand"] == [], "the note is consumed at start-up"
    assert CrashLedger(path, limit=3).deaths(first) == 1, "a clean restart adds no death"


def test_deaths_accumulate_and_a_commit_forgets_them(tmp_path):
    path = tmp_path / "ledger.json"
    poison, innocent = _messages(7, 8)
    for _ in range(2):
        _die_holding(path, [7, 8])
    ledger = CrashLedger(path, limit=3)
    assert ledger.deaths(poison) == 2
    ledger.forget([innocent])
    reopened = CrashLedger(path, limit=3)
    assert (reopened.deaths(poison), reopened.deaths(innocent)) == (2, 0)


def test_leaving_the_stage_by_return_or_exception_clears_the_note(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = CrashLedger(path, limit=3)
    batch = _messages(1, 2)
    with ledger.holding(batch):
        assert len(json.loads(path.read_text())["in_hand"]) == 2
    with pytest.raises(RuntimeError), ledger.holding(batch):
        raise RuntimeError("a Python error is not a death")
    assert CrashLedger(path, limit=3).deaths(batch[0]) == 0


@pytest.mark.parametrize("content", ["{not json", '{"in_hand": 3}', '{"in_hand": [], "deaths": {"k": "x"}}', "[]"])
def test_an_unreadable_ledger_is_ignored_with_a_warning(tmp_path, caplog, content):
    path = tmp_path / "ledger.json"
    path.write_text(content)
    ledger = CrashLedger(path, limit=3)
    assert ledger.deaths(_messages(1)[0]) == 0
    assert "ignoring unreadable crash ledger" in caplog.text
    assert json.loads(path.read_text()) == {"in_hand": [], "deaths": {}}


def test_an_unwritable_state_dir_is_a_clear_fatal_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FatalError, match="DESKGEN_STATE_DIR"):
        CrashLedger(blocker / "ledger.json", limit=3)


def test_limit_zero_keeps_no_file(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = CrashLedger(path, limit=0)
    with ledger.holding(_messages(1)):
        pass
    assert not path.exists()
