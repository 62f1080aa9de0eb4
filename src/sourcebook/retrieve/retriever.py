"""Hybrid retrieval: BM25 and dense candidates, fused into one ranking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sourcebook.index.analyzer import analyze
from sourcebook.index.embedders import Embedder, Vectors
from sourcebook.models import SearchHit
from sourcebook.retrieve.rerank import Reranker, idf_weights
from sourcebook.settings import Settings
from sourcebook.store.embedded import Filters, ScoredIds, Store


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
        scope = self._store.search_scope(filters)
        if scope.is_nothing():
            return []
        depth = max(settings.candidates, limit)
        lists: dict[str, ScoredIds] = {}
        if settings.retrieval in ("hybrid", "bm25"):
            lists["bm25"] = self._store.keyword_search(query, depth, scope)
        if settings.retrieval in ("hybrid", "dense"):
            if query_vector is None:
                query_vector = self._embedder.embed_query(query)
            lists["dense"] = self._store.vector_search(query_vector, depth, scope)
        ranked = RankedLists(lists)
        weights = {"bm25": settings.keyword_weight, "dense": settings.dense_weight}
        if settings.fusion == "weighted":
            fused = weighted_fusion(ranked, weights)
        else:
            fused = reciprocal_rank_fusion(ranked, settings.rrf_k, weights)
        if self._reranker is None:
            return self._hydrate(fused[: limit * 2], ranked)[:limit]
        # the reranker re-orders the best `rerank_depth` fused candidates; any further
        # results a long list asks for follow in fused order
        depth = settings.rerank_depth
        hits = self._hydrate(fused[: max(depth, limit) + limit], ranked)[: max(depth, limit)]
        total, frequencies = self._store.keyword_statistics(analyze(query))
        head = self._reranker.rerank(query, hits[:depth], idf_weights(total, frequencies))
        return (head + hits[depth:])[:limit]

    def _hydrate(self, fused: Sequence[tuple[int, float]], ranked: RankedLists) -> list[SearchHit]:
        rows = self._store.hits([chunk_id for chunk_id, _ in fused])
        positions = {
            name: {cid: (rank, score) for rank, (cid, score) in enumerate(items, start=1)}
            for name, items in ranked.lists.items()
        }
        hits: list[SearchHit] = []
        seen = NearDuplicates()
        for chunk_id, score in fused:
            hit = rows.get(chunk_id)
            if hit is None:  # deleted since the index was written
                continue
            if not seen.add(hit.index_tokens or analyze(hit.text)):
                continue  # a copy of a passage already listed (copied note, heavy overlap)
            hit.score = score
            for name, found in positions.items():
                if chunk_id in found:
                    hit.ranks[name], hit.scores[name] = found[chunk_id]
            hits.append(hit)
        return hits


SKETCH_FROM = 64  # trigrams; from this size on a passage is represented by a 1/4 sample


class NearDuplicates:
    """Recognises passages that are mostly contained in one already seen.

    A passage is a set of hashed token trigrams, sampled (hash mod 4 = 0, a standard
    unbiased sketch of set containment) so long passages stay cheap; an inverted index from
    trigram to the passages holding it finds the overlapping ones without comparing every
    pair (pairwise comparison cost tens of milliseconds for 60 long candidates).
    """

    THRESHOLD = 0.8  # share of the smaller passage's trigrams found in the other

    def __init__(self) -> None:
        self._postings: dict[int, list[int]] = {}
        self._sizes: list[int] = []

    def add(self, tokens: Sequence[str]) -> bool:
        """Remember the passage and return True, or return False for a near-duplicate."""
        grams = (
            zip(tokens, tokens[1:], tokens[2:], strict=False)
            if len(tokens) >= 3
            else [tuple(tokens)]
        )
        hashes = {hash(gram) for gram in grams}
        # sample long passages only: a sketch of a short one is too small to judge by
        sketch = {h for h in hashes if h & 3 == 0} if len(hashes) >= SKETCH_FROM else hashes
        shared: dict[int, int] = {}
        for h in sketch:
            for other in self._postings.get(h, ()):
                shared[other] = shared.get(other, 0) + 1
        for other, count in shared.items():
            if count >= self.THRESHOLD * min(len(sketch), self._sizes[other]):
                return False
        index = len(self._sizes)
        self._sizes.append(len(sketch))
        for h in sketch:
            self._postings.setdefault(h, []).append(index)
        return True
