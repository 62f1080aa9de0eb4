"""The two derived search indexes of the embedded store.

Both are rebuilt-able caches of what SQLite holds: each remembers the last change-log
sequence number it has applied (its watermark), so after a crash the store replays only the
changes an index has not seen. Every operation here is idempotent for that reason.

- `KeywordIndex`: BM25 over pre-analysed tokens (see `analyzer`), in tantivy.
- `VectorIndex`: cosine similarity in usearch; exact scan below a size threshold,
  HNSW above it.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tantivy
from numpy.typing import NDArray

# the system libstdc++ must be loaded before usearch is (see its docstring); an import
# inside `_usearch_index` would be sorted after usearch's by the import sorter
from sourcebook import _cxx_runtime  # noqa: F401
from sourcebook.faults import crash_point
from sourcebook.index.embedders import Vectors
from sourcebook.store.watermarks import (
    KEYWORD_STATE,
    read_watermark,
    vector_state,
    write_watermark,
)

if TYPE_CHECKING:
    from usearch.index import Index

ScoredIds = list[tuple[int, float]]


def _usearch_index() -> type[Index]:
    """usearch's Index class, imported on first use (a command that only reads the
    store's records, such as `status`, never loads it)."""
    # the system C++ runtime first (see `_cxx_runtime`): usearch loaded before it makes
    # ONNX Runtime crash when it is imported later in the process. A statement, not an
    # import, so that import sorting cannot move it after usearch again.
    importlib.import_module("sourcebook._cxx_runtime")
    from usearch.index import Index

    return Index


class KeywordIndex:
    """BM25 (tantivy's Okapi, k1=1.2, b=0.75) over whitespace-joined analysed tokens."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        builder = tantivy.SchemaBuilder()
        builder.add_unsigned_field("chunk_id", stored=True, indexed=True, fast=True)
        builder.add_unsigned_field("doc_id", indexed=True, fast=True)
        builder.add_text_field("tokens", tokenizer_name="whitespace", index_option="freq")
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema, path=str(folder), reuse=True)
        self._state = folder / KEYWORD_STATE
        self._writer: tantivy.IndexWriter | None = None

    @property
    def watermark(self) -> int:
        return read_watermark(self._state)

    def upsert(self, chunk_id: int, doc_id: int, tokens: str) -> None:
        self.delete(chunk_id)
        writer = self._get_writer()
        document = tantivy.Document()
        document.add_unsigned("chunk_id", chunk_id)
        document.add_unsigned("doc_id", doc_id)
        document.add_text("tokens", tokens)
        writer.add_document(document)

    def delete(self, chunk_id: int) -> None:
        # by query: tantivy-py's delete-by-term does not match unsigned fields
        term = tantivy.Query.term_query(self._schema, "chunk_id", chunk_id)
        self._get_writer().delete_documents_by_query(term)

    def reload(self) -> None:
        """See what another process has committed since (a reader's next search)."""
        self._index.reload()

    def commit(self, watermark: int) -> None:
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()
            self._writer = None
            crash_point("keyword.committed")
        write_watermark(self._state, watermark)
        self._index.reload()

    def clear(self) -> None:
        self._get_writer().delete_all_documents()

    def search(
        self, tokens: Sequence[str], limit: int, doc_ids: Collection[int] | None = None
    ) -> ScoredIds:
        terms = list(dict.fromkeys(tokens))
        if not terms or limit <= 0:
            return []
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "tokens", term))
                for term in terms
            ]
        )
        if doc_ids is not None:
            if not doc_ids:
                return []
            allowed = tantivy.Query.const_score_query(
                tantivy.Query.term_set_query(self._schema, "doc_id", list(doc_ids)), 0.0
            )
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query), (tantivy.Occur.Must, allowed)]
            )
        searcher = self._index.searcher()
        result = searcher.search(query, limit, count=False)
        return [
            (int(searcher.doc(address)["chunk_id"][0]), float(score))
            for score, address in result.hits
        ]

    def ids(self) -> set[int]:
        """Every chunk id in the index (for consistency checks, not for queries)."""
        searcher = self._index.searcher()
        if searcher.num_docs == 0:
            return set()
        result = searcher.search(tantivy.Query.all_query(), searcher.num_docs, count=False)
        return {int(searcher.doc(address)["chunk_id"][0]) for _, address in result.hits}

    def __len__(self) -> int:
        return int(self._index.searcher().num_docs)

    def _get_writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self._index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer


