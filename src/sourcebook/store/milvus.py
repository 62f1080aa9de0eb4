"""The Milvus search index (extra `sourcebook[milvus]`: pymilvus, and milvus-lite for the
embedded engine): dense vectors and BM25 in one collection, on a Milvus server or cluster,
or on Milvus Lite (a path) with the same client code.

One collection per knowledge base (`sourcebook_chunks` unless named in the URI), one row
per chunk:

    chunk_id  INT64 primary key        doc_id  INT64, the partition key
    groups    ARRAY<VARCHAR>           who may read the chunk's document (empty: everyone)
    tokens    VARCHAR                  our analysed tokens (see below); BM25 function ->
    sparse    SPARSE_FLOAT_VECTOR      BM25 index (k1 1.2, b 0.75, as tantivy)
    vector    FLOAT_VECTOR             cosine, HNSW

Keyword search is BM25 over the tokens our analyser made (jieba for Chinese, stemming for
English: the same tokens tantivy indexes), so both backends rank the same way. Milvus's
`whitespace` tokenizer splits them as they are; where it is missing (Milvus Lite has
`standard` and `jieba` only) characters that `standard` would split on inside a token
(`gpt-4o`, `3.14`) are spelled as word characters first.

Restrictions are filter expressions inside each query, never post-filters: the allowed
documents as `doc_id in [...]`, the reader's groups as
`array_length(groups) == 0 or array_contains_any(groups, [...])` (the ACL is enforced by
Milvus). A document's readers change with the access rules: the record store logs a
'grp' change for its chunks and the flush re-writes their rows.

The index's watermark (how far it has applied the change log) is a row of a second
collection, written after `flush()` has made the chunk rows durable.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sourcebook.faults import crash_point
from sourcebook.index.embedders import Vectors
from sourcebook.store.base import IndexEntry, ScoredIds, SearchScope, StoreError

DEFAULT_COLLECTION = "sourcebook_chunks"
_STATE_SUFFIX = "_state"
_NON_WORD = re.compile(r"[^\w]")
MAX_TOKENS_BYTES = 65_535
# pymilvus pings every 10 s even when idle; Milvus Lite's gRPC server (Python's defaults)
# answers pings more often than every 5 minutes with "too many pings" and drops the
# connection. Ping only during calls, and rarely: an idle server stays connected.
_GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 300_000,
    "grpc.keepalive_permit_without_calls": False,
}
# Milvus returns at most this many rows per query page
_PAGE = 10_000


def encode_tokens(tokens: str) -> str:
    """Our space-separated tokens, with characters a word tokenizer would split on
    inside a token spelled as word characters (`k-2` -> `k_x2d_2`)."""
    if not _NON_WORD.search(tokens.replace(" ", "")):
        return tokens
    return " ".join(
        _NON_WORD.sub(lambda m: f"_x{ord(m.group()):x}_", token) for token in tokens.split(" ")
    )


def parse_uri(uri: str, kb_folder: Path | None = None) -> tuple[str, str]:
    """(the pymilvus URI, the collection name) for a `SOURCEBOOK_SEARCH_URI`:
    `milvus://host:port[/collection]`, `http(s)://host:port[/collection]`, or a Milvus
    Lite path (a `.db` folder, relative paths to the knowledge base folder)."""
    for scheme, replacement in (("milvus://", "http://"), ("milvus+https://", "https://")):
        if uri.startswith(scheme):
            uri = replacement + uri[len(scheme) :]
    if uri.startswith(("http://", "https://")):
        head, _, collection = uri.partition("//")[2].partition("/")
        scheme = uri.partition("//")[0]
        return f"{scheme}//{head}", collection.strip("/") or DEFAULT_COLLECTION
    path = Path(uri.removeprefix("milvus-lite:"))
    if not path.is_absolute() and kb_folder is not None:
        path = kb_folder / path
    if path.suffix != ".db":
        path = path / "milvus.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path), DEFAULT_COLLECTION


def _client(uri: str) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise StoreError(
            "a Milvus search index needs its client: pip install 'sourcebook[milvus]'"
        ) from exc
    try:
        return MilvusClient(uri, grpc_options=_GRPC_OPTIONS)
    except Exception as exc:  # pymilvus raises many kinds; say which URI failed
        raise StoreError(
            f"cannot connect to Milvus at {uri}: {exc}; check SOURCEBOOK_SEARCH_URI (a "
            "Milvus Lite folder serves one process: several servers need a Milvus server)"
        ) from exc


class MilvusSearchIndex:
    """Keyword + vector search in one Milvus collection. See the module docstring."""

    enforces_groups = True
    stores_groups = True
    # a row holds the vector: a chunk enters with its embedding (seconds after it is
    # stored, by the background embedder), keyword and vector search at once
    keyword_without_vector = False

    def __init__(self, uri: str, dim: int, collection: str = DEFAULT_COLLECTION) -> None:
        self.uri = uri
        self._client = _client(uri)
        self._collection = collection
        self._state = collection + _STATE_SUFFIX
        self._dim = dim
        self._encode = False
        self._ensure_collections()

    # --- collections -----------------------------------------------------------------------

    def _ensure_collections(self) -> None:
        if not self._client.has_collection(self._collection):
            self._create_chunks()
        fields = self._client.describe_collection(self._collection)["fields"]
        tokens = next(f for f in fields if f["name"] == "tokens")
        analyzer = tokens.get("params", {}).get("analyzer_params", {})
        if isinstance(analyzer, str):
            analyzer = json.loads(analyzer)
        self._encode = analyzer.get("tokenizer") != "whitespace"
        vector = next(f for f in fields if f["name"] == "vector")
        stored_dim = int(vector.get("params", {}).get("dim", self._dim))
        if stored_dim != self._dim:
            raise StoreError(
                f"the Milvus collection {self._collection} holds vectors of {stored_dim} "
                f"dimensions, not {self._dim}: run `sourcebook reindex` or name another "
                "collection in SOURCEBOOK_SEARCH_URI"
            )
        if not self._client.has_collection(self._state):
            from pymilvus import DataType

            schema = self._client.create_schema(auto_id=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("value", DataType.INT64)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
            index = self._client.prepare_index_params()
            index.add_index("unused", index_type="FLAT", metric_type="L2")
            self._client.create_collection(
                self._state, schema=schema, index_params=index, consistency_level="Strong"
            )

    def _create_chunks(self) -> None:
        from pymilvus import DataType, Function, FunctionType
        from pymilvus.exceptions import MilvusException

        for tokenizer in ("whitespace", "standard"):
            schema = self._client.create_schema(auto_id=False)
            schema.add_field("chunk_id", DataType.INT64, is_primary=True)
            schema.add_field("doc_id", DataType.INT64, is_partition_key=True)
            schema.add_field(
                "groups",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=256,
                max_length=64,
            )
            schema.add_field(
                "tokens",
                DataType.VARCHAR,
                max_length=MAX_TOKENS_BYTES,
                enable_analyzer=True,
                enable_match=True,
                analyzer_params={"tokenizer": tokenizer},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["tokens"],
                    output_field_names=["sparse"],
                )
            )
            index = self._client.prepare_index_params()
            index.add_index(
                "vector",
                index_type="HNSW",
                metric_type="COSINE",
                params={"M": 16, "efConstruction": 128},
            )
            index.add_index(
                "sparse",
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
                params={"bm25_k1": 1.2, "bm25_b": 0.75},
            )
            try:
                with _quiet("pymilvus"):  # it logs the refusal we expect from Milvus Lite
                    self._client.create_collection(
                        self._collection,
                        schema=schema,
                        index_params=index,
                        consistency_level="Strong",  # a write is searchable at once
                    )
                return
            except MilvusException as exc:
                if tokenizer == "standard" or "tokenizer" not in str(exc):
                    raise

    # --- writes (from the change log) ----------------------------------------------------

    def watermark(self) -> int:
        rows = self._client.get(self._state, ids=["watermark"], output_fields=["value"])
        return int(rows[0]["value"]) if rows else 0

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "chunk_id": entry.chunk_id,
                "doc_id": entry.doc_id,
                "groups": list(entry.groups),
                "tokens": self._tokens(entry.tokens),
                "vector": np.asarray(entry.vector, dtype=np.float32).tolist(),
            }
            for entry in entries
            if entry.vector is not None
        ]
        for start in range(0, len(rows), 500):
            self._client.upsert(self._collection, rows[start : start + 500])

    def _tokens(self, tokens: str) -> str:
        text = encode_tokens(tokens) if self._encode else tokens
        encoded = text.encode("utf-8")
        if len(encoded) > MAX_TOKENS_BYTES:  # a VARCHAR's limit; chunks are far smaller
            text = encoded[:MAX_TOKENS_BYTES].decode("utf-8", "ignore").rpartition(" ")[0]
        return text

    def delete(self, chunk_ids: Sequence[int]) -> None:
        ids = [int(c) for c in chunk_ids]
        for start in range(0, len(ids), 5_000):
            self._client.delete(self._collection, ids=ids[start : start + 5_000])

    def commit(self, seq: int) -> None:
        """Make the applied rows durable (`flush`), then record `seq` as the watermark."""
        self._client.flush(self._collection)
        crash_point("milvus.flushed")
        self._client.upsert(self._state, [{"key": "watermark", "value": seq, "unused": [0, 0]}])
        self._client.flush(self._state)

    def reset_vectors(self, dim: int) -> None:
        """A new embedding model: a new, empty collection of its dimension (the flush that
        follows re-writes every chunk from the change log)."""
        self._client.drop_collection(self._collection)
        self._client.upsert(self._state, [{"key": "watermark", "value": 0, "unused": [0, 0]}])
        self._dim = dim
        self._ensure_collections()

    def follow(self) -> None:
        """Nothing to reload: every process queries the same Milvus."""

    # --- searches ----------------------------------------------------------------------------

    def keyword_search(
        self, tokens: Sequence[str], limit: int, scope: SearchScope | None = None
    ) -> ScoredIds:
        terms = list(dict.fromkeys(tokens))
        if not terms or limit <= 0 or (scope is not None and scope.is_nothing()):
            return []
        query = self._tokens(" ".join(terms))
        return self._search(query, "sparse", {"metric_type": "BM25"}, limit, scope)

    def vector_search(
        self, vector: Vectors, limit: int, scope: SearchScope | None = None
    ) -> ScoredIds:
        if limit <= 0 or (scope is not None and scope.is_nothing()):
            return []
        query = np.asarray(vector, dtype=np.float32).tolist()
        params = {"metric_type": "COSINE", "params": {"ef": max(128, limit)}}
        return self._search(query, "vector", params, limit, scope)

    def _search(
        self,
        query: object,
        field: str,
        params: Mapping[str, object],
        limit: int,
        scope: SearchScope | None,
    ) -> ScoredIds:
        found = self._client.search(
            self._collection,
            data=[query],
            anns_field=field,
            limit=min(limit, 16_384),
            filter=filter_expression(scope),
            search_params=params,
            output_fields=["chunk_id"],
        )
        # Milvus Lite reports BM25 scores negated (smaller is better); both sort best first
        return [(int(hit["chunk_id"]), abs(float(hit["distance"]))) for hit in found[0]]

    def _count(self, expression: str) -> int:
        rows = self._client.query(self._collection, filter=expression, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def prepare_filtered_search(self) -> None:
        """Nothing to prepare: Milvus filters inside its own search."""

    # --- status --------------------------------------------------------------------------------

    def sizes(self) -> tuple[int, int]:
        count = self._count("")
        return count, count  # one row holds both the keyword and the vector entry

    def ids(self) -> tuple[set[int], set[int]]:
        found: set[int] = set()
        iterator = self._client.query_iterator(
            self._collection, batch_size=_PAGE, filter="", output_fields=["chunk_id"]
        )
        while page := iterator.next():
            found.update(int(row["chunk_id"]) for row in page)
        iterator.close()
        return found, set(found)

    def size_bytes(self) -> int:
        path = Path(self.uri)
        if path.suffix == ".db" and path.exists():  # Milvus Lite: its folder
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return 0  # a server's storage is not ours to measure

    def close(self) -> None:
        self._client.close()


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def filter_expression(scope: SearchScope | None) -> str:
    """The restriction of `scope` as a Milvus boolean expression ('' for none). Group
    names are checked at creation (letters, digits, `._@-`): quoting them as JSON strings
    is safe."""
    if scope is None:
        return ""
    parts = []
    if scope.documents is not None:
        parts.append(f"doc_id in [{','.join(str(int(d)) for d in scope.documents)}]")
    if scope.groups is not None:
        groups = json.dumps(sorted(scope.groups), ensure_ascii=False)
        parts.append(f"(array_length(groups) == 0 or array_contains_any(groups, {groups}))")
    return " and ".join(parts)
