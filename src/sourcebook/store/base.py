"""The two narrow protocols behind the store, and the types they share.

- `RecordStore`: the system of record. Sources, documents, chunks with their vectors (the
  embedding cache), the change log, access rules and grants, the answer cache, and (through
  `access_control()`) users, keys and the audit log. Backends: SQLite (`sqlite.py`),
  PostgreSQL (`postgres.py`).
- `SearchIndex`: keyword (BM25) and vector search over chunk ids, with the reader's
  restrictions pushed down into the query. Derived from the records by replaying the change
  log, so it can always be rebuilt. Backends: tantivy + usearch in the knowledge base
  folder (`local_index.py`), Milvus (`milvus.py`).

`composed.KnowledgeStore` puts one of each together for the pipeline; any record store
works with any search index.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

from sourcebook.models import Box, ChunkDraft, DocumentInfo, SearchHit

if TYPE_CHECKING:  # numpy is loaded by the code that makes vectors, not by reading records
    import numpy as np
    from numpy.typing import NDArray

    from sourcebook.index.embedders import Vectors
    from sourcebook.store.access import AccessControl

SCHEMA_VERSION = 1
# the content hash of a document stored in parts until its last part is stored
PARTIAL_HASH = "partial"

# (chunk id, score), best first
ScoredIds = list[tuple[int, float]]


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


@dataclass(frozen=True)
class SearchScope:
    """The chunks a search may return, handed to the search index so that it restricts
    the query itself (never a post-filter that could leave the list short or leak).

    `documents`: the allowed document ids (None: every document); `groups`: the reader's
    groups, for an index that enforces them itself (`SearchIndex.enforces_groups`; for the
    others the record store has already folded them into `documents`)."""

    documents: Sequence[int] | None = None
    groups: frozenset[str] | None = None

    def is_nothing(self) -> bool:
        return self.documents is not None and len(self.documents) == 0


class IndexEntry(NamedTuple):
    """What the search index holds for one chunk."""

    chunk_id: int
    doc_id: int
    tokens: str  # analysed tokens, space-separated (the keyword index's input)
    vector: Vectors | None  # None while the chunk waits for its embedding
    groups: tuple[str, ...]  # who may read the chunk's document (empty: everyone)


class Reembedding(NamedTuple):
    """A re-embedding in progress: the model, and the chunk texts done out of all."""

    model: str
    dim: int
    done: int
    total: int


class ChunkLayout(NamedTuple):
    """Which document each chunk belongs to, as of one generation of the records."""

    generation: int
    chunks: NDArray[np.int64]  # every chunk id
    chunk_documents: NDArray[np.int64]  # the document of each
    documents: NDArray[np.int64]  # every document id with chunks, sorted


class Change(NamedTuple):
    """One change-log row: a chunk added ('add'), deleted ('del'), given its vector later
    ('vec'), or whose document's readers changed ('grp')."""

    seq: int
    chunk_id: int
    op: str


