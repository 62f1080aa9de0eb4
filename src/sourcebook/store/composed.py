"""One record store and one search index, put together for the pipeline.

Every change to chunks is written to the record store together with change-log rows in
one transaction. `flush()` then applies the log to the search index, commits it, records
how far it got (its watermark) and trims the log. A process killed at any point leaves
the records consistent (a transaction either happened or not) and the index behind, never
ahead: the next writer replays the missing log entries (every index write is idempotent).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sourcebook.faults import crash_point
from sourcebook.models import Box, ChunkDraft, DocumentInfo, SearchHit
from sourcebook.store.access import AccessControl
from sourcebook.store.base import (
    DocumentRecord,
    Filters,
    RecordStore,
    Reembedding,
    ScoredIds,
    SearchIndex,
    SearchScope,
    StoreError,
)

if TYPE_CHECKING:
    from sourcebook.index.embedders import Vectors

# changes written between two flushes during a long ingest: keeps the index from falling
# far behind (and a crash from costing a long replay)
FLUSH_EVERY = 5_000


class KnowledgeStore:
    """The store the pipeline uses: `records` (the system of record) and `index` (derived,
    rebuilt from the change log). Record methods are passed through; searches go to the
    index with the reader's restrictions as a `SearchScope`."""

    def __init__(self, folder: Path, records: RecordStore, index: SearchIndex) -> None:
        """`folder` is the knowledge base folder (uploads and settings live there
        whatever holds the records and the index)."""
        self.folder = folder
        self.records = records
        self.index = index
        records.log_group_changes = index.stores_groups
        self._writing = False
        self._pending_since_flush = 0
        self._recover()
        self._followed = records.generation()

    @property
    def embedder_name(self) -> str:
        return self.records.embedder_name

    @property
    def dim(self) -> int:
        return self.records.dim

    @property
    def location(self) -> str:
        return self.records.location

    # --- writing, the change log and recovery ----------------------------------------------

    @contextmanager
    def writing(self, wait: bool = True) -> Iterator[None]:
        """Hold the knowledge base's write lock (one writer at a time) and flush the
        change log into the index when done."""
        if self._writing:
            yield
            return
        with self.records.write_lock(wait):
            self._writing = True
            try:
                yield
                self.flush()
            finally:
                self._writing = False

    def _recover(self) -> None:
        """Bring the index up to date if a writer died before flushing."""
        if self.records.last_seq() > self.index.watermark():
            try:
                with self.writing(wait=False):
                    pass  # writing() flushes on exit
            except StoreError:
                pass  # a live writer holds the lock and will flush itself

    def flush(self) -> None:
        """Apply the change log to the index and commit it (needs the write lock)."""
        if not self._writing:
            raise StoreError("flush() needs the write lock: use `with store.writing():`")
        last = self.records.last_seq()
        start = self.index.watermark()
        if last > start:
            self._apply_log(start)
        crash_point("flush.applied")
        self.index.commit(last)
        self.records.trim_log(last)
        self._pending_since_flush = 0

    def _apply_log(self, start: int) -> None:
        # The last operation per chunk decides; a chunk deleted later is never added.
        final: dict[int, str] = {}
        # 'vec' (a vector filled in later) and 'grp' (new readers) re-write the chunk's
        # entry, which the index reads whole from the records
        for change in self.records.changes_since(start):
            if change.op == "grp" and not self.index.stores_groups:
                continue
            if change.op in ("vec", "grp") and final.get(change.chunk_id) == "del":
                continue
            final[change.chunk_id] = "del" if change.op == "del" else "add"
        deletes = [chunk_id for chunk_id, op in final.items() if op == "del"]
        adds = [chunk_id for chunk_id, op in final.items() if op == "add"]
        self.index.delete(deletes)
        for batch_start in range(0, len(adds), 1000):
            self.index.upsert(self.records.index_entries(adds[batch_start : batch_start + 1000]))

    def _after_write(self, changes: int) -> None:
        self._pending_since_flush += changes
        if self._pending_since_flush >= FLUSH_EVERY:
            self.flush()

    def is_consistent(self) -> bool:
        return self.index.watermark() >= self.records.last_seq()

    def index_sizes(self) -> tuple[int, int]:
        """Entries in the keyword and vector indexes (each should equal the chunk count)."""
        return self.index.sizes()

    def consistency_problems(self) -> list[str]:
        """What disagrees between the records and the index (empty: nothing): each index
        must hold exactly the chunk ids of the records, and every chunk text its vector.
        The records' document frequencies must equal a recount of their chunks.
        Reads everything: for checks and tests, not per request."""
        chunks = self.records.chunk_ids()
        # chunks still waiting for their vector are in the keyword index only (or, for an
        # index that stores both in one row, in neither yet)
        embedded = self.records.embedded_chunk_ids()
        problems = []
        keyword, vector = self.index.ids()
        for name, ids, expected in (
            ("keyword", keyword, chunks if self.index.keyword_without_vector else embedded),
            ("vector", vector, embedded),
        ):
            if ids != expected:
                problems.append(
                    f"{name} index: {len(ids - expected)} ids not in the records, "
                    f"{len(expected - ids)} chunks missing"
                )
        problems.extend(self.records.term_count_problems())
        return problems

    # --- documents (written through to the records) ----------------------------------------

    def replace_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        vectors: Vectors | None = None,
    ) -> None:
        self.records.replace_document(record, chunks, index_texts, vectors)
        self._after_write(len(chunks))

    def append_to_document(
        self,
        path: str,
        text: str,
        first_line: int,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        content_hash: str | None = None,
    ) -> None:
        self.records.append_to_document(path, text, first_line, chunks, index_texts, content_hash)
        self._after_write(len(chunks))

    def rename_document(self, old: str, new: str, modified: float) -> bool:
        return self.records.rename_document(old, new, modified)

    def document_layout(self, path: str) -> tuple[list[int] | None, list[Box | None] | None]:
        return self.records.document_layout(path)

    def partial_documents(self) -> list[str]:
        return self.records.partial_documents()

    def texts_to_embed(
        self, limit: int, after: int = 0
    ) -> list[tuple[int, str, str, list[str], str]]:
        return self.records.texts_to_embed(limit, after)

    def put_vectors(self, vectors: dict[str, Vectors]) -> None:
        self.records.put_vectors(vectors)
        self._after_write(len(vectors))

    def embedding_progress(self) -> tuple[int, int]:
        return self.records.embedding_progress()

    def source_names(self) -> dict[str, str]:
        return self.records.source_names()

    def remove_document(self, path: str) -> bool:
        removed = self.records.remove_document(path)
        self._after_write(1)
        return removed

    def remove_source_and_documents(self, root: str, paths: Sequence[str]) -> None:
        self.records.remove_source_and_documents(root, paths)
        self._after_write(len(paths))

    def document(self, path: str) -> DocumentInfo | None:
        return self.records.document(path)

    def documents(self) -> list[DocumentInfo]:
        return self.records.documents()

    def document_text(
        self, path: str, start: int | None = None, end: int | None = None
    ) -> str | None:
        return self.records.document_text(path, start, end)

    def add_source(
        self, path: str, include: Sequence[str], exclude: Sequence[str], given: str | None = None
    ) -> None:
        self.records.add_source(path, include, exclude, given)

    def remove_source(self, path: str) -> bool:
        return self.records.remove_source(path)

    def sources(self) -> list[tuple[str, list[str], list[str]]]:
        return self.records.sources()

    def meta_value(self, key: str) -> str | None:
        return self.records.meta_value(key)

    def set_meta_value(self, key: str, value: str) -> None:
        self.records.set_meta_value(key, value)

    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, Vectors]:
        return self.records.cached_vectors(text_hashes)

    def collect_garbage(self) -> int:
        return self.records.collect_garbage()

    def counts(self, groups: frozenset[str] | None = None) -> tuple[int, int]:
        return self.records.counts(groups)

    def size_bytes(self) -> int:
        return self.records.size_bytes() + self.index.size_bytes()

    # --- re-embedding ------------------------------------------------------------------------

    def reembedding(self) -> Reembedding | None:
        return self.records.reembedding()

    def begin_reembedding(self, name: str, dim: int) -> None:
        self.records.begin_reembedding(name, dim)

    def pending_contexts(self, limit: int) -> list[tuple[str, str, list[str], str]]:
        return self.records.pending_contexts(limit)

    def put_pending_vectors(self, vectors: dict[str, Vectors]) -> None:
        self.records.put_pending_vectors(vectors)

    def finish_reembedding(self) -> None:
        """Swap the new vectors in; the index gets an empty vector part of the new
        dimension, refilled from the change log by the next flush."""
        state = self.records.finish_reembedding()
        self.index.reset_vectors(state.dim)

    # --- access rules, grants, users -------------------------------------------------------

    def access_control(self) -> AccessControl:
        return self.records.access_control()

    def unreadable_documents(self, groups: frozenset[str]) -> set[int]:
        return self.records.unreadable_documents(groups)

    def document_groups(self) -> dict[str, list[str]]:
        return self.records.document_groups()

    def access_rules(self) -> dict[str, list[str]]:
        return self.records.access_rules()

    def set_access_rule(self, pattern: str, groups: Sequence[str]) -> None:
        with self._group_writes():
            self.records.set_access_rule(pattern, groups)

    @contextmanager
    def _group_writes(self) -> Iterator[None]:
        """An index that stores each chunk's readers gets the change at once (the
        writer's lock, then a flush), so that no search sees the old readers."""
        if not self.index.stores_groups:
            yield
            return
        with self.writing():
            yield

    def document_grants(self, path: str) -> list[str]:
        return self.records.document_grants(path)

    def set_document_grants(self, path: str, groups: Sequence[str]) -> None:
        with self._group_writes():
            self.records.set_document_grants(path, groups)

    # --- answer cache ------------------------------------------------------------------------

    def cached_answer(self, key: str) -> str | None:
        return self.records.cached_answer(key)

    def put_cached_answer(self, key: str, answer: str, content_hashes: Sequence[str]) -> None:
        self.records.put_cached_answer(key, answer, content_hashes)

    def purge_cached_answers(self) -> int:
        return self.records.purge_cached_answers()

    # --- retrieval ---------------------------------------------------------------------------

    def allowed_documents(self, filters: Filters) -> list[int] | None:
        """Document ids passing the filters (the reader's groups included), or None when
        nothing is excluded."""
        return self.records.allowed_documents(filters)

    def search_scope(self, filters: Filters | None) -> SearchScope:
        """What a search under `filters` may return, in the form the index applies inside
        its queries: the reader's groups as such if it enforces them, else folded into the
        allowed documents."""
        filters = filters or Filters()
        if self.index.enforces_groups:
            documents = self.records.allowed_documents(filters, include_groups=False)
            return SearchScope(documents, filters.groups)
        return SearchScope(self.records.allowed_documents(filters))

    def follow_writers(self) -> None:
        """Make the next search see what other processes wrote (a CLI `add` while the
        server runs): when the records' generation has moved, the index reloads. One
        record-store read otherwise."""
        if self._writing:
            return  # this process is the writer: its index is the newest
        generation = self.records.generation()
        if generation != self._followed:
            self._followed = generation
            self.index.follow()

    def keyword_search(self, query: str, limit: int, scope: SearchScope | None = None) -> ScoredIds:
        self.follow_writers()
        from sourcebook.index.analyzer import analyze  # Stemmer: for searches only

        return self.index.keyword_search(analyze(query), limit, scope)

    def vector_search(
        self, vector: Vectors, limit: int, scope: SearchScope | None = None
    ) -> ScoredIds:
        self.follow_writers()
        return self.index.vector_search(vector, limit, scope)

    def keyword_statistics(self, tokens: Sequence[str]) -> tuple[int, dict[str, int]]:
        """(number of chunks, chunks containing each token), for idf weights: from the
        records, which keep them with the chunks (one indexed read; a search index such as
        Milvus would need a query per token)."""
        return self.records.term_statistics(tokens)

    def prepare_filtered_search(self) -> None:
        self.index.prepare_filtered_search()

    def hits(self, chunk_ids: Sequence[int]) -> dict[int, SearchHit]:
        return self.records.hits(chunk_ids)

    def close(self) -> None:
        self.index.close()
        self.records.close()
