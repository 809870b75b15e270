"""The hidden directories a run is written into (``.NAME.kdviz.tmp-XXXXXXXX``) and what is left of them when a
process is killed.

Each one has an owner record beside it (``<dir>.owner``: host, process id and the process's start time). A later
capture, attribution or ``kdviz verify`` beside it removes those whose owner is gone; a directory whose owner still
runs, or runs on another host, is never touched. While a run is written from the main thread, SIGTERM raises
`Terminated` (as SIGINT raises KeyboardInterrupt), so the writer cleans up on both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

OWNER_SUFFIX = ".owner"
TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-[0-9a-f]{8}$")


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM while a run is being written (exit status 143, as the signal's)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _started(pid: int) -> str | None:
    """The start time of a process (Linux: field 22 of /proc/PID/stat), to tell it from a later one with its id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def claim(directory: Path) -> None:
    """Record this process as the owner of ``directory``."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}
    directory.with_name(directory.name + OWNER_SUFFIX).write_text(json.dumps(record), encoding="utf-8")


def release(directory: Path) -> None:
    """Forget the owner record of ``directory`` (the directory was committed or removed)."""
    with contextlib.suppress(FileNotFoundError):
        directory.with_name(directory.name + OWNER_SUFFIX).unlink()


def _owner_gone(owner_file: Path) -> bool:
    try:
        record = json.loads(owner_file.read_text(encoding="utf-8"))
        host, pid, started = record["host"], int(record["pid"]), record.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable: not ours to judge
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return started is not None and _started(pid) not in (None, started)  # the id now belongs to another process


def remove_stale(parent: Path) -> list[Path]:
    """Remove the temporary directories under ``parent`` whose owner process is gone; returns what was removed."""
    removed = []
    try:
        owners = [p for p in parent.iterdir() if p.name.endswith(OWNER_SUFFIX)]
    except OSError:
        return removed
    for owner_file in owners:
        directory = owner_file.with_name(owner_file.name.removesuffix(OWNER_SUFFIX))
        if TEMPORARY.match(directory.name) and _owner_gone(owner_file):
            shutil.rmtree(directory, ignore_errors=True)
            release(directory)
            removed.append(directory)
    return removed


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside: SIGTERM raises `Terminated` in the main thread, when SIGTERM had its default action."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
