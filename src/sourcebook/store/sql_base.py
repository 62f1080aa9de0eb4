"""What every part of the SQL record store shares: the database, its `meta` table and its
write transactions (each one bumps the generation, and is a crash point for the sweep)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sourcebook.faults import crash_point
from sourcebook.store.sql import Database

SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


class SQLBase(ABC):
    """The database of a SQL record store and its transactions (`sql_records.py`)."""

    _db: Database
    # set by a search index that stores who may read each chunk (Milvus): a change of a
    # document's groups is then logged for its chunks ('grp')
    log_group_changes: bool = False

    def meta_value(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_value(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute(SET_META, (key, value))

    @abstractmethod
    def write_lock(self, wait: bool = True) -> AbstractContextManager[None]:
        """Held by the one process that writes (re-entrant); a second writer waits for it
        where the engine can (`wait`), else gets a StoreError."""

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db.transaction():
            yield
            self._db.execute(self._db.dialect.bump_generation)
            crash_point("store.commit")  # killed here: the transaction never happened
        crash_point("store.committed")

    def generation(self) -> int:
        """A number every write transaction of any process changes (documents, chunks,
        access rules); the audit log, written on every request through another connection,
        does not, so it does not empty the caches that depend on it."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0
