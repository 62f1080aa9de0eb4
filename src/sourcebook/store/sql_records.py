"""The record store in SQL, written once for SQLite (`sqlite.py`) and PostgreSQL
(`postgres.py`): sources, documents, chunks, the change log and the answer cache here;
access rules and grants (`sql_access_rules.py`), document frequencies (`sql_terms.py`) and
the embedding cache, vectors filled in later and re-embedding (`sql_vectors.py`) in the
classes it is made of, over a database and its transactions (`sql_base.py`). The SQL is
what both engines run (`sql.py`).

Every change to chunks is written together with change-log rows in one transaction that
also bumps the generation; the search index applies the log later (`composed.py`).

The same transaction keeps `term_counts` exact: for each term of the analysed tokens, how
many chunks contain it, and under the term '' how many chunks there are (the document
frequencies of the idf weights, which the reranker and the answerers read on every
question, `term_statistics`). They are global statistics, like the BM25 index's own: not
restricted to what a reader may read. A knowledge base made before the table existed has
them counted from its chunks' stored tokens when it is first opened (`_count_terms`).
"""

from __future__ import annotations

import json
import sys
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sourcebook.models import Box, ChunkDraft, DocumentInfo, SearchHit
from sourcebook.store.access import AccessControl
from sourcebook.store.base import (
    PARTIAL_HASH,
    SCHEMA_VERSION,
    Change,
    ChunkLayout,
    DocumentRecord,
    Filters,
    IndexEntry,
    StoreError,
    batched,
    glob_match,
    line_range,
    page_range,
    text_hash,
)
from sourcebook.store.sql import Database
from sourcebook.store.sql_access_rules import SQLAccessRules
from sourcebook.store.sql_base import SET_META
from sourcebook.store.sql_terms import ALL_CHUNKS, TERM_COUNTS_VERSION, SQLTermCounts, chunk_terms
from sourcebook.store.sql_vectors import SQLVectors

if TYPE_CHECKING:
    from sourcebook.index.embedders import Vectors

# numpy (vectors, chunk layouts) and the analyzer (tokens) are imported by the methods
# that use them: opening the records and reading counts (`status`) needs neither


