"""The answer-or-refuse decision, calibrated per embedding model.

The answerer measures its evidence (`SIGNALS`: how close the best chunk and sentence are
to the question, how much of the question they cover, what the reranker thinks, whether a
rare question term is missing from the best chunk). A `Judge` turns those into a 0..1
confidence with a logistic model trained by `benchmarks/calibrate_refusal.py` on the tuning
split of CMRC 2018 (answerable: the question's paragraph is indexed; unanswerable: it is
excluded), and refuses below a threshold chosen there. The trained judges ship in
`data/answerability.json`; a model without one gets a simple rule. Cosine scales differ
by model (USE's good matches sit near 0.3-0.5, e5's near 0.85), so dense similarities
are first rescaled by each model's floor and ceiling.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

import numpy as np

SIGNALS = (
    "top_dense",  # rescaled cosine of the best chunk
    "sentence_dense",  # rescaled cosine of the closest evidence sentence
    "sentence_coverage",  # idf-weighted share of question terms in the best sentence
    "answer_coverage",  # ... in the units the answer quotes, together
    "sentence_score",  # the best sentence's selection score
    "chunk_coverage",  # ... in the chunk the answer quotes first (with its headings)
    "missing_term",  # idf of the rarest question term absent from that chunk / max idf
    "evidence_missing",  # ... absent from every evidence chunk
    "numbers_found",  # share of the question's numbers found in that chunk
    "answer_numbers",  # ... in the best unit
    "rerank",  # reranker score of the top chunk (0 without a reranker)
    "rerank_margin",  # ... minus the second chunk's
    "cross_language",  # 1 when the question and the quoted chunk differ in language
)
# Set to 1 in `Answer.signals` (the others then 0) when a rule refused before the judge:
# a name the notes, the evidence or the answer do not hold (`names`), or an answer that
# states nothing of the kind of value asked for (`expected`).
RULES = ("unknown_name", "unanswered_kind")


def refused_by_rule(signals: Mapping[str, float]) -> bool:
    return any(signals.get(rule) for rule in RULES)


@dataclass(frozen=True)
class Judge:
    """confidence = sigmoid(w · standardised(signals) + b); refuse below `threshold`.

    Without weights, confidence is the mean of the best chunk's rescaled cosine and the
    best sentence's coverage (the rule used for models that have no trained judge).
    """

    dense_floor: float  # cosine at or below which there is no dense evidence at all
    dense_ceiling: float  # cosine at or above which dense evidence is as strong as it gets
    threshold: float
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    mean: tuple[float, ...] = field(default=())
    scale: tuple[float, ...] = field(default=())
    signals: tuple[str, ...] = SIGNALS  # the signals the weights are for, in their order

    def rescale(self, similarity: float) -> float:
        span = max(self.dense_ceiling - self.dense_floor, 1e-6)
        return min(1.0, max(0.0, (similarity - self.dense_floor) / span))

    def confidence(self, signals: Mapping[str, float]) -> float:
        if not self.weights:
            return 0.5 * signals["top_dense"] + 0.5 * signals["sentence_coverage"]
        z = self.bias + sum(
            w * (signals[name] - m) / s
            for name, w, m, s in zip(self.signals, self.weights, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def with_threshold(self, threshold: float | None) -> Judge:
        return self if threshold is None else replace(self, threshold=threshold)


_RULES = {
    "multilingual-e5-small": Judge(dense_floor=0.78, dense_ceiling=0.90, threshold=0.45),
    "use-multilingual": Judge(dense_floor=0.15, dense_ceiling=0.55, threshold=0.45),
}


@cache
def _trained() -> dict[str, Judge]:
    text = resources.files("sourcebook").joinpath("data/answerability.json").read_text()
    judges = {}
    for model, entry in json.loads(text).items():
        if not set(entry["signals"]) <= set(SIGNALS):
            raise ValueError(
                "data/answerability.json was trained on signals the answerer no longer "
                "measures; rerun benchmarks/calibrate_refusal.py"
            )
        judges[model] = Judge(
            dense_floor=entry["dense_floor"],
            dense_ceiling=entry["dense_ceiling"],
            threshold=entry["threshold"],
            weights=tuple(entry["weights"]),
            bias=entry["bias"],
            mean=tuple(entry["mean"]),
            scale=tuple(entry["scale"]),
            signals=tuple(entry["signals"]),
        )
    return judges


def judge_for(model: str, trained: bool = True) -> Judge:
    """The trained judge of `model` if there is one, else its rule."""
    if trained and model in _trained():
        return _trained()[model]
    return _RULES.get(model, Judge(0.0, 1.0, 0.45))


def fit_judge(
    rule: Judge,
    rows: Sequence[Sequence[float]],
    labels: Sequence[int],
    l2: float = 1e-2,
    steps: int = 3000,
) -> Judge:
    """Logistic regression by gradient descent on standardised signals, with L2; `rows`
    hold the values of `SIGNALS`, in that order."""
    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    w = np.zeros(z.shape[1])
    b = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        grad = p - y
        w -= 0.5 * (z.T @ grad / len(y) + l2 * w)
        b -= 0.5 * float(grad.mean())
    return replace(
        rule,
        weights=tuple(float(v) for v in w),
        bias=float(b),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        signals=SIGNALS,
    )
