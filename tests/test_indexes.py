"""The derived indexes: idempotent updates, and filters that never leave a list short."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sourcebook.indexes import KeywordIndex, VectorIndex


def clustered(count: int, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(20, dim))
    points = centers[rng.integers(0, 20, count)] + 0.3 * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_broad_filter_on_the_graph_matches_exact_search(tmp_path: Path) -> None:
    vectors = clustered(12_000)
    keys = list(range(1, 12_001))
    graph = VectorIndex(tmp_path / "graph.usearch", 32, exact_below=2_000)
    exact = VectorIndex(tmp_path / "exact.usearch", 32, exact_below=10**9)
    graph.upsert(keys, vectors)
    exact.upsert(keys, vectors)
    allowed = keys[::3]
    for query in vectors[:20]:
        found = graph.search(query, 10, allowed)
        expected = exact.search(query, 10, allowed)
        assert len(found) == 10 and all(k % 3 == 1 for k, _ in found)
        assert len({k for k, _ in found} & {k for k, _ in expected}) >= 9


def test_narrow_filter_is_never_short(tmp_path: Path) -> None:
    vectors = clustered(5_000)
    index = VectorIndex(tmp_path / "v.usearch", 32, exact_below=1_000)
    index.upsert(list(range(1, 5_001)), vectors)
    assert len(index.search(vectors[0], 10, [4_999, 5_000])) == 2


def test_keyword_upsert_is_idempotent_and_persists(tmp_path: Path) -> None:
    index = KeywordIndex(tmp_path / "bm25")
    index.upsert(1, 10, "lora 低 秩 显存")
    index.upsert(1, 10, "lora 低 秩 显存")  # replayed after a crash
    index.upsert(2, 11, "adam beta")
    index.commit(7)
    reopened = KeywordIndex(tmp_path / "bm25")
    assert len(reopened) == 2 and reopened.watermark == 7
    assert [cid for cid, _ in reopened.search(["lora"], 5)] == [1]
    assert reopened.search(["lora"], 5, doc_ids=[11]) == []
