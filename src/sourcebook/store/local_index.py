"""The embedded search index: tantivy (BM25) + usearch (vectors) in the knowledge base
folder, nothing to install or run.

    kb/bm25/                tantivy index over analysed tokens, with its watermark
    kb/vectors.usearch      usearch index (cosine; exact below a size, HNSW above), with
                            its watermark in vectors.usearch.state.json

The reader's groups are not stored here: the record store folds them into the allowed
document ids (`SearchScope.documents`), which both searches apply inside the query (a
tantivy term-set clause; the vector search scores only the chunks of those documents).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sourcebook.faults import crash_point
from sourcebook.store.base import ChunkLayout, IndexEntry, ScoredIds, SearchScope
from sourcebook.store.watermarks import keyword_watermark, vector_watermark

if TYPE_CHECKING:  # tantivy, usearch and numpy load when an index is opened (`indexes.py`)
    from sourcebook.index.embedders import Vectors
    from sourcebook.store.indexes import KeywordIndex, VectorIndex


class LocalSearchIndex:
    """tantivy + usearch under `folder`. See the module docstring."""

    enforces_groups = False
    stores_groups = False
    keyword_without_vector = True

    def __init__(
        self,
        folder: Path,
        dim: int,
        layout: Callable[[], ChunkLayout],
        exact_vector_search_below: int = 20_000,
    ) -> None:
        """`layout` tells which document each chunk belongs to (the record store's
        `chunk_layout`, cached per generation): a vector search restricted to some
        documents scores the chunks of those."""
        self.folder = folder
        self._layout = layout
        self._dim = dim
        self._exact_below = exact_vector_search_below
        # the indexes open on first use: reading records and counts (`status`) needs
        # neither; until then their watermarks are read from their state files
        self._keyword_index: KeywordIndex | None = None
        self._vector_index: VectorIndex | None = None
        self._opening = threading.Lock()

    @property
    def _keyword(self) -> KeywordIndex:
        with self._opening:
            if self._keyword_index is None:
                from sourcebook.store.indexes import KeywordIndex

                self._keyword_index = KeywordIndex(self.folder / "bm25")
            return self._keyword_index

    @property
    def _vectors(self) -> VectorIndex:
        with self._opening:
            if self._vector_index is None:
                from sourcebook.store.indexes import VectorIndex

                path = self.folder / "vectors.usearch"
                self._vector_index = VectorIndex(path, self._dim, self._exact_below)
            return self._vector_index

    def watermark(self) -> int:
        """The change-log position both indexes have durably applied."""
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
        return min(keyword, vector)

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        import numpy as np

        for entry in entries:
            self._keyword.upsert(entry.chunk_id, entry.doc_id, entry.tokens)
        embedded = [e for e in entries if e.vector is not None]
        if embedded:
            self._vectors.upsert(
                [e.chunk_id for e in embedded],
                np.vstack([e.vector for e in embedded if e.vector is not None]),
            )

    def delete(self, chunk_ids: Sequence[int]) -> None:
        for chunk_id in chunk_ids:
            self._keyword.delete(chunk_id)
        self._vectors.delete(chunk_ids)

    def commit(self, seq: int) -> None:
        self._keyword.commit(seq)
        crash_point("flush.keyword")
        self._vectors.commit(seq)
        crash_point("flush.vectors")

    def reset_vectors(self, dim: int) -> None:
        """A new embedding model: an empty vector index of its dimension (refilled from
        the change log by the flush that follows)."""
        from sourcebook.store.indexes import VectorIndex

        self._dim = dim
        with self._opening:
            path = self.folder / "vectors.usearch"
            self._vector_index = VectorIndex(path, dim, self._exact_below)
        self._vector_index.clear()

    def follow(self) -> None:
        """See what another process committed (its generation moved); an index not
        opened yet opens the newest files when it is."""
        if self._keyword_index is not None:
            self._keyword_index.reload()
        if self._vector_index is not None:
            self._vector_index.follow()

    def keyword_search(
        self, tokens: Sequence[str], limit: int, scope: SearchScope | None = None
    ) -> ScoredIds:
        documents = None if scope is None else scope.documents
        return self._keyword.search(tokens, limit, documents)

    def vector_search(
        self, vector: Vectors, limit: int, scope: SearchScope | None = None
    ) -> ScoredIds:
        if scope is None or scope.documents is None:
            return self._vectors.search(vector, limit)
        import numpy as np

        layout = self._layout()
        wanted = np.asarray(scope.documents, dtype=np.int64)
        keys = layout.chunks[np.isin(layout.chunk_documents, wanted)]
        return self._vectors.search(vector, limit, keys)

    def prepare_filtered_search(self) -> None:
        """Build what searches restricted to some documents use (a reader's groups, a
        path filter) before the first one needs it."""
        self._layout()
        self._vectors.prepare_filtered_search()

    def sizes(self) -> tuple[int, int]:
        return len(self._keyword), len(self._vectors)

    def ids(self) -> tuple[set[int], set[int]]:
        return self._keyword.ids(), self._vectors.ids()

    def size_bytes(self) -> int:
        files = [*(self.folder / "bm25").rglob("*"), *self.folder.glob("vectors.usearch*")]
        return sum(f.stat().st_size for f in files if f.is_file())

    def close(self) -> None:
        """Nothing to release: tantivy and usearch hold no connection."""
