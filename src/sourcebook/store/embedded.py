"""The embedded store, the default: one folder, nothing to install or run.

    kb/sourcebook.db        SQLite (WAL): the record store (`sqlite.py`)
    kb/bm25/                tantivy index: BM25 over analysed tokens (`local_index.py`)
    kb/vectors.usearch      usearch index: cosine / HNSW (`local_index.py`)
    kb/write.lock           held by the one process that writes

See `composed.py` for how the change log keeps records and indexes consistent after a
crash. The names the rest of the code imported from here before the store was split into
a record store and a search index (`Filters`, `StoreError`, …) are re-exported.
"""

from __future__ import annotations

from pathlib import Path

from sourcebook.store.base import (
    ChunkLayout,
    DocumentRecord,
    Filters,
    Reembedding,
    ScoredIds,
    SearchScope,
    StoreError,
    restricted,
    text_hash,
)
from sourcebook.store.composed import KnowledgeStore
from sourcebook.store.local_index import LocalSearchIndex
from sourcebook.store.sqlite import SQLiteRecords

# what the retriever searches: any composed store
Store = KnowledgeStore

__all__ = [
    "ChunkLayout",
    "DocumentRecord",
    "EmbeddedStore",
    "Filters",
    "Reembedding",
    "ScoredIds",
    "SearchScope",
    "Store",
    "StoreError",
    "restricted",
    "text_hash",
]


class EmbeddedStore(KnowledgeStore):
    """SQLite records + tantivy/usearch index in one folder."""

    def __init__(
        self,
        folder: Path,
        model: tuple[str, int] | None = None,
        create: bool = False,
        exact_vector_search_below: int = 20_000,
    ) -> None:
        """Open (or with `create`, make) the store in `folder`. `model` is the (name,
        dimension) of the embedder the caller wants; None means "whatever the knowledge
        base was built with"."""
        records = SQLiteRecords(folder, model, create)
        index = LocalSearchIndex(
            folder, records.dim, records.chunk_layout, exact_vector_search_below
        )
        super().__init__(folder, records, index)
