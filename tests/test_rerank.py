"""The built-in reranker: ships with the package, loads fast, re-orders by its features."""

from __future__ import annotations

import time

from sourcebook import KnowledgeBase
from sourcebook.index.analyzer import analyze
from sourcebook.models import SearchHit
from sourcebook.retrieve.rerank import (
    FEATURES,
    LearnedReranker,
    bilingual_bm25,
    feature_matrix,
    query_features,
    text_tokens,
)


def hit(chunk_id: int, text: str, bm25: float, dense: float, heading: str = "") -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id,
        doc_id=chunk_id,
        path=f"/n/{chunk_id}.md",
        title="t",
        kind="markdown",
        heading_path=[heading] if heading else [],
        line_start=1,
        line_end=1,
        text=text,
        score=0.0,
        ranks={"bm25": chunk_id, "dense": chunk_id},
        scores={"bm25": bm25, "dense": dense},
    )


def test_loads_in_milliseconds_and_matches_features() -> None:
    started = time.perf_counter()
    model = LearnedReranker.load()
    assert time.perf_counter() - started < 0.05
    assert model.weights.shape == (len(FEATURES),)


def test_features_see_coverage_numbers_and_headings() -> None:
    hits = [
        hit(1, "Adam 的默认 β2 是 0.999。", 5.0, 0.9, "Adam"),
        hit(2, "SGD 没有二阶矩。", 1.0, 0.8),
    ]
    idf = {"adam": 2.0, "默认": 1.0, "β": 1.0, "2": 0.5}
    rows = feature_matrix("Adam 默认 β2 0.999", hits, idf)
    column = {name: i for i, name in enumerate(FEATURES)}
    assert rows[0, column["coverage"]] > rows[1, column["coverage"]]
    assert rows[0, column["number_match"]] == 1.0 and rows[1, column["number_match"]] == 0.0
    assert rows[0, column["heading_coverage"]] > 0


def test_coverage_counts_a_question_term_found_in_the_other_language() -> None:
    # "memory" is 显存 in Chinese notes: without it both chunks cover only "LoRA"
    hits = [
        hit(1, "LoRA 冻结了原始权重，所以省下了梯度和优化器状态的显存。", 1.0, 0.8),
        hit(2, "LoRA 的秩 r 一般取 8 或 16。", 1.0, 0.8),
    ]
    idf = {"much": 0.5, "memori": 2.0, "lora": 1.0, "save": 1.0}
    rows = feature_matrix("How much memory does LoRA save?", hits, idf)
    column = FEATURES.index("coverage")
    assert rows[0, column] > rows[1, column]


def test_keyword_score_is_the_same_in_either_language() -> None:
    # the retriever's BM25 scores the Chinese note 0 for an English question: the
    # reranker's keyword features must not, or the English note that shares "memory" wins
    hits = [
        hit(1, "PagedAttention 之前，传统实现预分配显存，浪费可以达到 60%～80%。", 0.0, 0.8),
        hit(2, "Activations take half the memory in 16 bits.", 3.0, 0.8),
        hit(3, "HNSW 的参数 M 一般取 16～64。", 0.0, 0.8),
    ]
    idf = {"memori": 1.0, "wast": 2.0, "tradit": 2.0, "alloc": 2.0}
    question = "How much memory waste does traditional allocation cause?"
    scores = bilingual_bm25(query_features(question), [analyze(h.text) for h in hits], idf)
    assert scores[0] > scores[1] > 0 and scores[2] == 0
    rows = feature_matrix(question, hits, idf)
    column = FEATURES.index("bm25_norm")
    assert rows[0, column] == 1.0 and rows[2, column] == 0.0


def test_reranked_search_keeps_the_right_note_first(notes_kb: KnowledgeBase) -> None:
    base = notes_kb.settings
    notes_kb.settings = base.model_copy(update={"reranker": "learned"})
    try:
        hits = notes_kb.search("Adam 的默认 β2 是多少？", limit=5)
        assert hits[0].path.endswith("training/optimizers.md")
        assert all("rerank" in h.scores for h in hits)
    finally:
        notes_kb.settings = base


def test_stored_tokens_stand_in_for_re_analysis(notes_kb: KnowledgeBase) -> None:
    """The reranker reads the tokens stored at indexing time instead of re-analysing each
    candidate; they must be exactly the tokens of the chunk's text (context line removed)."""
    ids = sorted(notes_kb.store.records.chunk_ids())
    hits = notes_kb.store.hits(ids)
    assert len(hits) > 50 and all(hit.index_tokens for hit in hits.values())
    assert sum(hit.heading_path != [] for hit in hits.values()) > 20  # with context lines
    for hit in hits.values():
        assert text_tokens(hit) == analyze(hit.text), hit.location
