"""stack/processes.py: a process is stopped by PID, politely first, and is gone when ``stop`` returns."""

from __future__ import annotations

import signal
import sys
import time

import processes

_IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def _spawn(tmp_path, code: str):
    return processes.spawn([sys.executable, "-c", code], tmp_path / "out.log", cwd=tmp_path)


def test_stop_ends_a_process_with_sigterm_within_its_grace(tmp_path):
    child = _spawn(tmp_path, "import time; time.sleep(60)")

    assert processes.stop(child.pid, grace_s=10) is False
    assert not processes.alive(child.pid)
    assert child.returncode == -signal.SIGTERM


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace(tmp_path):
    child = _spawn(tmp_path, _IGNORES_SIGTERM)
    while "up" not in (tmp_path / "out.log").read_text():  # the handler is in place
        assert child.poll() is None
        time.sleep(0.05)

    assert processes.stop(child.pid, grace_s=0.5) is True
    assert child.returncode == -signal.SIGKILL


def test_no_grace_is_a_crash(tmp_path):
    child = _spawn(tmp_path, "import time; time.sleep(60)")

    assert processes.stop(child.pid, grace_s=0) is True
    assert child.returncode == -signal.SIGKILL
    assert processes.stop(child.pid, grace_s=0) is False  # already gone


def test_a_daemon_is_found_again_only_by_its_own_pid_file_and_marker(tmp_path):
    code = "import time; time.sleep(60)"
    daemon = processes.Daemon("sleeper", code, tmp_path / "sleeper.pid", tmp_path)
    pid = daemon.spawn([sys.executable, "-c", code, str(tmp_path)], tmp_path / "d.log")
    assert daemon.pid() == pid

    foreign = processes.Daemon("other", "not-this-one", daemon.pid_file, tmp_path)
    assert foreign.pid() is None and not daemon.pid_file.exists()  # a PID file naming another process goes

    daemon.pid_file.write_text(f"{pid}\n")
    processes.stop(pid, grace_s=5)
    assert daemon.pid() is None and not daemon.pid_file.exists()  # so does a stale one
