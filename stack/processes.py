"""Processes the stack tools start, supervised by PID: the local stack's servers (detached, found again
through a PID file by later commands) and the pipeline's stage processes (children of the caller).

One way to start (``spawn``), to tell whether a process still runs (``alive``) and to stop it (``stop``:
SIGTERM, SIGKILL after a grace period, then wait until it is gone). Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Daemon", "alive", "rss_mib", "spawn", "stop"]

# Children of this process, kept so they are reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen] = {}


def spawn(argv: list[str], log_path: Path, *, cwd: Path, env: dict[str, str] | None = None,
          detach: bool = False) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``log_path``; ``detach``: in a session of its own,
    so it outlives the calling shell."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=detach)
    _children[child.pid] = child
    return child


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; a child of ours is reaped)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop(pid: int, grace_s: float) -> bool:
    """SIGTERM, then SIGKILL if it still runs after ``grace_s`` (0: SIGKILL at once, like a crash); returns
    once it is gone, True when it took SIGKILL."""
    if grace_s > 0 and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if not alive(pid):
        return False
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.05)
    return True


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class Daemon:
    """A detached process found again through ``pid_file``; ``marker`` (an argument of its command line)
    and ``owner`` (a path in one of them) tell it from an unrelated process that reused the PID."""

    name: str
    marker: str
    pid_file: Path
    owner: Path

    def pid(self) -> int | None:
        """Its PID if it runs, else None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if alive(pid) and self._is_ours(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def spawn(self, argv: list[str], log_path: Path) -> int:
        """Start it detached and record its PID; returns once its command line shows (the kernel publishes
        the new arguments a moment after exec returns), so ``pid()`` finds it at once."""
        child = spawn(argv, log_path, cwd=self.owner, detach=True)
        self.pid_file.write_text(f"{child.pid}\n")
        deadline = time.monotonic() + 5
        while alive(child.pid) and not self._is_ours(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        return child.pid

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return self.marker.encode() in cmdline and any(str(self.owner).encode() in arg for arg in cmdline)
