"""Hybrid retrieval: BM25 and dense candidates, fused into one ranking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .analyzer import analyze
from .embedders import Embedder, Vectors
from .indexes import ScoredIds
from .models import SearchHit
from .rerank import Reranker, idf_weights
from .settings import Settings
from .store import Filters, Store


@dataclass(frozen=True)
class RankedLists:
    """Each retriever's ranking, best first: name -> [(chunk id, score)]."""

    lists: dict[str, ScoredIds]


def reciprocal_rank_fusion(
    ranked: RankedLists, k: int, weights: dict[str, float]
) -> list[tuple[int, float]]:
    """score(d) = sum over retrievers of weight / (k + rank), ranks starting at 1."""
    fused: dict[int, float] = {}
    for name, items in ranked.lists.items():
        weight = weights.get(name, 1.0)
        for rank, (chunk_id, _) in enumerate(items, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def weighted_fusion(ranked: RankedLists, weights: dict[str, float]) -> list[tuple[int, float]]:
    """Min-max normalise each retriever's scores, then take the weighted sum."""
    fused: dict[int, float] = {}
    for name, items in ranked.lists.items():
        if not items:
            continue
        scores = [s for _, s in items]
        low, high = min(scores), max(scores)
        span = (high - low) or 1.0
        for chunk_id, score in items:
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weights.get(name, 1.0) * (
                (score - low) / span
            )
    return sorted(fused.items(), key=lambda item: -item[1])


class HybridRetriever:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        settings: Settings,
        reranker: Reranker | None = None,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings
        self._reranker = reranker

    def retrieve(
        self,
        query: str,
        limit: int = 10,
        filters: Filters | None = None,
        query_vector: Vectors | None = None,
    ) -> list[SearchHit]:
        settings = self._settings
        doc_ids = self._store.allowed_documents(filters or Filters())
        if doc_ids is not None and not doc_ids:
            return []
        depth = max(settings.candidates, limit)
        lists: dict[str, ScoredIds] = {}
        if settings.retrieval in ("hybrid", "bm25"):
            lists["bm25"] = self._store.keyword_search(query, depth, doc_ids)
        if settings.retrieval in ("hybrid", "dense"):
            if query_vector is None:
                query_vector = self._embedder.embed_query(query)
            lists["dense"] = self._store.vector_search(query_vector, depth, doc_ids)
        ranked = RankedLists(lists)
        weights = {"bm25": settings.keyword_weight, "dense": settings.dense_weight}
        if settings.fusion == "weighted":
            fused = weighted_fusion(ranked, weights)
        else:
            fused = reciprocal_rank_fusion(ranked, settings.rrf_k, weights)
        if self._reranker is None:
            return self._hydrate(fused[: limit * 2], ranked)[:limit]
        depth = max(limit, settings.rerank_depth)
        hits = self._hydrate(fused[: depth + limit], ranked)[:depth]
        total, frequencies = self._store.keyword_statistics(analyze(query))
        return self._reranker.rerank(query, hits, idf_weights(total, frequencies))[:limit]

    def _hydrate(self, fused: Sequence[tuple[int, float]], ranked: RankedLists) -> list[SearchHit]:
        rows = self._store.hits([chunk_id for chunk_id, _ in fused])
        positions = {
            name: {cid: (rank, score) for rank, (cid, score) in enumerate(items, start=1)}
            for name, items in ranked.lists.items()
        }
        hits: list[SearchHit] = []
        kept_shingles: list[set[str]] = []
        for chunk_id, score in fused:
            hit = rows.get(chunk_id)
            if hit is None:  # deleted since the index was written
                continue
            shingles = _shingles(hit.text)
            if any(_overlap(shingles, other) >= NEAR_DUPLICATE for other in kept_shingles):
                continue  # a copy of a passage already listed (copied note, heavy overlap)
            kept_shingles.append(shingles)
            hit.score = score
            for name, found in positions.items():
                if chunk_id in found:
                    hit.ranks[name], hit.scores[name] = found[chunk_id]
            hits.append(hit)
        return hits


NEAR_DUPLICATE = 0.8  # share of the smaller passage's shingles found in the other


def _shingles(text: str) -> set[str]:
    """Character 4-grams of the text without whitespace: language-independent."""
    flat = "".join(text.split())
    return {flat[i : i + 4] for i in range(max(1, len(flat) - 3))}


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, min(len(a), len(b)))
