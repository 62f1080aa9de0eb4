"""Rerankers: re-order fused candidates with a stronger scorer.

`LearnedReranker` is the built-in default: a linear learning-to-rank model over cheap
features of (question, chunk) — each retriever's score and rank, idf-weighted term
coverage of the text and of the heading path, phrase (bigram) and number matches, and the
chunk's length. Its weights are trained by `benchmarks/train_reranker.py` on the tuning
split of the evaluation data and shipped as `data/reranker.json` (a few hundred bytes,
loaded in microseconds). No model weights need to be downloaded.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from sourcebook.index.analyzer import analyze
from sourcebook.index.bilingual import phrase_variants, term_variants
from sourcebook.ingest.chunker import chunk_context
from sourcebook.models import SearchHit
from sourcebook.text import normalize

FEATURES = (
    "bm25_norm",  # bilingual BM25 score (below) / the best one among the candidates
    "bm25_rrank",  # 1 / rank by bilingual BM25 among the candidates (0 when it is 0)
    "dense",  # cosine similarity
    "dense_gap",  # cosine minus the best cosine in the list
    "dense_rrank",
    "coverage",  # idf-weighted share of question terms found in the chunk
    "heading_coverage",  # ... found in the title / heading path (or their translations)
    "bigram_match",  # share of question token bigrams found in order
    "number_match",  # share of question numbers found
    "log_length",  # log of chunk length in tokens
)


def idf_weights(total: int, frequencies: dict[str, int]) -> dict[str, float]:
    """BM25's idf, floored at a small positive value so every query term counts a little."""
    return {
        term: max(0.05, math.log(1 + (total - df + 0.5) / (df + 0.5)))
        for term, df in frequencies.items()
    }


class Reranker(Protocol):
    name: str

    def rerank(
        self, question: str, hits: Sequence[SearchHit], idf: dict[str, float]
    ) -> list[SearchHit]: ...


@dataclass(frozen=True)
class QueryFeatures:
    terms: list[str]
    bigrams: set[tuple[str, str]]
    numbers: set[str]
    # each term's tokens in the other language ("global" → 全局): an English question
    # over Chinese notes finds its terms there too
    variants: dict[str, set[str]]


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def query_features(question: str) -> QueryFeatures:
    tokens = analyze(question)
    terms = list(dict.fromkeys(tokens))
    phrases = phrase_variants(tokens)
    # a translation counts by its words of two characters or more: jieba cuts 过拟合
    # into 过 and 拟合, and 过 alone is in every other sentence
    variants = {
        t: {x for w in phrases.get(t, ()) + term_variants(t) for x in analyze(w) if len(x) > 1}
        for t in terms
    }
    return QueryFeatures(
        terms=terms,
        bigrams=set(itertools.pairwise(tokens)),
        numbers=set(_NUMBER.findall(question)),
        variants={t: v for t, v in variants.items() if v},
    )


def feature_matrix(
    question: str, hits: Sequence[SearchHit], idf: dict[str, float]
) -> NDArray[np.float32]:
    """One row of FEATURES per hit."""
    query = query_features(question)
    total_idf = sum(idf.get(t, 0.0) for t in query.terms) or 1.0
    keyword = bilingual_bm25(query, [hit.index_tokens or text_tokens(hit) for hit in hits], idf)
    best_keyword = float(keyword.max(initial=0.0)) or 1.0
    keyword_rank = np.empty(len(hits), dtype=np.int64)
    keyword_rank[np.argsort(-keyword, kind="stable")] = np.arange(1, len(hits) + 1)
    best_dense = max((h.scores.get("dense", 0.0) for h in hits), default=0.0)
    rows = np.zeros((len(hits), len(FEATURES)), dtype=np.float32)
    for i, hit in enumerate(hits):
        tokens = text_tokens(hit)
        present = _with_translations(query, tokens)
        heading = _with_translations(query, set(analyze(" ".join([hit.title, *hit.heading_path]))))
        pairs = set(itertools.pairwise(tokens))
        dense = hit.scores.get("dense", 0.0)
        rows[i] = (
            keyword[i] / best_keyword,
            1.0 / keyword_rank[i] if keyword[i] > 0 else 0.0,
            dense,
            dense - best_dense if "dense" in hit.scores else -0.2,
            1.0 / hit.ranks["dense"] if "dense" in hit.ranks else 0.0,
            sum(idf.get(t, 0.0) for t in query.terms if t in present) / total_idf,
            sum(idf.get(t, 0.0) for t in query.terms if t in heading) / total_idf,
            len(query.bigrams & pairs) / len(query.bigrams) if query.bigrams else 0.0,
            (
                sum(1 for n in query.numbers if n in normalize(hit.text)) / len(query.numbers)
                if query.numbers
                else 0.0
            ),
            math.log1p(len(tokens)),
        )
    return rows


