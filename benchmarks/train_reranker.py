"""Train the built-in reranker (src/sourcebook/data/reranker.json), reproducibly.

Only the *tuning* split of each dataset is used (see EvalDataset.split); the held-out
split is for `sourcebook eval` alone. For every tuning query the hybrid retriever's top
candidates are featurised (sourcebook.retrieve.rerank.feature_matrix) and labelled with the graded
relevance of their document; a linear pairwise model (RankNet loss, L2-regularised) is fit
by full-batch gradient descent in numpy. Deterministic: same data, same weights.

    python benchmarks/train_reranker.py [--work benchmarks/work/eval]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sourcebook.evaluation.datasets import load_named
from sourcebook.evaluation.run import build_kb
from sourcebook.index.analyzer import analyze
from sourcebook.retrieve.rerank import FEATURES, feature_matrix, idf_weights
from sourcebook.settings import Settings

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "sourcebook" / "data" / "reranker.json"


def collect(dataset_name: str, work: Path, depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = load_named(dataset_name)
    kb = build_kb(dataset, Settings(), work, print)
    kb.settings = kb.settings.model_copy(update={"reranker": "none"})
    groups = []
    for query in dataset.split("tune"):
        hits = kb.search(query.text, limit=depth)
        if not hits:
            continue
        total, frequencies = kb.store.keyword_statistics(analyze(query.text))
        features = feature_matrix(query.text, hits, idf_weights(total, frequencies))
        labels = np.array([query.relevant.get(Path(h.path).stem, 0) for h in hits], np.float32)
        if labels.max() > labels.min():  # queries without a contrast teach nothing
            groups.append((features, labels))
    kb.close()
    print(f"{dataset_name}: {len(groups)} tuning queries with relevant and irrelevant candidates")
    return groups


def train(groups: list[tuple[np.ndarray, np.ndarray]], weights_per_group: np.ndarray,
          epochs: int = 400, rate: float = 0.5, l2: float = 1e-3
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stacked = np.vstack([f for f, _ in groups])
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    pairs = []
    for (features, labels), group_weight in zip(groups, weights_per_group, strict=True):
        x = (features - mean) / scale
        better = labels[:, None] > labels[None, :]
        i, j = np.nonzero(better)
        if len(i):
            pairs.append((x[i] - x[j], np.full(len(i), group_weight / len(i), np.float32)))
    differences = np.vstack([d for d, _ in pairs])
    pair_weights = np.concatenate([w for _, w in pairs])
    pair_weights /= pair_weights.sum()
    w = np.zeros(len(FEATURES), dtype=np.float64)
    for _ in range(epochs):
        margin = differences @ w
        # d/dw of log(1 + exp(-margin)), weighted
        gradient = -(differences * (pair_weights / (1 + np.exp(margin)))[:, None]).sum(axis=0)
        w -= rate * (gradient + l2 * w)
    return w, mean, scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/eval"))
    parser.add_argument("--depth", type=int, default=30)
    args = parser.parse_args()
    groups, group_weights = [], []
    for name in ("cranfield", "cmrc2018"):
        found = collect(name, args.work, args.depth)
        groups += found
        group_weights += [1.0 / len(found)] * len(found)  # each dataset counts equally
    w, mean, scale = train(groups, np.array(group_weights))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps({
        "features": list(FEATURES),
        "weights": [round(float(v), 6) for v in w],
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "trained_on": "tuning splits of cranfield and cmrc2018 (benchmarks/train_reranker.py)",
    }, indent=2) + "\n")
    for name, value in zip(FEATURES, w, strict=True):
        print(f"{name:>18} {value:+.3f}")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
