"""Extractive answers: quote the evidence sentences that answer the question, with [n].

No language model is involved, so nothing can be invented: every sentence of the answer
is a sentence of a source, and every source listed is one the answer quotes. When the
evidence is too weak the answer says so, in the question's language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sourcebook.answer.calibration import SIGNALS, Judge
from sourcebook.index.analyzer import analyze
from sourcebook.index.embedders import Embedder, Vectors
from sourcebook.models import Answer, Citation, Language, SearchHit
from sourcebook.text import is_chinese, sentence_spans

_NUMBER = re.compile(r"\d+(?:\.\d+)?")

NOT_FOUND = {
    "zh": "知识库中没有找到相关内容。",
    "en": "Not found in the knowledge base.",
}


@dataclass(frozen=True)
class _Candidate:
    hit_index: int
    start: int
    end: int
    text: str
    score: float
    coverage: float
    dense: float


class ExtractiveAnswerer:
    """Select up to `max_sentences` evidence sentences.

    A sentence scores by how much of the question (idf-weighted terms) it covers and by
    its embedding similarity to the question, so that a sentence answering in other words
    ("it does not depend on the batch size") can still win. The `judge` decides from the
    evidence signals whether to answer at all.
    """

    def __init__(
        self,
        embedder: Embedder,
        max_sentences: int,
        judge: Judge,
        max_embedded_sentences: int = 8,
    ) -> None:
        self.embedder = embedder
        self.max_sentences = max_sentences
        self.judge = judge
        self.max_embedded_sentences = max_embedded_sentences

    def answer(
        self,
        question: str,
        query_vector: Vectors,
        hits: Sequence[SearchHit],
        idf: dict[str, float],
    ) -> Answer:
        language: Language = "zh" if is_chinese(question) else "en"
        terms = list(dict.fromkeys(analyze(question)))
        candidates = self._candidates(terms, query_vector, hits, idf)
        best = max(candidates, key=lambda c: c.score, default=None)
        signals = self.signals(question, terms, hits, candidates, best, idf)
        confidence = self.judge.confidence(signals)
        if best is None or confidence < self.judge.threshold:
            return self._not_found(question, language, hits, confidence, signals)
        chosen = self._choose(candidates, best)
        return self._compose(question, language, hits, chosen, confidence, signals)

    def signals(
        self,
        question: str,
        terms: list[str],
        hits: Sequence[SearchHit],
        candidates: Sequence[_Candidate],
        best: _Candidate | None,
        idf: dict[str, float],
    ) -> dict[str, float]:
        """The evidence measurements the answer/refuse decision is made from (see
        `calibration.Judge`); returned with the answer so a refusal can be explained."""
        if not hits or best is None:
            return dict.fromkeys(SIGNALS, 0.0)
        top = hits[0]
        present = set(analyze(" ".join([top.title, *top.heading_path, top.text])))
        weights = [idf.get(t, 0.0) for t in terms]
        highest = max(weights, default=0.0) or 1.0
        missing = [w for t, w in zip(terms, weights, strict=True) if t not in present]
        numbers = _NUMBER.findall(question)
        rerank = [hit.scores.get("rerank", 0.0) for hit in hits[:2]]
        return {
            "top_dense": self.judge.rescale(max(hit.scores.get("dense", 0.0) for hit in hits)),
            "sentence_dense": self.judge.rescale(max(c.dense for c in candidates)),
            "sentence_coverage": best.coverage,
            "sentence_score": best.score,
            "chunk_coverage": 1.0 - sum(missing) / (sum(weights) or 1.0),
            "missing_term": max(missing, default=0.0) / highest,
            "numbers_found": (
                sum(1 for n in numbers if n in top.text) / len(numbers) if numbers else 1.0
            ),
            "rerank": rerank[0],
            "rerank_margin": rerank[0] - rerank[1] if len(rerank) > 1 else 1.0,
        }

    def _candidates(
        self,
        terms: list[str],
        query_vector: Vectors,
        hits: Sequence[SearchHit],
        idf: dict[str, float],
    ) -> list[_Candidate]:
        total = sum(idf.get(t, 0.0) for t in terms) or 1.0
        found: list[tuple[int, int, int, str, float]] = []
        for index, hit in enumerate(hits):
            for start, end in sentence_spans(hit.text):
                sentence = hit.text[start:end]
                if _is_markup(sentence):
                    continue
                present = set(analyze(sentence))
                coverage = sum(idf.get(t, 0.0) for t in terms if t in present) / total
                found.append((index, start, end, sentence, coverage))
        similarity = self._similarities(query_vector, found)
        candidates = []
        for (index, start, end, sentence, coverage), dense in zip(found, similarity, strict=True):
            rank_weight = 1.0 / (1.0 + 0.15 * index)
            # slight preference for informative, not overly long sentences
            length_factor = 1.0 / (1.0 + max(0, len(sentence) - 200) / 400)
            score = (0.5 * coverage + 0.5 * self.judge.rescale(dense)) * rank_weight * length_factor
            candidates.append(_Candidate(index, start, end, sentence, score, coverage, dense))
        return candidates

    def _similarities(
        self, query_vector: Vectors, found: list[tuple[int, int, int, str, float]]
    ) -> list[float]:
        """Dense similarity for the most promising sentences (bounded: embedding a
        sentence costs milliseconds); the others get the floor."""
        order = sorted(range(len(found)), key=lambda i: -found[i][4] / (1 + 0.15 * found[i][0]))
        chosen = order[: self.max_embedded_sentences]
        similarity = [self.judge.dense_floor] * len(found)
        if chosen:
            vectors = self.embedder.embed_passages([found[i][3] for i in chosen])
            for i, value in zip(chosen, vectors @ query_vector, strict=True):
                similarity[i] = float(value)
        return similarity

    def _choose(self, candidates: list[_Candidate], best: _Candidate) -> list[_Candidate]:
        chosen = [best]
        # the sentence after the best one often completes it ("... 原因如下。首先 ...")
        following = [
            c
            for c in candidates
            if c.hit_index == best.hit_index and c.start >= best.end and c.score >= 0.3 * best.score
        ]
        if following:
            chosen.append(min(following, key=lambda c: c.start))
        for candidate in sorted(candidates, key=lambda c: -c.score):
            if len(chosen) >= self.max_sentences:
                break
            if candidate in chosen or candidate.score < 0.6 * best.score:
                continue
            if any(candidate.text == c.text for c in chosen):
                continue
            chosen.append(candidate)
        return sorted(chosen[: self.max_sentences], key=lambda c: (c.hit_index, c.start))

    def _compose(
        self,
        question: str,
        language: Language,
        hits: Sequence[SearchHit],
        chosen: list[_Candidate],
        confidence: float,
        signals: dict[str, float],
    ) -> Answer:
        numbers: dict[int, int] = {}
        citations: list[Citation] = []
        parts = []
        for candidate in chosen:
            if candidate.hit_index not in numbers:
                numbers[candidate.hit_index] = len(numbers) + 1
                citations.append(
                    Citation(n=numbers[candidate.hit_index], hit=hits[candidate.hit_index])
                )
            citation = citations[numbers[candidate.hit_index] - 1]
            citation.quotes.append(candidate.text)
            hit = hits[candidate.hit_index]
            citation.quote_lines.append(_quote_lines(hit, candidate))
            parts.append(_clean(candidate.text) + f" [{numbers[candidate.hit_index]}]")
        text = " ".join(parts)  # "…显存。 [1] activations…": the marker stays readable
        return Answer(
            question=question,
            text=text,
            found=True,
            language=language,
            citations=citations,
            confidence=round(confidence, 4),
            signals={name: round(value, 4) for name, value in signals.items()},
        )

    def _not_found(
        self,
        question: str,
        language: Language,
        hits: Sequence[SearchHit],
        confidence: float,
        signals: dict[str, float],
    ) -> Answer:
        nearest = [Citation(n=i + 1, hit=hit) for i, hit in enumerate(hits[:3])]
        return Answer(
            question=question,
            text=NOT_FOUND[language],
            found=False,
            language=language,
            citations=nearest,
            confidence=round(confidence, 4),
            signals={name: round(value, 4) for name, value in signals.items()},
        )


def _quote_lines(hit: SearchHit, candidate: _Candidate) -> tuple[int, int]:
    if hit.kind == "html":  # extracted lines were mapped to tags' lines: cite the chunk
        return hit.line_start, hit.line_end
    first = hit.line_start + hit.text.count("\n", 0, candidate.start)
    last = hit.line_start + hit.text.count("\n", 0, candidate.end)
    return min(first, hit.line_end), min(last, hit.line_end)


def _is_markup(sentence: str) -> bool:
    stripped = sentence.strip()
    return stripped.startswith(("```", "~~~", "|", "#")) or not any(c.isalnum() for c in stripped)


def _clean(sentence: str) -> str:
    """One line, without list markers, for quoting inside a paragraph."""
    text = " ".join(sentence.split())
    for marker in ("- ", "* ", "+ "):
        if text.startswith(marker):
            return text[len(marker) :]
    return text
