"""The SQLite record store: the system of record of an embedded knowledge base.

    kb/sourcebook.db        SQLite (WAL): sources, documents, chunks, vectors (the
                            embedding cache), change log, access rules, answer cache, and
                            users / keys / audit log (`access.py`, its own connection)
    kb/write.lock           held by the one process that writes

The SQL itself is shared with PostgreSQL (`sql_records.py`).
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sourcebook.store.access import AccessControl
from sourcebook.store.base import StoreError
from sourcebook.store.sql import SQLiteDatabase
from sourcebook.store.sql_records import SQLRecords

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY, include TEXT NOT NULL, exclude TEXT NOT NULL, added REAL NOT NULL,
    given TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE, title TEXT NOT NULL, kind TEXT NOT NULL,
    tags TEXT NOT NULL, modified REAL NOT NULL, size INTEGER NOT NULL,
    content_hash TEXT NOT NULL, text TEXT NOT NULL, pages TEXT, indexed REAL NOT NULL,
    boxes TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, text TEXT NOT NULL, heading_path TEXT NOT NULL,
    char_start INTEGER NOT NULL, char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL, line_end INTEGER NOT NULL,
    page_start INTEGER, page_end INTEGER,
    text_hash TEXT NOT NULL, tokens TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
-- the text of a document stored in parts after the first (`documents.text`): a file
-- streamed in parts (a large CSV), each appended in its own transaction
CREATE TABLE IF NOT EXISTS document_parts (
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    part INTEGER NOT NULL, first_line INTEGER NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (doc_id, part)
);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
-- a re-embedding in progress (`reindex`): the new model's vectors, swapped in when every
-- chunk text has one; until then searches use `vectors` (meta 'reembedding' names the model)
CREATE TABLE IF NOT EXISTS pending_vectors (text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id INTEGER NOT NULL, op TEXT NOT NULL
);
-- document frequencies for idf weights: how many chunks' tokens contain each term (the
-- term '' counts every chunk), changed in the transaction that changes the chunks
CREATE TABLE IF NOT EXISTS term_counts (
    term TEXT PRIMARY KEY, chunks INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answer_cache (
    key TEXT PRIMARY KEY, answer TEXT NOT NULL, content_hashes TEXT NOT NULL,
    created REAL NOT NULL
);
-- access control: the groups that may read documents whose path matches a glob
CREATE TABLE IF NOT EXISTS access_rules (
    pattern TEXT NOT NULL, group_name TEXT NOT NULL, PRIMARY KEY (pattern, group_name)
);
-- groups given to one document (an upload's `groups`); they replace the rules for it
CREATE TABLE IF NOT EXISTS document_grants (
    path TEXT NOT NULL, group_name TEXT NOT NULL, PRIMARY KEY (path, group_name)
);
-- who may read each document, derived from the two tables above whenever a document
-- is written or either changes; a document without rows is readable by everyone
CREATE TABLE IF NOT EXISTS document_groups (
    path TEXT NOT NULL, group_name TEXT NOT NULL, PRIMARY KEY (path, group_name)
);
"""


class SQLiteRecords(SQLRecords):
    """The record store in `folder/sourcebook.db`. See the module docstring."""

    def __init__(self, folder: Path, model: tuple[str, int] | None, create: bool = False) -> None:
        """Open (or with `create`, make) the records in `folder`. `model` is the (name,
        dimension) of the embedder the caller wants; None: whatever the knowledge base was
        built with."""
        self.folder = folder
        db_path = folder / "sourcebook.db"
        if not db_path.exists() and not create:
            raise StoreError(
                f"no knowledge base at {folder}; create one with `sourcebook init` "
                "(or pass --kb PATH / set SOURCEBOOK_KB)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(SQLiteDatabase(db_path), _SCHEMA, str(folder), model)
        self._lock_file: IO[str] | None = None
        self._access: AccessControl | None = None
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added since a knowledge base was created (older ones lack them): the
        path as the user gave it (`sources.given`, see `source_names`) and the page boxes
        of each line (`documents.boxes`)."""
        for table, column in (("sources", "given"), ("documents", "boxes")):
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column in columns:
                continue
            try:
                with self._transaction():
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # another process added it just now
                if "duplicate column" not in str(exc):
                    raise

    @contextmanager
    def write_lock(self, wait: bool = True) -> Iterator[None]:
        """Hold `write.lock` (one writing process at a time); re-entrant. A second writer
        is refused at once (a CLI command says so rather than hang)."""
        if self._lock_file is not None:
            yield
            return
        lock = (self.folder / "write.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock.close()
            raise StoreError(
                f"another Sourcebook process is writing to {self.folder}; wait for it to finish"
            ) from exc
        self._lock_file = lock
        try:
            yield
        finally:
            self._lock_file = None
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def access_control(self) -> AccessControl:
        """Users, groups, API keys and the audit log, in this database (own connection:
        request threads use it outside the server's read/write lock)."""
        if self._access is None:
            self._access = AccessControl.sqlite(self.folder / "sourcebook.db")
        return self._access

    def restart_identities(self) -> None:
        """Nothing to do: AUTOINCREMENT continues after the highest id inserted."""

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("sourcebook.db*") if f.is_file())

    def close(self) -> None:
        if self._access is not None:
            self._access.close()
        super().close()