# chunk ids to search among (a plain sequence or a numpy array of them)
Keys = Sequence[int] | NDArray[np.int64]

# Largest index whose vectors a broad filtered search copies into memory as float32
# (~150 MB for 100k vectors of 384 dimensions); larger ones search the graph and widen.
MATRIX_MAX = 200_000


class VectorIndex:
    """Cosine search over chunk vectors, persisted as one usearch file.

    Opened memory-mapped (cheap for read-only commands) and loaded into memory the first
    time it is modified.
    """

    def __init__(
        self, path: Path, dim: int, exact_below: int = 20_000, matrix_max: int = MATRIX_MAX
    ) -> None:
        self._path = path
        self._state = vector_state(path)
        self._dim = dim
        self._exact_below = exact_below
        self._matrix_max = matrix_max
        self._writable = False
        self._dirty = False
        self._index = self._open(view=True)
        # (keys sorted, unit vectors as float32 rows): built by the first broad filtered
        # search, dropped by any change to the index
        self._matrix: tuple[NDArray[np.uint64], Vectors] | None = None
        self._matrix_lock = threading.Lock()

    @property
    def watermark(self) -> int:
        return read_watermark(self._state) if self._path.exists() else 0

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def follow(self) -> None:
        """Reopen the file if another process has replaced it (a writer saves to a new
        file and renames it over the old one, so a memory-mapped reader would otherwise
        keep searching the old vectors forever). Not while this process writes."""
        if self._dirty or self._file_identity() == self._opened:
            return
        self._writable = False  # _open makes a new, writable index if there is no file
        self._index = self._open(view=True)
        self._matrix = None

    def _open(self, view: bool) -> Index:
        self._opened = self._file_identity()
        if self._path.exists():
            restored = _usearch_index().restore(str(self._path), view=view)
            if restored is not None and restored.ndim == self._dim:
                return restored
        self._writable = True
        return _usearch_index()(
            ndim=self._dim,
            metric="cos",
            dtype="f16",
            connectivity=16,
            expansion_add=128,
            expansion_search=128,
        )

    def _make_writable(self) -> Index:
        self._matrix = None  # the caller is about to change the index
        if not self._writable:
            self._index = self._open(view=False)
            self._writable = True
        return self._index

    def upsert(self, keys: Sequence[int], vectors: Vectors) -> None:
        if not keys:
            return
        index = self._make_writable()
        for key in keys:
            if index.contains(key):
                index.remove(key)
        index.add(np.asarray(keys, dtype=np.uint64), vectors)
        self._dirty = True

    def delete(self, keys: Sequence[int]) -> None:
        index = self._make_writable()
        for key in keys:
            if index.contains(key):
                index.remove(key)
                self._dirty = True

    def clear(self) -> None:
        self._matrix = None
        self._index = _usearch_index()(
            ndim=self._dim,
            metric="cos",
            dtype="f16",
            connectivity=16,
            expansion_add=128,
            expansion_search=128,
        )
        self._writable = True
        self._dirty = True

    def commit(self, watermark: int) -> None:
        # an empty index is saved too: the watermark counts only with the file beside it
        if self._dirty or not self._path.exists():
            tmp = self._path.with_suffix(".tmp")
            self._index.save(str(tmp))
            crash_point("vectors.saved")
            os.replace(tmp, self._path)
            self._dirty = False
        write_watermark(self._state, watermark)

    def search(self, query: Vectors, limit: int, keys: Keys | None = None) -> ScoredIds:
        """Top `limit` by cosine; with `keys`, only among those chunks (scored exactly)."""
        size = len(self._index)
        if size == 0 or limit <= 0:
            return []
        if keys is not None:
            return self._search_subset(query, limit, keys)
        matches = self._index.search(query, min(limit, size), exact=size < self._exact_below)
        return [
            (int(k), 1.0 - float(d)) for k, d in zip(matches.keys, matches.distances, strict=True)
        ]

    def _search_subset(self, query: Vectors, limit: int, keys: Keys) -> ScoredIds:
        size = len(self._index)
        if len(keys) >= self._exact_below and size >= self._exact_below:
            if size <= self._matrix_max:
                return self._search_matrix(query, limit, keys)
            return self._search_graph_filtered(query, limit, {int(k) for k in keys})
        present = [int(k) for k in keys if self._index.contains(int(k))]
        if not present:
            return []
        matrix = np.asarray(self._index.get(np.asarray(present, dtype=np.uint64)), dtype=np.float32)
        scores = matrix @ query / np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
        top = np.argsort(-scores)[:limit]
        return [(int(present[i]), float(scores[i])) for i in top]

    def _search_matrix(self, query: Vectors, limit: int, keys: Keys) -> ScoredIds:
        """A broad filter: score every vector exactly (one matrix product, ~10 ms for 100k
        vectors of 384 dimensions) and keep the allowed ones. The graph cannot do this
        cheaply when the filter excludes what the query is nearest to (a reader who may not
        read the Chinese notes asking in Chinese): it must widen to most of the index."""
        sorted_keys, matrix = self._in_memory()
        wanted = np.asarray(keys, dtype=np.uint64)
        rows = np.searchsorted(sorted_keys, wanted).clip(0, len(sorted_keys) - 1)
        rows = rows[sorted_keys[rows] == wanted]  # keys not in the index drop out
        scores = (matrix @ query)[rows]  # cheaper than gathering the allowed rows first
        if len(scores) > limit:  # the best `limit` without sorting all of them
            best = np.argpartition(-scores, limit - 1)[:limit]
        else:
            best = np.arange(len(scores))
        best = best[np.argsort(-scores[best])]
        return [(int(sorted_keys[rows[i]]), float(scores[i])) for i in best]

    def prepare_filtered_search(self) -> None:
        """Copy the vectors into memory now if broad filtered searches will use them, so
        that the first such search does not wait ~1 s (100k vectors) for it."""
        if self._exact_below <= len(self._index) <= self._matrix_max:
            self._in_memory()

    def _in_memory(self) -> tuple[NDArray[np.uint64], Vectors]:
        with self._matrix_lock:  # concurrent first searches build it once
            if self._matrix is None:
                all_keys = np.asarray(self._index.keys, dtype=np.uint64)
                vectors = np.asarray(self._index.vectors, dtype=np.float32)
                vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                order = np.argsort(all_keys)
                self._matrix = (all_keys[order], vectors[order])
            return self._matrix

    def _search_graph_filtered(self, query: Vectors, limit: int, allowed: set[int]) -> ScoredIds:
        """A broad filter on an index too large for `_search_matrix`: search the graph for
        more neighbours than needed, keep the allowed ones, and widen the search until
        `limit` of them are found (or every vector has been seen), so the filter never
        leaves the list short."""
        size = len(self._index)
        count = min(size, limit * max(2, 2 * size // max(1, len(allowed))))
        while True:
            matches = self._index.search(query, count)
            found = [
                (int(k), 1.0 - float(d))
                for k, d in zip(matches.keys, matches.distances, strict=True)
                if int(k) in allowed
            ]
            if len(found) >= limit or count >= size:
                return found[:limit]
            count = min(size, count * 4)

    def ids(self) -> set[int]:
        """Every chunk id in the index (for consistency checks)."""
        return {int(k) for k in self._index.keys} if len(self._index) else set()

    def __len__(self) -> int:
        return len(self._index)
