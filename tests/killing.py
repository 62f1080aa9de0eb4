"""Killing a real process at a chosen point, for the crash-safety tests."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def kill_when(process: subprocess.Popen[bytes], reached: Callable[[], bool], within: float) -> None:
    """SIGKILL `process` as soon as `reached()` (polled every 20 ms); fail the test if it
    exits first (with its stderr) or gets nowhere within `within` seconds."""
    deadline = time.monotonic() + within
    while not reached():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def stored_rows(db: Path, table: str) -> int:
    """Rows of `table` committed to the SQLite database `db` (0 before it exists), as
    another process sees them."""
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0
