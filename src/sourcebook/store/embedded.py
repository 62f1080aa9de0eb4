"""Storage: the `Store` protocol the pipeline sees, and the embedded implementation.

The embedded store is one folder:

    kb/sourcebook.db        SQLite (WAL): the system of record (documents, chunks,
                            vectors, embedding cache, change log)
    kb/bm25/                tantivy index: BM25 over analysed tokens (derived)
    kb/vectors.usearch      usearch index: cosine / HNSW (derived)
    kb/write.lock           held by the one process that writes

Every change to chunks is written to SQLite together with change-log rows in one
transaction. `flush()` then applies the log to the derived indexes and records how far
each has got. A process killed at any point leaves SQLite consistent (a transaction
either happened or not) and the indexes behind, never ahead: the next writer replays the
missing log entries (all index operations are idempotent).
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from sourcebook.faults import crash_point
from sourcebook.index.analyzer import analyze
from sourcebook.index.embedders import Vectors
from sourcebook.models import Box, ChunkDraft, DocumentInfo, SearchHit
from sourcebook.store.indexes import (
    KeywordIndex,
    ScoredIds,
    VectorIndex,
    keyword_watermark,
    vector_watermark,
)

SCHEMA_VERSION = 1


class StoreError(Exception):
    """The knowledge base cannot be opened or used as asked; the message says what to do."""


@dataclass(frozen=True)
class DocumentRecord:
    path: str
    title: str
    kind: str
    tags: list[str]
    modified: float
    size: int
    content_hash: str
    text: str
    pages: list[int] | None
    boxes: list[Box | None] | None = None  # per line: where on its page (PDF, images)


@dataclass(frozen=True)
class Filters:
    """Metadata restrictions, applied inside retrieval (before ranking is cut off)."""

    path_glob: str | None = None
    exclude_glob: str | None = None
    tags: tuple[str, ...] = ()
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    # the reader's groups: only documents without groups, or sharing one of these, are
    # searched; None means no restriction (an admin, or the single local user)
    groups: frozenset[str] | None = None

    def is_empty(self) -> bool:
        return self.groups is None and not self.has_metadata()

    def has_metadata(self) -> bool:
        """Whether any restriction other than the reader's groups is set."""
        return bool(
            self.path_glob
            or self.exclude_glob
            or self.tags
            or self.modified_after
            or self.modified_before
        )


def restricted(filters: Filters | None, groups: frozenset[str] | None) -> Filters | None:
    """`filters` limited to what a reader in `groups` may read (None: everything)."""
    if groups is None:
        return filters
    return replace(filters or Filters(), groups=groups)


class Store(Protocol):
    """What the pipeline needs from storage; a PostgreSQL + pgvector or Milvus backend
    implements the same methods."""

    embedder_name: str

    def document(self, path: str) -> DocumentInfo | None: ...

    def documents(self) -> list[DocumentInfo]: ...

    def document_text(self, path: str) -> str | None: ...

    def document_layout(self, path: str) -> tuple[list[int] | None, list[Box | None] | None]: ...

    def replace_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        vectors: Vectors | None = None,
    ) -> None: ...

    def remove_document(self, path: str) -> bool: ...

    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, Vectors]: ...

    def allowed_documents(self, filters: Filters) -> list[int] | None: ...

    def unreadable_documents(self, groups: frozenset[str]) -> set[int]: ...

    def keyword_search(
        self, query: str, limit: int, doc_ids: Sequence[int] | None = None
    ) -> ScoredIds: ...

    def vector_search(
        self, vector: Vectors, limit: int, doc_ids: Sequence[int] | None = None
    ) -> ScoredIds: ...

    def keyword_statistics(self, tokens: Sequence[str]) -> tuple[int, dict[str, int]]: ...

    def hits(self, chunk_ids: Sequence[int]) -> dict[int, SearchHit]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


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
    content_hash TEXT NOT NULL, text TEXT NOT NULL, pages TEXT, indexed REAL NOT NULL
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
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
-- a re-embedding in progress (`reindex`): the new model's vectors, swapped in when every
-- chunk text has one; until then searches use `vectors` (meta 'reembedding' names the model)
CREATE TABLE IF NOT EXISTS pending_vectors (text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id INTEGER NOT NULL, op TEXT NOT NULL
);
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


