"""The thin database layer under the SQL record stores (SQLite and PostgreSQL).

The record store and the user directory are written once, in SQL both engines run
(`ON CONFLICT`, `RETURNING`, `?` placeholders); a `Database` runs it on one engine and
supplies the few statements that differ (`Dialect`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Row = tuple[Any, ...]


class Rows(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Row]: ...
    def __iter__(self) -> Iterator[Row]: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines, as SQL fragments."""

    name: str
    # bump meta 'generation' (its value is text in both engines)
    bump_generation: str
    # `{column} IN <the reader's groups>`, the groups passed by `group_parameter`
    group_in: str
    # the highest change-log sequence number ever handed out (0: none), even after the
    # log was trimmed empty
    last_seq: str
    # add to `term_counts` the counts of one parameter, a JSON object {term: change}
    add_term_counts: str
    # drop the rows of the terms of one such JSON object that no chunk contains any more
    drop_empty_term_counts: str

    def group_parameter(self, groups: Iterable[str]) -> object:
        import json

        listed = sorted(groups)
        return json.dumps(listed, ensure_ascii=False) if self.name == "sqlite" else listed


class Database(Protocol):
    """One database, used from several threads."""

    dialect: Dialect
    # errors of the driver (for the audit log, which never fails a request)
    errors: tuple[type[BaseException], ...]

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...
    def executescript(self, sql: str) -> None: ...
    def transaction(self) -> AbstractContextManager[None]: ...
    def close(self) -> None: ...


SQLITE = Dialect(
    name="sqlite",
    bump_generation=(
        "INSERT INTO meta VALUES ('generation', 1) ON CONFLICT (key)"
        " DO UPDATE SET value = value + 1"
    ),
    group_in="{column} IN (SELECT value FROM json_each(?))",
    last_seq=(
        "SELECT COALESCE((SELECT MAX(seq) FROM change_log),"
        " (SELECT seq FROM sqlite_sequence WHERE name = 'change_log'), 0)"
    ),
    # `WHERE true`: SQLite's parser needs it before an upsert's ON CONFLICT
    add_term_counts=(
        "INSERT INTO term_counts (term, chunks) SELECT key, value FROM json_each(?) WHERE true"
        " ON CONFLICT (term) DO UPDATE SET chunks = chunks + excluded.chunks"
    ),
    drop_empty_term_counts=(
        "DELETE FROM term_counts WHERE chunks <= 0 AND term IN (SELECT key FROM json_each(?))"
    ),
)


class SQLiteDatabase:
    """A SQLite file (WAL), one connection shared by the threads of the process.

    A write transaction is `BEGIN IMMEDIATE`: SQLite lets one writer in at a time (other
    processes wait up to 30 s), so change-log sequence numbers commit in order."""

    dialect = SQLITE
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: Path, lock_threads: bool = False) -> None:
        """`lock_threads`: serialise every call with a lock (for a connection used by
        request threads outside the server's read/write lock: the user directory)."""
        self._db = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock: threading.RLock | None = threading.RLock() if lock_threads else None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        with self._guard():
            if self._lock is None:
                return self._db.execute(sql, params)
            return _Fetched(self._db.execute(sql, params))

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self._guard():
            self._db.executemany(sql, rows)

    def executescript(self, sql: str) -> None:
        with self._guard():
            self._db.executescript(sql)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class _Fetched:
    """A statement's rows read at once (the connection may serve another thread next)."""

    def __init__(self, cursor: sqlite3.Cursor | Any) -> None:
        self.rowcount = int(cursor.rowcount)
        self._rows: list[Row] = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
        self._next = 0

    def fetchone(self) -> Row | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        rest, self._next = self._rows[self._next :], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


fetched = _Fetched
