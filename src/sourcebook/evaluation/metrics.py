"""Retrieval and answer metrics (pure functions, no pipeline)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def mrr_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    for rank, doc_id in enumerate(ranked[:k], start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at(
    ranked: Sequence[str], relevant: dict[str, int], k: int = 10, graded: bool = True
) -> float:
    """nDCG@k with gains from `relevant` (graded) or 1 for every relevant document."""

    def gain(doc_id: str) -> float:
        return float(relevant.get(doc_id, 0) if graded else (1 if doc_id in relevant else 0))

    dcg = sum(gain(d) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((gain(d) for d in relevant), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


# --- answers (CMRC 2018 official manner: Chinese characters and English words as tokens,
# punctuation removed, F1 from the longest common subsequence) ---------------------------

_PUNCTUATION = re.compile(r"[\W_]+", re.UNICODE)
_SEGMENT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[a-z0-9]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Full/half width, case, punctuation and whitespace folded away."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return _PUNCTUATION.sub("", folded)


def contains_answer(prediction: str, answers: Sequence[str]) -> bool:
    haystack = normalize_answer(prediction)
    return any(normalize_answer(a) and normalize_answer(a) in haystack for a in answers)


def _segments(text: str) -> list[str]:
    return _SEGMENT.findall(unicodedata.normalize("NFKC", text).lower())


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def answer_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best character/word-level F1 against any gold answer (CMRC 2018 official)."""
    predicted = _segments(prediction)
    best = 0.0
    for answer in answers:
        gold = _segments(answer)
        common = _lcs_length(gold, predicted)
        if common == 0:
            continue
        precision, recall = common / len(predicted), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    return any(normalize_answer(prediction) == normalize_answer(a) for a in answers)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