class RecordStore(Protocol):
    """The system of record (see the module docstring). Every write is one transaction
    that also appends to the change log and bumps the generation."""

    embedder_name: str
    dim: int
    location: str  # shown to users: a folder, or a database URL without its password
    log_group_changes: bool  # log 'grp' changes (for an index with `stores_groups`)

    # identity, settings and locking
    def meta_value(self, key: str) -> str | None: ...
    def set_meta_value(self, key: str, value: str) -> None: ...
    def write_lock(self, wait: bool = True) -> AbstractContextManager[None]: ...
    def generation(self) -> int: ...

    # sources and documents
    def add_source(
        self, path: str, include: Sequence[str], exclude: Sequence[str], given: str | None = None
    ) -> None: ...
    def source_names(self) -> dict[str, str]: ...
    def remove_source(self, path: str) -> bool: ...
    def sources(self) -> list[tuple[str, list[str], list[str]]]: ...
    def document(self, path: str) -> DocumentInfo | None: ...
    def documents(self) -> list[DocumentInfo]: ...
    def document_text(
        self, path: str, start: int | None = None, end: int | None = None
    ) -> str | None: ...
    def document_layout(self, path: str) -> tuple[list[int] | None, list[Box | None] | None]: ...
    def partial_documents(self) -> list[str]: ...
    def replace_document(
        self,
        record: DocumentRecord,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        vectors: Vectors | None = None,
    ) -> None: ...
    def append_to_document(
        self,
        path: str,
        text: str,
        first_line: int,
        chunks: Sequence[ChunkDraft],
        index_texts: Sequence[str],
        content_hash: str | None = None,
    ) -> None: ...
    def remove_document(self, path: str) -> bool: ...
    def rename_document(self, old: str, new: str, modified: float) -> bool: ...
    def remove_source_and_documents(self, root: str, paths: Sequence[str]) -> None: ...
    def hits(self, chunk_ids: Sequence[int]) -> dict[int, SearchHit]: ...
    def chunk_layout(self) -> ChunkLayout: ...
    def counts(self, groups: frozenset[str] | None = None) -> tuple[int, int]: ...

    # document frequencies (idf weights), kept with the chunks in the same transaction
    def term_statistics(self, tokens: Sequence[str]) -> tuple[int, dict[str, int]]: ...
    def term_count_problems(self) -> list[str]: ...

    # embedding cache and re-embedding
    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, Vectors]: ...
    def collect_garbage(self) -> int: ...
    def texts_to_embed(
        self, limit: int, after: int = 0
    ) -> list[tuple[int, str, str, list[str], str]]: ...
    def put_vectors(self, vectors: dict[str, Vectors]) -> None: ...
    def embedding_progress(self) -> tuple[int, int]: ...
    def embedded_chunk_ids(self) -> set[int]: ...
    def reembedding(self) -> Reembedding | None: ...
    def begin_reembedding(self, name: str, dim: int) -> None: ...
    def pending_contexts(self, limit: int) -> list[tuple[str, str, list[str], str]]: ...
    def put_pending_vectors(self, vectors: dict[str, Vectors]) -> None: ...
    def finish_reembedding(self) -> Reembedding: ...

    # change log (what the search index has not applied yet)
    def last_seq(self) -> int: ...
    def changes_since(self, seq: int) -> list[Change]: ...
    def index_entries(self, chunk_ids: Sequence[int]) -> list[IndexEntry]: ...
    def trim_log(self, seq: int) -> None: ...
    def chunk_ids(self) -> set[int]: ...

    # access rules and grants
    def allowed_documents(
        self, filters: Filters, include_groups: bool = True
    ) -> list[int] | None: ...
    def unreadable_documents(self, groups: frozenset[str]) -> set[int]: ...
    def document_groups(self) -> dict[str, list[str]]: ...
    def access_rules(self) -> dict[str, list[str]]: ...
    def set_access_rule(self, pattern: str, groups: Sequence[str]) -> None: ...
    def document_grants(self, path: str) -> list[str]: ...
    def set_document_grants(self, path: str, groups: Sequence[str]) -> None: ...
    def access_control(self) -> AccessControl: ...

    # answer cache
    def cached_answer(self, key: str) -> str | None: ...
    def put_cached_answer(self, key: str, answer: str, content_hashes: Sequence[str]) -> None: ...
    def purge_cached_answers(self) -> int: ...

    def size_bytes(self) -> int: ...
    def close(self) -> None: ...


class SearchIndex(Protocol):
    """Keyword and vector search over chunk ids (see the module docstring).

    Writes are applied from the change log and made durable by `commit(seq)`, which also
    records `seq` as the index's watermark: after a crash the store replays the log from
    `watermark()` on, so every write here must be idempotent."""

    # whether searches apply `SearchScope.groups` themselves (else the record store folds
    # the reader's groups into `SearchScope.documents`)
    enforces_groups: bool
    # whether the index wants 'grp' changes (a document's readers changed) re-applied
    stores_groups: bool
    # whether a chunk without its vector yet is keyword-searchable (else it enters the
    # index with its vector)
    keyword_without_vector: bool

    def watermark(self) -> int: ...
    def upsert(self, entries: Sequence[IndexEntry]) -> None: ...
    def delete(self, chunk_ids: Sequence[int]) -> None: ...
    def commit(self, seq: int) -> None: ...
    def reset_vectors(self, dim: int) -> None: ...
    def follow(self) -> None: ...

    def keyword_search(
        self, tokens: Sequence[str], limit: int, scope: SearchScope | None = None
    ) -> ScoredIds: ...
    def vector_search(
        self, vector: Vectors, limit: int, scope: SearchScope | None = None
    ) -> ScoredIds: ...
    def prepare_filtered_search(self) -> None: ...

    def sizes(self) -> tuple[int, int]: ...
    def ids(self) -> tuple[set[int], set[int]]: ...
    def size_bytes(self) -> int: ...
    def close(self) -> None: ...


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def glob_match(path: str, pattern: str) -> bool:
    """Match a stored path against a glob; a pattern without '/' matches file names too."""
    if fnmatch.fnmatch(path, pattern):
        return True
    if "/" not in pattern:
        return fnmatch.fnmatch(os.path.basename(path), pattern)
    return fnmatch.fnmatch(path, "*/" + pattern.lstrip("/"))


def line_range(text: str, start: int, end: int) -> str:
    """Lines start..end (1-based, inclusive) of `text`, clipped to the lines it has."""
    lines = text.split("\n")
    return "\n".join(lines[max(1, start) - 1 : max(0, min(len(lines), end))])


def page_range(pages: list[int] | None, chunk: ChunkDraft) -> tuple[int | None, int | None]:
    if not pages:
        return None, None
    first = pages[min(chunk.line_start, len(pages)) - 1]
    last = pages[min(chunk.line_end, len(pages)) - 1]
    return first, last


T = TypeVar("T")


def batched(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