def bilingual_bm25(
    query: QueryFeatures, texts: Sequence[Sequence[str]], idf: dict[str, float]
) -> NDArray[np.float64]:
    """BM25 over the candidates in which a question term also matches its translations,
    counted with the term's own idf.

    The retriever's BM25 scores a Chinese note near zero for an English question, so a
    reranker trained on same-language data learns to trust a signal that says nothing
    across languages, and the English note that shares a word wins. Scored this way a
    passage scores alike whichever language it states the question's terms in, and
    weights learned on same-language data (where translations seldom appear) carry over.
    """
    k1, b = 1.2, 0.75
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    average = float(lengths.mean()) if len(texts) else 1.0
    scores = np.zeros(len(texts))
    wanted = set(query.terms).union(*query.variants.values())
    for i, tokens in enumerate(texts):
        counts = Counter(t for t in tokens if t in wanted)
        norm = k1 * (1 - b + b * lengths[i] / (average or 1.0))
        for term in query.terms:
            tf = max([counts[term], *(counts[v] for v in query.variants.get(term, ()))])
            if tf:
                scores[i] += idf.get(term, 0.0) * tf * (k1 + 1) / (tf + norm)
    return scores


def _with_translations(query: QueryFeatures, tokens: Iterable[str]) -> set[str]:
    """`tokens` plus each question term one of whose translations is among them."""
    present = set(tokens)
    return present | {t for t, other in query.variants.items() if other & present}


def text_tokens(hit: SearchHit) -> list[str]:
    """`analyze(hit.text)`, taken from the tokens stored at indexing time when possible
    (analysing 50 candidates per query would cost tens of milliseconds)."""
    stored = hit.index_tokens
    if stored:
        context = chunk_context(hit.title, hit.heading_path, hit.text)
        prefix = analyze(context) if context else []
        if stored[: len(prefix)] == prefix:
            return stored[len(prefix) :]
    return analyze(hit.text)


class LearnedReranker:
    """score = w · standardised(features); hits re-sorted by score."""

    name = "learned"

    def __init__(
        self, weights: Sequence[float], mean: Sequence[float], scale: Sequence[float]
    ) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)

    @classmethod
    def load(cls, path: Path | None = None) -> LearnedReranker:
        if path is None:
            text = resources.files("sourcebook").joinpath("data/reranker.json").read_text()
        else:
            text = path.read_text()
        model = json.loads(text)
        if tuple(model["features"]) != FEATURES:
            raise ValueError("reranker weights were trained for other features; retrain them")
        return cls(model["weights"], model["mean"], model["scale"])

    def scores(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(((features - self.mean) / self.scale) @ self.weights, dtype=np.float32)

    def rerank(
        self, question: str, hits: Sequence[SearchHit], idf: dict[str, float]
    ) -> list[SearchHit]:
        if not hits:
            return []
        return order_by(hits, self.scores(feature_matrix(question, hits, idf)))


def order_by(hits: Sequence[SearchHit], scores: NDArray[np.float32]) -> list[SearchHit]:
    """The hits best first by `scores` (ties keep the fused order), each score recorded
    as `scores["rerank"]`."""
    reranked = []
    for i in np.argsort(-scores, kind="stable"):
        hit = hits[int(i)]
        hit.scores["rerank"] = float(scores[i])
        reranked.append(hit)
    return reranked


def load_reranker(setting: str, threads: int | None = None) -> Reranker | None:
    """'none' → no reranking; 'learned' → the built-in model; a folder → a cross-encoder."""
    if setting in ("", "none"):
        return None
    if setting == "learned":
        return LearnedReranker.load()
    if "/" in setting or Path(setting).expanduser().is_dir():
        from sourcebook.retrieve.cross_encoder import CrossEncoderReranker  # optional dependencies

        return CrossEncoderReranker(setting, threads=threads)
    raise ValueError(
        f"unknown reranker {setting!r}: use 'learned', 'none' or the path of a "
        "cross-encoder model folder (ONNX)"
    )
