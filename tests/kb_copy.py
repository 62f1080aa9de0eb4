"""Copy a knowledge base folder that a live connection in this process has open.

The SQLite files are copied with SQLite's backup API, never as files: opening and closing
a database file with plain `open()` in a process that holds SQLite connections to it
releases that process's POSIX locks on it (fcntl locks belong to the process, not to the
file descriptor), and another process may then checkpoint and shrink the write-ahead log
under the live connection's feet.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

_SQLITE = ("sourcebook.db", "sourcebook.db-wal", "sourcebook.db-shm")


def copy_knowledge_base(source: Path, target: Path) -> None:
    """The derived indexes as files, the records through SQLite (see the module doc)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("write.lock", *_SQLITE))
    with sqlite3.connect(source / "sourcebook.db") as original:
        copy = sqlite3.connect(target / "sourcebook.db")
        try:
            original.backup(copy)
        finally:
            copy.close()
    original.close()