class SQLRecords(SQLAccessRules, SQLTermCounts, SQLVectors):
    """The record store in a SQL database (see the module docstring); subclasses give
    the database, its schema, how writers exclude each other and where users live."""

    def __init__(
        self, db: Database, schema: str, location: str, model: tuple[str, int] | None
    ) -> None:
        """Use the records in `db` (creating its tables if missing). `model` is the (name,
        dimension) of the embedder the caller wants; None: whatever the knowledge base was
        built with. `location` names the knowledge base in messages."""
        self._db = self.db = db
        self.location = location
        self.log_group_changes = False
        # derived from the tables and kept until they change (see `generation`): which
        # document each chunk belongs to
        self._layout: ChunkLayout | None = None
        self._progress: tuple[int, int, int] | None = None  # (generation, embedded, chunks)
        self._start_access_rules()
        self._db.executescript(schema)
        self.embedder_name, self.dim = self._check_model(model)
        self._count_terms()

    # --- identity and locking ------------------------------------------------------------

    def _check_model(self, model: tuple[str, int] | None) -> tuple[str, int]:
        rows: dict[str, str] = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if "embedder" not in rows:
            if model is None:
                raise StoreError(
                    f"{self.location} has no embedding model recorded; run `sourcebook init`"
                )
            with self._transaction():
                for key, value in (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("embedder", model[0]),
                    ("dim", str(model[1])),
                    ("created", str(time.time())),
                    ("term_counts", TERM_COUNTS_VERSION),  # no chunks: counted
                ):
                    self._db.execute(SET_META, (key, value))
            return model
        stored = (str(rows["embedder"]), int(rows["dim"]))
        if model is not None and model[0] != stored[0]:
            raise StoreError(
                f"the knowledge base at {self.location} was built with embedding model "
                f"{stored[0]!r}, not {model[0]!r}; to switch models, re-index it with "
                f"`sourcebook reindex --model {model[0]}`"
            )
        return stored

    # --- sources (the roots `sync` re-reads) ------------------------------------------------

    def add_source(
        self, path: str, include: Sequence[str], exclude: Sequence[str], given: str | None = None
    ) -> None:
        """Remember an absolute source path; `given` is how the user wrote it."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO sources (path, include, exclude, added, given)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE"
                " SET include = excluded.include, exclude = excluded.exclude,"
                " added = excluded.added, given = excluded.given",
                (path, json.dumps(list(include)), json.dumps(list(exclude)), time.time(), given),
            )

    def source_names(self) -> dict[str, str]:
        """Absolute source path -> the path as the user gave it (when it was recorded)."""
        rows = self._db.execute("SELECT path, given FROM sources WHERE given IS NOT NULL")
        return {str(path): str(given) for path, given in rows}

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
        return document_info(row) if row else None

    def documents(self) -> list[DocumentInfo]:
        rows = self._db.execute(f"SELECT {self._DOC_COLUMNS} FROM documents d ORDER BY d.path")
        return [document_info(row) for row in rows]

    def document_text(
        self, path: str, start: int | None = None, end: int | None = None
    ) -> str | None:
        """The document's text, or its lines start..end (1-based, inclusive, clipped to the
        text). Of a document stored in parts, only the parts holding those lines are read
        (a streamed CSV's text may be hundreds of megabytes)."""
        row = self._db.execute("SELECT id, text FROM documents WHERE path = ?", (path,)).fetchone()
        if row is None:
            return None
        doc_id, head = int(row[0]), str(row[1])
        starts = [(0, 1)] + [
            (int(part), int(first))
            for part, first in self._db.execute(
                "SELECT part, first_line FROM document_parts WHERE doc_id = ? ORDER BY part",
                (doc_id,),
            )
        ]
        low, high = start or 1, end or sys.maxsize
        wanted = [
            (part, first)
            for i, (part, first) in enumerate(starts)
            if first <= high and (i + 1 == len(starts) or starts[i + 1][1] > low)
        ] or starts[-1:]
        texts = {0: head} if wanted[0][0] == 0 else {}
        parts = [part for part, _ in wanted if part]
        if parts:
            marks = ",".join("?" * len(parts))
            texts.update(
                (int(part), str(text))
                for part, text in self._db.execute(
                    f"SELECT part, text FROM document_parts WHERE doc_id = ? AND part IN ({marks})",
                    (doc_id, *parts),
                )
            )
        text = "\n".join(texts[part] for part, _ in wanted)
        if start is None and end is None:
            return text
        return line_range(text, low - wanted[0][1] + 1, high - wanted[0][1] + 1)

    def partial_documents(self) -> list[str]:
        """Paths of the documents stored in parts whose last part is not stored yet."""
        rows = self._db.execute(
            "SELECT path FROM documents WHERE content_hash = ? ORDER BY path", (PARTIAL_HASH,)
        )
        return [str(path) for (path,) in rows]

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
        import numpy as np

        from sourcebook.index.analyzer import analyze

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
        terms: Counter[str] = Counter()
        with self._transaction():
            doc_id = self._delete_chunk_rows(record.path, terms)
            if doc_id is None:
                inserted = self._db.execute(
                    "INSERT INTO documents (title, kind, tags, modified, size, content_hash,"
                    " text, pages, boxes, indexed, path)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " RETURNING id",
                    values,
                ).fetchone()
                assert inserted is not None
                doc_id = int(inserted[0])
            else:
                self._db.execute(
                    "UPDATE documents SET title = ?, kind = ?, tags = ?, modified = ?, size = ?,"
                    " content_hash = ?, text = ?, pages = ?, boxes = ?, indexed = ?"
                    " WHERE path = ?",
                    values,
                )
            # in the same transaction: a document is never visible without its groups
            self._derive_groups([record.path])
            for chunk, index_text, digest, vector in zip(
                chunks, index_texts, hashes, given, strict=True
            ):
                tokens = " ".join(analyze(index_text))
                terms.update(chunk_terms(tokens))
                self._insert_chunk(
                    doc_id, chunk, index_text, tokens, page_range(record.pages, chunk), digest
                )
                if vector is not None:
                    self._db.execute(
                        "INSERT INTO vectors VALUES (?, ?) ON CONFLICT (text_hash) DO NOTHING",
                        (digest, np.asarray(vector, dtype=np.float32).tobytes()),
                    )
            # every chunk of the document is new: one statement logs them all
            self._db.execute(
                "INSERT INTO change_log (chunk_id, op) SELECT id, 'add' FROM chunks"
                " WHERE doc_id = ? ORDER BY id",
                (doc_id,),
            )
            terms[ALL_CHUNKS] += len(chunks)
            self._add_term_counts(terms)

    def append_to_document(
        self,
        path: str,
        text: str,
        first_line: int,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        content_hash: str | None = None,
    ) -> None:
        """Add the next part of a document stored in parts (`replace_document` stored the
        first): its text (the document's text goes on after a newline; `first_line` is the
        line of the document's text it starts on) and its chunks, whose ordinals and
        offsets already count the parts before. `content_hash`, given with the last part,
        replaces the marker the first part was stored with. One transaction, like every
        write: a process killed between parts leaves a shorter document, whose marker
        makes the next sync index the file again."""
        from sourcebook.index.analyzer import analyze

        terms: Counter[str] = Counter()
        with self._transaction():
            row = self._db.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise StoreError(f"{path} is not in the knowledge base: store its first part")
            doc_id = int(row[0])
            self._db.execute(
                "INSERT INTO document_parts (doc_id, part, first_line, text) VALUES"
                " (?, (SELECT COUNT(*) + 1 FROM document_parts WHERE doc_id = ?), ?, ?)",
                (doc_id, doc_id, first_line, text),
            )
            first = None
            for chunk, index_text in zip(chunks, index_texts, strict=True):
                tokens = " ".join(analyze(index_text))
                terms.update(chunk_terms(tokens))
                inserted = self._insert_chunk(doc_id, chunk, index_text, tokens, (None, None))
                first = inserted if first is None else first
            if first is not None:
                self._db.execute(
                    "INSERT INTO change_log (chunk_id, op) SELECT id, 'add' FROM chunks"
                    " WHERE doc_id = ? AND id >= ? ORDER BY id",
                    (doc_id, first),
                )
            updates = "indexed = ?" + (", content_hash = ?" if content_hash else "")
            values: list[object] = [time.time(), *([content_hash] if content_hash else [])]
            self._db.execute(f"UPDATE documents SET {updates} WHERE id = ?", (*values, doc_id))
            terms[ALL_CHUNKS] += len(chunks)
            self._add_term_counts(terms)

    def _insert_chunk(
        self,
        doc_id: int,
        chunk: ChunkDraft,
        index_text: str,
        tokens: str,
        pages: tuple[int | None, int | None],
        digest: str | None = None,
    ) -> int:
        """Insert one chunk row (inside the caller's transaction); its id."""
        inserted = self._db.execute(
            "INSERT INTO chunks (doc_id, ordinal, text, heading_path, char_start, char_end,"
            " line_start, line_end, page_start, page_end, text_hash, tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
                digest or text_hash(index_text),
                tokens,
            ),
        ).fetchone()
        assert inserted is not None
        return int(inserted[0])

    def remove_document(self, path: str) -> bool:
        terms: Counter[str] = Counter()
        with self._transaction():
            removed = self._delete_document_rows(path, terms)
            # a file indexed again later under this path must not inherit its groups
            self._db.execute("DELETE FROM document_grants WHERE path = ?", (path,))
            self._db.execute("DELETE FROM document_groups WHERE path = ?", (path,))
            self._add_term_counts(terms)
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
                terms: Counter[str] = Counter()
                self._delete_document_rows(new, terms)
                self._add_term_counts(terms)
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
        terms: Counter[str] = Counter()
        with self._transaction():
            self._db.execute("DELETE FROM sources WHERE path = ?", (root,))
            for path in paths:
                self._delete_document_rows(path, terms)
                self._db.execute("DELETE FROM document_grants WHERE path = ?", (path,))
                self._db.execute("DELETE FROM document_groups WHERE path = ?", (path,))
            self._add_term_counts(terms)

    def _delete_document_rows(self, path: str, terms: Counter[str]) -> bool:
        doc_id = self._delete_chunk_rows(path, terms)
        if doc_id is None:
            return False
        self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return True

    def _delete_chunk_rows(self, path: str, terms: Counter[str]) -> int | None:
        """Delete the chunks of the document at `path` (logged for the search index),
        inside the caller's transaction, taking their terms off `terms` (which the caller
        adds to `term_counts` in the same transaction); returns the document's id, None if
        not indexed."""
        row = self._db.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
        if row is None:
            return None
        removed = 0
        for (tokens,) in self._db.execute(
            "SELECT tokens FROM chunks WHERE doc_id = ?", (row[0],)
        ).fetchall():
            terms.subtract(chunk_terms(str(tokens)))
            removed += 1
        terms[ALL_CHUNKS] -= removed
        self._db.execute(
            "INSERT INTO change_log (chunk_id, op) SELECT id, 'del' FROM chunks WHERE doc_id = ?",
            (row[0],),
        )
        self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (row[0],))
        self._db.execute("DELETE FROM document_parts WHERE doc_id = ?", (row[0],))
        return int(row[0])

    # --- change log ----------------------------------------------------------------------

    def last_seq(self) -> int:
        row = self._db.execute(self._db.dialect.last_seq).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def changes_since(self, seq: int) -> list[Change]:
        rows = self._db.execute(
            "SELECT seq, chunk_id, op FROM change_log WHERE seq > ? ORDER BY seq", (seq,)
        )
        return [Change(int(s), int(c), str(o)) for s, c, o in rows]

    def index_entries(self, chunk_ids: Sequence[int]) -> list[IndexEntry]:
        """What the search index holds for these chunks (those that still exist)."""
        import numpy as np

        entries: list[IndexEntry] = []
        for batch in batched(chunk_ids, 900):
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                "SELECT c.id, c.doc_id, c.tokens, v.vector, d.path FROM chunks c"
                " LEFT JOIN vectors v ON v.text_hash = c.text_hash"
                f" JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
                list(batch),
            ).fetchall()
            groups = self._groups_of({str(row[4]) for row in rows})
            entries.extend(
                IndexEntry(
                    int(chunk_id),
                    int(doc_id),
                    str(tokens),
                    None if blob is None else np.frombuffer(blob, dtype=np.float32),
                    tuple(groups.get(str(path), ())),
                )
                for chunk_id, doc_id, tokens, blob, path in rows
            )
        return entries

    def trim_log(self, seq: int) -> None:
        """Forget the log up to `seq` (the search index has durably applied it)."""
        with self._transaction():
            self._db.execute("DELETE FROM change_log WHERE seq <= ?", (seq,))

    def chunk_ids(self) -> set[int]:
        return {int(r[0]) for r in self._db.execute("SELECT id FROM chunks")}

    def chunk_layout(self) -> ChunkLayout:
        """Which document each chunk belongs to, rebuilt after a change (~50 ms at 100k
        chunks; looking the chunks of the allowed documents up in SQLite instead cost
        ~40 ms per filtered search)."""
        import numpy as np

        generation = self.generation()
        if self._layout is None or self._layout.generation != generation:
            rows = self._db.execute("SELECT id, doc_id FROM chunks").fetchall()
            pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
            self._layout = ChunkLayout(
                generation, pairs[:, 0].copy(), pairs[:, 1].copy(), np.unique(pairs[:, 1])
            )
        return self._layout

    # --- retrieval -----------------------------------------------------------------------

    def allowed_documents(self, filters: Filters, include_groups: bool = True) -> list[int] | None:
        """Document ids passing the filters, or None when nothing is excluded. Without
        `include_groups`, the reader's groups are left to the search index."""
        denied: set[int] = set()
        if include_groups and filters.groups is not None:
            denied = self.unreadable_documents(filters.groups)
        if not denied and not filters.has_metadata():
            return None  # a reader who may read everything searches the whole index
        if not filters.has_metadata():  # groups only: every document but the denied ones
            import numpy as np

            documents = self.chunk_layout().documents
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
            if filters.path_glob and not glob_match(path, filters.path_glob):
                continue
            if filters.exclude_glob and glob_match(path, filters.exclude_glob):
                continue
            if wanted and not wanted <= {t.lower() for t in json.loads(tags)}:
                continue
            if doc_id in denied:
                continue
            allowed.append(int(doc_id))
        return allowed

    def hits(self, chunk_ids: Sequence[int]) -> dict[int, SearchHit]:
        """Chunk rows with their document, for ids that still exist."""
        found: dict[int, SearchHit] = {}
        for batch in batched(list(dict.fromkeys(chunk_ids))):
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                "SELECT c.id, c.doc_id, d.path, d.title, d.kind, c.heading_path, c.line_start,"
                " c.line_end, c.page_start, c.page_end, c.text, c.tokens FROM chunks c"
                f" JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
                list(batch),
            )
            for row in rows:
                found[row[0]] = search_hit(row)
        return found

    # --- access control ------------------------------------------------------------------

    @abstractmethod
    def access_control(self) -> AccessControl:
        """Users, groups, API keys and the audit log of this knowledge base."""

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
                "INSERT INTO answer_cache VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET answer = excluded.answer, content_hashes = excluded.content_hashes,"
                " created = excluded.created",
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
            f" WHERE c.doc_id = d.id)), 0) FROM documents d WHERE NOT ({self._unreadable_sql})",
            (self._db.dialect.group_parameter(groups),),
        ).fetchone()
        return int(documents), int(chunks)

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes the records take."""

    @abstractmethod
    def restart_identities(self) -> None:
        """After rows were copied with their ids (a migration), new rows must continue
        after the highest (ids are never reused)."""

    def close(self) -> None:
        self._db.close()


def document_info(row: Sequence[object]) -> DocumentInfo:
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


def search_hit(row: Sequence[object]) -> SearchHit:
    """A `hits` row (chunk joined with its document) as a SearchHit."""
    tokens = str(row[11] or "")
    return SearchHit(
        chunk_id=int(str(row[0])),
        doc_id=int(str(row[1])),
        path=str(row[2]),
        title=str(row[3]),
        kind=str(row[4]),
        heading_path=json.loads(str(row[5])),
        line_start=int(str(row[6])),
        line_end=int(str(row[7])),
        page_start=None if row[8] is None else int(str(row[8])),
        page_end=None if row[9] is None else int(str(row[9])),
        text=str(row[10]),
        score=0.0,
        index_tokens=tokens.split(" ") if tokens else [],
    )
