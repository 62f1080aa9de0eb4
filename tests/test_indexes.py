"""The derived indexes: idempotent updates, and filters that never leave a list short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sourcebook.store.indexes import MATRIX_MAX, KeywordIndex, VectorIndex


def clustered(count: int, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(20, dim))
    points = centers[rng.integers(0, 20, count)] + 0.3 * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("in_memory", [True, False], ids=["matrix", "graph"])
def test_broad_filter_matches_exact_search(tmp_path: Path, in_memory: bool) -> None:
    vectors = clustered(12_000)
    keys = list(range(1, 12_001))
    matrix_max = MATRIX_MAX if in_memory else 0
    index = VectorIndex(tmp_path / "v.usearch", 32, exact_below=2_000, matrix_max=matrix_max)
    exact = VectorIndex(tmp_path / "exact.usearch", 32, exact_below=10**9)
    index.upsert(keys, vectors)
    exact.upsert(keys, vectors)
    allowed = keys[::3]
    for query in vectors[:20]:
        found = index.search(query, 10, allowed)
        expected = exact.search(query, 10, allowed)
        assert len(found) == 10 and all(k % 3 == 1 for k, _ in found)
        overlap = len({k for k, _ in found} & {k for k, _ in expected})
        assert overlap == 10 if in_memory else overlap >= 9


def test_a_filter_that_excludes_the_nearest_vectors(tmp_path: Path) -> None:
    """A reader who may not read what the query is nearest to (asking in Chinese about
    notes only others may read) still gets the best of what they may read, exactly."""
    vectors = clustered(12_000)
    keys = np.arange(1, 12_001)
    index = VectorIndex(tmp_path / "v.usearch", 32, exact_below=2_000)
    index.upsert(keys.tolist(), vectors)
    query = vectors[0]
    near = vectors @ query > 0.5  # the query's own cluster and its neighbours
    allowed = keys[~near]
    assert 2_000 <= len(allowed) < 12_000
    found = index.search(query, 10, allowed.tolist())
    scores = vectors[~near] @ query
    expected = allowed[np.argsort(-scores)[:10]]
    assert [k for k, _ in found] == expected.tolist()


def test_the_in_memory_matrix_follows_changes(tmp_path: Path) -> None:
    vectors = clustered(6_000)
    index = VectorIndex(tmp_path / "v.usearch", 32, exact_below=1_000)
    index.upsert(list(range(1, 6_001)), vectors)
    allowed = list(range(2, 6_001, 2))
    query = -vectors[0]  # far from everything so far
    before = index.search(query, 5, allowed)
    index.upsert([6_002], query[None, :])  # a new, allowed vector equal to the query
    after = index.search(query, 5, [*allowed, 6_002])
    assert after[0][0] == 6_002 and after[0][1] > 0.99
    assert [k for k, _ in after[1:]] == [k for k, _ in before[:4]]
    index.delete([6_002])
    assert index.search(query, 5, [*allowed, 6_002]) == before


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


def test_onnx_runtime_loads_after_the_vector_index() -> None:
    """usearch carries its own C++ runtime: imported before the system one it made ONNX
    Runtime (the default embedding engine) crash with SIGSEGV when a process opened a
    store first and embedded after (a server, `watch`, a test run)."""
    import subprocess
    import sys

    code = (
        "from sourcebook.store.indexes import _usearch_index; _usearch_index(); "
        "import onnxruntime; print('loaded')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-2000:]