class EmbeddedStore:
    """SQLite + tantivy + usearch in one folder. See the module docstring."""

    def __init__(
        self,
        folder: Path,
        model: tuple[str, int] | None = None,
        create: bool = False,
        exact_vector_search_below: int = 20_000,
    ) -> None:
        """Open (or with `create`, make) the store in `folder`.

        `model` is the (name, dimension) of the embedder the caller wants; None means
        "whatever the knowledge base was built with".
        """
        self.folder = folder
        db_path = folder / "sourcebook.db"
        if not db_path.exists() and not create:
            raise StoreError(
                f"no knowledge base at {folder}; create one with `sourcebook init` "
                "(or pass --kb PATH / set SOURCEBOOK_KB)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            db_path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        # derived from the tables and kept until they change (see `_generation`): which
        # document each chunk belongs to, and who may not read what
        self._layout: _Layout | None = None
        self._unreadable: dict[frozenset[str], tuple[int, set[int]]] = {}
        self._progress: tuple[int, int, int] | None = None  # (generation, embedded, chunks)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()
        self.embedder_name, self.dim = self._check_model(model)
        # the derived indexes open on first use: reading records and counts (`status`)
        # needs neither; their watermarks are read from their state files until then
        self._exact_below = exact_vector_search_below
        self._keyword_index: KeywordIndex | None = None
        self._vector_index: VectorIndex | None = None
        self._opening = threading.Lock()
        self._lock_file: IO[str] | None = None
        self._pending_since_flush = 0
        self._recover()
        self._followed = self._generation()

    # --- identity and locking ------------------------------------------------------------

    def _check_model(self, model: tuple[str, int] | None) -> tuple[str, int]:
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if "embedder" not in rows:
            if model is None:
                raise StoreError(
                    f"{self.folder} has no embedding model recorded; run `sourcebook init`"
                )
            with self._transaction():
                for key, value in (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("embedder", model[0]),
                    ("dim", str(model[1])),
                    ("created", str(time.time())),
                ):
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            return model
        stored = (str(rows["embedder"]), int(rows["dim"]))
        if model is not None and model[0] != stored[0]:
            raise StoreError(
                f"the knowledge base at {self.folder} was built with embedding model "
                f"{stored[0]!r}, not {model[0]!r}; to switch models, re-index it with "
                f"`sourcebook reindex --model {model[0]}`"
            )
        return stored

    def meta_value(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_value(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- re-embedding (reindex), resumable -------------------------------------------------

    def reembedding(self) -> Reembedding | None:
        """The re-embedding in progress, if any: its model and how far it has got."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'reembedding'").fetchone()
        if row is None:
            return None
        target = json.loads(row[0])
        done, total = self._db.execute(
            "SELECT COUNT(p.text_hash), COUNT(*) FROM (SELECT DISTINCT text_hash FROM chunks) c"
            " LEFT JOIN pending_vectors p ON p.text_hash = c.text_hash"
        ).fetchone()
        return Reembedding(str(target["model"]), int(target["dim"]), int(done), int(total))

    def begin_reembedding(self, name: str, dim: int) -> None:
        """Start (or resume) re-embedding every chunk text with model `name`. Searches keep
        the current model's vectors until `finish_reembedding`."""
        current = self.reembedding()
        with self._transaction():
            if current is None or current.model != name:
                self._db.execute("DELETE FROM pending_vectors")
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('reembedding', ?)",
                (json.dumps({"model": name, "dim": dim}),),
            )

    def pending_contexts(self, limit: int) -> list[tuple[str, str, list[str], str]]:
        """Up to `limit` (text hash, title, heading path, text) still to re-embed."""
        rows = self._db.execute(
            "SELECT c.text_hash, d.title, c.heading_path, c.text FROM chunks c"
            " JOIN documents d ON d.id = c.doc_id"
            " WHERE c.text_hash NOT IN (SELECT text_hash FROM pending_vectors)"
            " GROUP BY c.text_hash LIMIT ?",
            (limit,),
        )
        return [(h, t, json.loads(p), x) for h, t, p, x in rows]

    def put_pending_vectors(self, vectors: dict[str, Vectors]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO pending_vectors VALUES (?, ?)",
                ((h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()),
            )

    def finish_reembedding(self) -> None:
        """Swap the new vectors in and record the new model, in one transaction that
        also logs every chunk for the derived indexes (so a process killed before they
        are rebuilt has them rebuilt by the next writer)."""
        state = self.reembedding()
        if state is None or state.done < state.total:
            raise StoreError("the re-embedding is not complete: run `sourcebook reindex`")
        with self._transaction():
            self._db.execute("DELETE FROM vectors")
            self._db.execute("INSERT INTO vectors SELECT text_hash, vector FROM pending_vectors")
            self._db.execute("DELETE FROM pending_vectors")
            self._db.execute("DELETE FROM meta WHERE key = 'reembedding'")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('embedder', ?)", (state.model,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(state.dim),))
            self._db.execute("INSERT INTO change_log (chunk_id, op) SELECT id, 'add' FROM chunks")
        self.embedder_name, self.dim = state.model, state.dim
        self._vectors = VectorIndex(self.folder / "vectors.usearch", state.dim, self._exact_below)
        self._vectors.clear()  # refilled from the log by the flush that follows

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the knowledge base's write lock (one writing process at a time)."""
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
            self.flush()
        finally:
            self._lock_file = None
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    @property
    def _keyword(self) -> KeywordIndex:
        with self._opening:
            if self._keyword_index is None:
                self._keyword_index = KeywordIndex(self.folder / "bm25")
            return self._keyword_index

    @property
    def _vectors(self) -> VectorIndex:
        with self._opening:
            if self._vector_index is None:
                path = self.folder / "vectors.usearch"
                self._vector_index = VectorIndex(path, self.dim, self._exact_below)
            return self._vector_index

    @_vectors.setter
    def _vectors(self, index: VectorIndex) -> None:
        self._vector_index = index

    def _watermarks(self) -> tuple[int, int]:
        """The last change each derived index holds (keyword, vector)."""
        keyword = (
            self._keyword_index.watermark
            if self._keyword_index is not None
            else keyword_watermark(self.folder / "bm25")
        )
        vector = (
            self._vector_index.watermark
            if self._vector_index is not None
            else vector_watermark(self.folder / "vectors.usearch")
        )
        return keyword, vector

    def _recover(self) -> None:
        """Bring the derived indexes up to date if a writer died before flushing."""
        if self._last_seq() > min(self._watermarks()):
            try:
                with self.writing():
                    pass  # writing() flushes on exit
            except StoreError:
                pass  # a live writer holds the lock and will flush itself

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute(
                "INSERT INTO meta VALUES ('generation', 1) ON CONFLICT (key)"
                " DO UPDATE SET value = value + 1"
            )
            crash_point("store.commit")  # killed here: the transaction never happened
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        crash_point("store.committed")

    def _generation(self) -> int:
        """A number every write transaction of any process changes (documents, chunks,
        access rules); the audit log, written on every request through another connection,
        does not, so it does not empty the caches that depend on it."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    # --- sources (the roots `sync` re-reads) ------------------------------------------------

    def _add_missing_columns(self) -> None:
        """Columns added since a knowledge base was created (older ones lack them): the
        path as the user gave it (`sources.given`, see `source_names`) and the page boxes
        of each line (`documents.boxes`)."""
        for table, column in (("sources", "given"), ("documents", "boxes")):
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column in columns:
                continue
            try:
                with self._transaction():
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # another process added it just now
                if "duplicate column" not in str(exc):
                    raise

    def add_source(
        self, path: str, include: Sequence[str], exclude: Sequence[str], given: str | None = None
    ) -> None:
        """Remember an absolute source path; `given` is how the user wrote it."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO sources (path, include, exclude, added, given)"
                " VALUES (?, ?, ?, ?, ?)",
                (path, json.dumps(list(include)), json.dumps(list(exclude)), time.time(), given),
            )

    def source_names(self) -> dict[str, str]:
        """Absolute source path -> the path as the user gave it (when it was recorded)."""
        rows = self._db.execute("SELECT path, given FROM sources WHERE given IS NOT NULL")
        return dict(rows.fetchall())

    def remove_source(self, path: str) -> bool:
        with self._transaction():
            cursor = self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
        return cursor.rowcount > 0

    def sources(self) -> list[tuple[str, list[str], list[str]]]:
        rows = self._db.execute("SELECT path, include, exclude FROM sources ORDER BY path")
        return [(p, json.loads(i), json.loads(e)) for p, i, e in rows]

    # --- documents -----------------------------------------------------------------------

    _DOC_COLUMNS = """d.id, d.path, d.title, d.kind, d.tags, d.modified, d.content_hash, d.size,
        (SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.id)"""

    def document(self, path: str) -> DocumentInfo | None:
        row = self._db.execute(
            f"SELECT {self._DOC_COLUMNS} FROM documents d WHERE d.path = ?", (path,)
        ).fetchone()
        return _document_info(row) if row else None

    def documents(self) -> list[DocumentInfo]:
        rows = self._db.execute(f"SELECT {self._DOC_COLUMNS} FROM documents d ORDER BY d.path")
        return [_document_info(row) for row in rows]

    def document_text(self, path: str) -> str | None:
        row = self._db.execute("SELECT text FROM documents WHERE path = ?", (path,)).fetchone()
        return str(row[0]) if row else None

    def document_layout(self, path: str) -> tuple[list[int] | None, list[Box | None] | None]:
        """Per line of a document's text: its page, and its box on that page (None for
        formats without pages, or lines without a box)."""
        row = self._db.execute(
            "SELECT pages, boxes FROM documents WHERE path = ?", (path,)
        ).fetchone()
        if row is None:
            return None, None
        pages = json.loads(row[0]) if row[0] else None
        boxes = [tuple(b) if b else None for b in json.loads(row[1])] if row[1] else None
        return pages, boxes

    def replace_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        vectors: Vectors | None = None,
    ) -> None:
        """Insert or replace a document and all its chunks atomically.

        A document already indexed under `record.path` keeps its id (links to it stay
        valid after an edit); its chunks are replaced and get new ids. A path removed and
        indexed again later gets a new id: ids are never reused (AUTOINCREMENT), so an
        old link to a removed document is a 404, never another document.

        `index_texts[i]` is what is embedded and keyword-indexed for chunk i (the chunk
        with its heading path); `vectors[i]` is its embedding. Without `vectors` the chunks
        are keyword-searchable at the next flush and get their vectors from the embedding
        cache, or later from `put_vectors` (see "Vectors filled in later").
        """
        given: Sequence[Vectors | None] = [None] * len(chunks) if vectors is None else list(vectors)
        hashes = [text_hash(t) for t in index_texts]
        values = (
            record.title,
            record.kind,
            json.dumps(record.tags, ensure_ascii=False),
            record.modified,
            record.size,
            record.content_hash,
            record.text,
            json.dumps(record.pages) if record.pages else None,
            json.dumps(record.boxes) if record.boxes else None,
            time.time(),
            record.path,
        )
        with self._transaction():
            doc_id = self._delete_chunk_rows(record.path)
            if doc_id is None:
                cursor = self._db.execute(
                    "INSERT INTO documents (title, kind, tags, modified, size, content_hash,"
                    " text, pages, boxes, indexed, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                doc_id = cursor.lastrowid
            else:
                self._db.execute(
                    "UPDATE documents SET title = ?, kind = ?, tags = ?, modified = ?, size = ?,"
                    " content_hash = ?, text = ?, pages = ?, boxes = ?, indexed = ? WHERE path = ?",
                    values,
                )
            # in the same transaction: a document is never visible without its groups
            self._derive_groups([record.path])
            for chunk, index_text, digest, vector in zip(
                chunks, index_texts, hashes, given, strict=True
            ):
                pages = _page_range(record.pages, chunk)
                cursor = self._db.execute(
                    "INSERT INTO chunks (doc_id, ordinal, text, heading_path, char_start, char_end,"
                    " line_start, line_end, page_start, page_end, text_hash, tokens)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc_id,
                        chunk.ordinal,
                        chunk.text,
                        json.dumps(chunk.heading_path, ensure_ascii=False),
                        chunk.char_start,
                        chunk.char_end,
                        chunk.line_start,
                        chunk.line_end,
                        pages[0],
                        pages[1],
                        digest,
                        " ".join(analyze(index_text)),
                    ),
                )
                if vector is not None:
                    self._db.execute(
                        "INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                        (digest, np.asarray(vector, dtype=np.float32).tobytes()),
                    )
                self._db.execute(
                    "INSERT INTO change_log (chunk_id, op) VALUES (?, 'add')", (cursor.lastrowid,)
                )
        self._after_write(len(chunks))

    def remove_document(self, path: str) -> bool:
        with self._transaction():
            removed = self._delete_document_rows(path)
            # a file indexed again later under this path must not inherit its groups
            self._db.execute("DELETE FROM document_grants WHERE path = ?", (path,))
            self._db.execute("DELETE FROM document_groups WHERE path = ?", (path,))
        self._after_write(1)
        return removed

    def rename_document(self, old: str, new: str, modified: float) -> bool:
        """A file moved with its content unchanged: the document takes its new path and
        keeps its id, chunks (and their ids) and vectors. Its groups are derived again for
        the new path (rules are path globs); an upload's own groups move with it. Cached
        answers citing it are dropped (they name the old path). A document already at
        `new` is replaced. Returns False when nothing is indexed at `old`."""
        with self._transaction():
            row = self._db.execute(
                "SELECT id, content_hash FROM documents WHERE path = ?", (old,)
            ).fetchone()
            if row is None:
                return False
            if new != old:
                self._delete_document_rows(new)
            self._db.execute(
                "UPDATE documents SET path = ?, modified = ?, indexed = ? WHERE id = ?",
                (new, modified, time.time(), row[0]),
            )
            self._db.execute("DELETE FROM document_grants WHERE path = ?", (new,))
            self._db.execute("UPDATE document_grants SET path = ? WHERE path = ?", (new, old))
            self._db.execute("DELETE FROM document_groups WHERE path = ?", (old,))
            self._derive_groups([new])
            self._db.execute(
                "DELETE FROM answer_cache WHERE content_hashes LIKE ?", (f'%"{row[1]}"%',)
            )
        return True

    def remove_source_and_documents(self, root: str, paths: Sequence[str]) -> None:
        """Forget a source and the documents under it in one transaction: a process
        killed during a `remove FOLDER` leaves either all of them or none, never
        documents whose source is gone (which no `sync` would look at again)."""
        with self._transaction():
            self._db.execute("DELETE FROM sources WHERE path = ?", (root,))
            for path in paths:
                self._delete_document_rows(path)
                self._db.execute("DELETE FROM document_grants WHERE path = ?", (path,))
                self._db.execute("DELETE FROM document_groups WHERE path = ?", (path,))
        self._after_write(len(paths))

    def _delete_document_rows(self, path: str) -> bool:
        doc_id = self._delete_chunk_rows(path)
        if doc_id is None:
            return False
        self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return True

    def _delete_chunk_rows(self, path: str) -> int | None:
        """Delete the chunks of the document at `path` (logged for the derived indexes),
        inside the caller's transaction; returns the document's id, None if not indexed."""
        row = self._db.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
        if row is None:
            return None
        self._db.execute(
            "INSERT INTO change_log (chunk_id, op) SELECT id, 'del' FROM chunks WHERE doc_id = ?",
            (row[0],),
        )
        self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (row[0],))
        return int(row[0])

    def _after_write(self, changes: int) -> None:
        # Keep the derived indexes from falling far behind during a long ingest.
        self._pending_since_flush += changes
        if self._pending_since_flush >= 5_000:
            self.flush()

    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, Vectors]:
        found: dict[str, Vectors] = {}
        unique = list(dict.fromkeys(text_hashes))
        for start in range(0, len(unique), 500):
            batch = unique[start : start + 500]
            marks = ",".join("?" * len(batch))
            for digest, blob in self._db.execute(
                f"SELECT text_hash, vector FROM vectors WHERE text_hash IN ({marks})", batch
            ):
                found[digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def collect_garbage(self) -> int:
        """Drop cached vectors no chunk uses any more."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM vectors WHERE text_hash NOT IN (SELECT text_hash FROM chunks)"
            )
        return cursor.rowcount

    # --- vectors filled in later ----------------------------------------------------------
    # A document is stored (and keyword-searchable after the next flush) before its chunks
    # are embedded: a chunk whose text has no row in `vectors` is found by BM25 alone until
    # `put_vectors` gives it one, which logs a 'vec' entry so the flush adds it to the
    # vector index. A process killed in between leaves chunks without vectors, which the
    # next writer embeds (`KnowledgeBase.embed_pending`).

    def texts_to_embed(
        self, limit: int, after: int = 0
    ) -> list[tuple[int, str, str, list[str], str]]:
        """Up to `limit` chunks after chunk id `after` whose text has no vector, in id
        order (a caller that stores what it gets continues after the last id; chunk ids
        only grow): (chunk id, text hash, document title, heading path, chunk text)."""
        rows = self._db.execute(
            "SELECT c.id, c.text_hash, d.title, c.heading_path, c.text FROM chunks c"
            " JOIN documents d ON d.id = c.doc_id WHERE c.id > ?"
            " AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.text_hash = c.text_hash)"
            " ORDER BY c.id LIMIT ?",
            (after, limit),
        )
        return [(int(i), h, t, json.loads(p), x) for i, h, t, p, x in rows]

    def put_vectors(self, vectors: dict[str, Vectors]) -> None:
        """Store the vectors of chunk texts (by text hash) and log every chunk using them
        for the vector index, in one transaction. A text no chunk uses any more (edited
        meanwhile) stays in the cache until `collect_garbage`."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                ((h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()),
            )
            hashes = list(vectors)
            for start in range(0, len(hashes), 500):
                batch = hashes[start : start + 500]
                self._db.execute(
                    "INSERT INTO change_log (chunk_id, op) SELECT id, 'vec' FROM chunks"
                    f" WHERE text_hash IN ({','.join('?' * len(batch))})",
                    batch,
                )
        self._after_write(len(vectors))

    def embedding_progress(self) -> tuple[int, int]:
        """(chunks with a vector, all chunks); counted again only after a write."""
        generation = self._generation()
        if self._progress is None or self._progress[0] != generation:
            total, waiting = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(NOT EXISTS (SELECT 1 FROM vectors v"
                " WHERE v.text_hash = c.text_hash)), 0) FROM chunks c"
            ).fetchone()
            self._progress = (generation, int(total) - int(waiting), int(total))
        return self._progress[1], self._progress[2]

    # --- derived indexes -----------------------------------------------------------------

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM change_log").fetchone()
        if row[0] is not None:
            return int(row[0])
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='change_log'")
        found = row.fetchone()
        return int(found[0]) if found else 0

    def flush(self) -> None:
        """Apply the change log to both indexes and commit them (needs the write lock)."""
        if self._lock_file is None:
            raise StoreError("flush() needs the write lock: use `with store.writing():`")
        last = self._last_seq()
        keyword_mark, vector_mark = self._keyword.watermark, self._vectors.watermark
        start = min(keyword_mark, vector_mark)
        if last > start:
            self._apply_log(start, keyword_mark, vector_mark)
        crash_point("flush.applied")
        self._keyword.commit(last)
        crash_point("flush.keyword")
        self._vectors.commit(last)
        crash_point("flush.vectors")
        with self._transaction():
            self._db.execute("DELETE FROM change_log WHERE seq <= ?", (last,))
        self._pending_since_flush = 0

    def _apply_log(self, start: int, keyword_mark: int, vector_mark: int) -> None:
        # The last operation per chunk and index decides; a chunk deleted later is never
        # added. 'vec' (a vector filled in later) concerns the vector index only.
        rows = self._db.execute(
            "SELECT chunk_id, op, seq FROM change_log WHERE seq > ? ORDER BY seq", (start,)
        ).fetchall()
        keyword: dict[int, tuple[str, int]] = {}
        vector: dict[int, tuple[str, int]] = {}
        for chunk_id, op, seq in rows:
            if op != "vec" and seq > keyword_mark:
                keyword[chunk_id] = (op, seq)
            if seq > vector_mark:
                vector[chunk_id] = ("del" if op == "del" else "add", seq)
        for chunk_id, (op, _) in keyword.items():
            if op == "del":
                self._keyword.delete(chunk_id)
        self._vectors.delete([c for c, (op, _) in vector.items() if op == "del"])
        wanted = [c for c, (op, _) in {**vector, **keyword}.items() if op == "add"]
        for batch_start in range(0, len(wanted), 1000):
            batch = wanted[batch_start : batch_start + 1000]
            marks = ",".join("?" * len(batch))
            found = self._db.execute(
                f"SELECT c.id, c.doc_id, c.tokens, v.vector FROM chunks c"
                f" LEFT JOIN vectors v ON v.text_hash = c.text_hash WHERE c.id IN ({marks})",
                batch,
            ).fetchall()
            keys, vectors = [], []
            for chunk_id, doc_id, tokens, blob in found:
                if keyword.get(chunk_id, ("", 0))[0] == "add":
                    self._keyword.upsert(chunk_id, doc_id, tokens)
                if blob is not None and vector.get(chunk_id, ("", 0))[0] == "add":
                    keys.append(chunk_id)
                    vectors.append(np.frombuffer(blob, dtype=np.float32))
            if keys:
                self._vectors.upsert(keys, np.vstack(vectors))

    def index_sizes(self) -> tuple[int, int]:
        """Entries in the keyword and vector indexes (each should equal the chunk count)."""
        return len(self._keyword), len(self._vectors)

    def consistency_problems(self) -> list[str]:
        """What disagrees between the records and the derived indexes (empty: nothing):
        each index must hold exactly the chunk ids of SQLite, and every chunk text its
        vector. Reads everything: for checks and tests, not per request."""
        chunks = {int(r[0]) for r in self._db.execute("SELECT id FROM chunks")}
        # chunks still waiting for their vector are in the keyword index only
        embedded = {
            int(r[0])
            for r in self._db.execute(
                "SELECT c.id FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
            )
        }
        problems = []
        for name, ids, expected in (
            ("keyword", self._keyword.ids(), chunks),
            ("vector", self._vectors.ids(), embedded),
        ):
            if ids != expected:
                problems.append(
                    f"{name} index: {len(ids - expected)} ids not in the records, "
                    f"{len(expected - ids)} chunks missing"
                )
        return problems

    def is_consistent(self) -> bool:
        last = self._last_seq()
        return min(self._watermarks()) >= last

    # --- retrieval -----------------------------------------------------------------------

    def allowed_documents(self, filters: Filters) -> list[int] | None:
        """Document ids passing the filters, or None when nothing is excluded."""
        denied = set() if filters.groups is None else self.unreadable_documents(filters.groups)
        if not denied and not filters.has_metadata():
            return None  # a reader who may read everything searches the whole index
        if not filters.has_metadata():  # groups only: every document but the denied ones
            documents = self._current_layout().documents
            allowed: list[int] = documents[~np.isin(documents, list(denied))].tolist()
            return allowed
        sql = "SELECT id, path, tags FROM documents WHERE 1=1"
        params: list[object] = []
        if filters.modified_after:
            sql += " AND modified >= ?"
            params.append(filters.modified_after.timestamp())
        if filters.modified_before:
            sql += " AND modified <= ?"
            params.append(filters.modified_before.timestamp())
        wanted = {t.lower() for t in filters.tags}
        allowed = []
        for doc_id, path, tags in self._db.execute(sql, params):
            if filters.path_glob and not _glob_match(path, filters.path_glob):
                continue
            if filters.exclude_glob and _glob_match(path, filters.exclude_glob):
                continue
            if wanted and not wanted <= {t.lower() for t in json.loads(tags)}:
                continue
            if doc_id in denied:
                continue
            allowed.append(int(doc_id))
        return allowed

    # --- access control ------------------------------------------------------------------

    def unreadable_documents(self, groups: frozenset[str]) -> set[int]:
        """Ids of the documents a reader in `groups` may not read: those that have groups,
        none of which is one of the reader's."""
        generation = self._generation()
        cached = self._unreadable.get(groups)
        if cached is not None and cached[0] == generation:
            return cached[1]
        rows = self._db.execute(
            f"SELECT d.id FROM documents d WHERE {_UNREADABLE}", (_group_list(groups),)
        )
        unreadable = {int(row[0]) for row in rows}
        if len(self._unreadable) >= 64:  # a few groups sets are in use at a time
            self._unreadable.clear()
        self._unreadable[groups] = (generation, unreadable)
        return unreadable

    def document_groups(self) -> dict[str, list[str]]:
        """The groups that may read each restricted document (path -> groups); a document
        not listed is readable by everyone."""
        found: dict[str, list[str]] = {}
        for path, group in self._db.execute(
            "SELECT g.path, g.group_name FROM document_groups g"
            " JOIN documents d ON d.path = g.path ORDER BY g.path, g.group_name"
        ):
            found.setdefault(path, []).append(group)
        return found

    def access_rules(self) -> dict[str, list[str]]:
        """Path glob -> the groups that may read the documents it matches."""
        found: dict[str, list[str]] = {}
        for pattern, group in self._db.execute(
            "SELECT pattern, group_name FROM access_rules ORDER BY pattern, group_name"
        ):
            found.setdefault(pattern, []).append(group)
        return found

    def set_access_rule(self, pattern: str, groups: Sequence[str]) -> None:
        """Let only `groups` read documents matching `pattern` (no groups: drop the rule),
        and re-derive every document's groups in the same transaction."""
        with self._transaction():
            self._db.execute("DELETE FROM access_rules WHERE pattern = ?", (pattern,))
            self._db.executemany(
                "INSERT INTO access_rules VALUES (?, ?)", ((pattern, g) for g in set(groups))
            )
            self._derive_groups(None)

    def document_grants(self, path: str) -> list[str]:
        rows = self._db.execute(
            "SELECT group_name FROM document_grants WHERE path = ? ORDER BY group_name", (path,)
        )
        return [row[0] for row in rows]

    def set_document_grants(self, path: str, groups: Sequence[str]) -> None:
        """Give the document at `path` (indexed or about to be) its own groups, which
        replace the rules for it; no groups: the rules apply again."""
        with self._transaction():
            self._db.execute("DELETE FROM document_grants WHERE path = ?", (path,))
            self._db.executemany(
                "INSERT INTO document_grants VALUES (?, ?)", ((path, g) for g in set(groups))
            )
            self._derive_groups([path])

    def _derive_groups(self, paths: Sequence[str] | None) -> None:
        """Recompute `document_groups` for `paths` (None: every document), inside the
        caller's transaction: a document's own grants if it has any, else the union of
        the groups of every rule whose glob matches its path."""
        if paths is None:
            self._db.execute("DELETE FROM document_groups")
            paths = [row[0] for row in self._db.execute("SELECT path FROM documents")]
        else:
            self._db.executemany(
                "DELETE FROM document_groups WHERE path = ?", ((p,) for p in paths)
            )
        rules = self.access_rules()
        rows: list[tuple[str, str]] = []
        for path in paths:
            groups = set(self.document_grants(path))
            if not groups:
                for pattern, allowed in rules.items():
                    if _glob_match(path, pattern):
                        groups.update(allowed)
            rows.extend((path, group) for group in sorted(groups))
        self._db.executemany("INSERT INTO document_groups VALUES (?, ?)", rows)

    def follow_writers(self) -> None:
        """Make the next search see what other processes wrote (a CLI `add` while the
        server runs): when the store's generation has moved, reload the keyword index
        and reopen the vector file if it was replaced. One SQLite read otherwise."""
        if self._lock_file is not None:
            return  # this process is the writer: its indexes are the newest
        generation = self._generation()
        if generation != self._followed:
            self._followed = generation
            # an index not opened yet will open the newest files when it is
            if self._keyword_index is not None:
                self._keyword_index.reload()
            if self._vector_index is not None:
                self._vector_index.follow()

    def keyword_search(
        self, query: str, limit: int, doc_ids: Sequence[int] | None = None
    ) -> ScoredIds:
        self.follow_writers()
        return self._keyword.search(analyze(query), limit, doc_ids)

    def keyword_statistics(self, tokens: Sequence[str]) -> tuple[int, dict[str, int]]:
        self.follow_writers()
        return self._keyword.document_frequencies(tokens)

    def vector_search(
        self, vector: Vectors, limit: int, doc_ids: Sequence[int] | None = None
    ) -> ScoredIds:
        self.follow_writers()
        if doc_ids is None:
            return self._vectors.search(vector, limit)
        layout = self._current_layout()
        keys = layout.chunks[np.isin(layout.chunk_documents, np.asarray(doc_ids, dtype=np.int64))]
        return self._vectors.search(vector, limit, keys)

    def prepare_filtered_search(self) -> None:
        """Build what searches restricted to some documents use (a reader's groups, a
        path filter) before the first one needs it."""
        self._current_layout()
        self._vectors.prepare_filtered_search()

    def _current_layout(self) -> _Layout:
        """Which document each chunk belongs to, rebuilt after a change (~50 ms at 100k
        chunks; looking the chunks of the allowed documents up in SQLite instead cost
        ~40 ms per filtered search)."""
        generation = self._generation()
        if self._layout is None or self._layout.generation != generation:
            rows = self._db.execute("SELECT id, doc_id FROM chunks").fetchall()
            pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
            self._layout = _Layout(
                generation, pairs[:, 0].copy(), pairs[:, 1].copy(), np.unique(pairs[:, 1])
            )
        return self._layout

    def hits(self, chunk_ids: Sequence[int]) -> dict[int, SearchHit]:
        """Chunk rows with their document, for ids that still exist."""
        found: dict[int, SearchHit] = {}
        ids = list(dict.fromkeys(chunk_ids))
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                "SELECT c.id, c.doc_id, d.path, d.title, d.kind, c.heading_path, c.line_start,"
                " c.line_end, c.page_start, c.page_end, c.text, c.tokens FROM chunks c"
                f" JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
                batch,
            )
            for row in rows:
                found[row[0]] = SearchHit(
                    chunk_id=row[0],
                    doc_id=row[1],
                    path=row[2],
                    title=row[3],
                    kind=row[4],
                    heading_path=json.loads(row[5]),
                    line_start=row[6],
                    line_end=row[7],
                    page_start=row[8],
                    page_end=row[9],
                    text=row[10],
                    score=0.0,
                    index_tokens=row[11].split(" ") if row[11] else [],
                )
        return found

    # --- answer cache --------------------------------------------------------------------

    def cached_answer(self, key: str) -> str | None:
        """A cached answer (JSON) by its key; the caller builds keys that change whenever
        the evidence or the answer settings do."""
        row = self._db.execute("SELECT answer FROM answer_cache WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def put_cached_answer(self, key: str, answer: str, content_hashes: Sequence[str]) -> None:
        """Remember an answer with the content hashes of the documents it was built from."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO answer_cache VALUES (?, ?, ?, ?)",
                (key, answer, json.dumps(sorted(set(content_hashes))), time.time()),
            )

    def purge_cached_answers(self) -> int:
        """Drop cached answers built from a document version that is no longer indexed
        (the document changed or was removed); returns how many."""
        current = {row[0] for row in self._db.execute("SELECT content_hash FROM documents")}
        stale = [
            key
            for key, hashes in self._db.execute("SELECT key, content_hashes FROM answer_cache")
            if not set(json.loads(hashes)) <= current
        ]
        with self._transaction():
            self._db.executemany("DELETE FROM answer_cache WHERE key = ?", ((k,) for k in stale))
        return len(stale)

    # --- status --------------------------------------------------------------------------

    def counts(self, groups: frozenset[str] | None = None) -> tuple[int, int]:
        """Documents and chunks; with `groups`, only those a reader in them may read."""
        if groups is None:
            documents = self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            chunks = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            return int(documents), int(chunks)
        documents, chunks = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM((SELECT COUNT(*) FROM chunks c"
            f" WHERE c.doc_id = d.id)), 0) FROM documents d WHERE NOT ({_UNREADABLE})",
            (_group_list(groups),),
        ).fetchone()
        return int(documents), int(chunks)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file())

    def close(self) -> None:
        self._db.close()


# A document `d` a reader may not read: it has groups, none of which is one of the
# reader's (the one parameter: the reader's groups as a JSON list, `_group_list`).
_UNREADABLE = (
    "EXISTS (SELECT 1 FROM document_groups g WHERE g.path = d.path)"
    " AND NOT EXISTS (SELECT 1 FROM document_groups g WHERE g.path = d.path"
    "  AND g.group_name IN (SELECT value FROM json_each(?)))"
)


class Reembedding(NamedTuple):
    """A re-embedding in progress: the model, and the chunk texts done out of all."""

    model: str
    dim: int
    done: int
    total: int


class _Layout(NamedTuple):
    generation: int
    chunks: NDArray[np.int64]  # every chunk id
    chunk_documents: NDArray[np.int64]  # the document of each
    documents: NDArray[np.int64]  # every document id with chunks, sorted


def _group_list(groups: frozenset[str]) -> str:
    return json.dumps(sorted(groups), ensure_ascii=False)


def _document_info(row: tuple[object, ...]) -> DocumentInfo:
    doc_id, path, title, kind, tags, modified, content_hash, size, chunks = row
    return DocumentInfo(
        id=int(str(doc_id)),
        path=str(path),
        title=str(title),
        kind=str(kind),
        tags=json.loads(str(tags)),
        modified=datetime.fromtimestamp(float(str(modified)), UTC),
        content_hash=str(content_hash),
        size=int(str(size)),
        chunks=int(str(chunks)),
    )


def _page_range(pages: list[int] | None, chunk: ChunkDraft) -> tuple[int | None, int | None]:
    if not pages:
        return None, None
    first = pages[min(chunk.line_start, len(pages)) - 1]
    last = pages[min(chunk.line_end, len(pages)) - 1]
    return first, last


def _glob_match(path: str, pattern: str) -> bool:
    """Match a stored path against a glob; a pattern without '/' matches file names too."""
    if fnmatch.fnmatch(path, pattern):
        return True
    if "/" not in pattern:
        return fnmatch.fnmatch(os.path.basename(path), pattern)
    return fnmatch.fnmatch(path, "*/" + pattern.lstrip("/"))
