"""What reranking costs per query: the built-in reranker over 50 fused candidates.

For held-out queries of Cranfield (English) and CMRC 2018 (Chinese), the hybrid retriever's
top 50 candidates are fetched once without reranking; then the reranker step exactly as
`HybridRetriever.retrieve` runs it (idf statistics from the keyword index + features +
scoring + sort) is timed alone. Medians and p95 over all queries, several passes.

    python benchmarks/rerank_cost.py [--candidates 50] [--queries 200] [--passes 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from sourcebook.evaluation.datasets import load_named
from sourcebook.evaluation.metrics import percentile
from sourcebook.evaluation.run import build_kb
from sourcebook.index.analyzer import analyze
from sourcebook.retrieve.rerank import LearnedReranker, idf_weights
from sourcebook.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "eval")
    args = parser.parse_args()
    reranker = LearnedReranker.load()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for name in ("cranfield", "cmrc2018"):
        dataset = load_named(name)
        kb = build_kb(dataset, Settings(reranker="none"), args.work)
        queries = [q.text for q in dataset.split("test")[: args.queries]]
        candidates = {q: kb.search(q, limit=args.candidates) for q in queries}
        timings: list[float] = []
        for _ in range(args.passes):
            for question, hits in candidates.items():
                fresh = [h.model_copy(deep=True) for h in hits]
                started = time.perf_counter()
                total, frequencies = kb.store.keyword_statistics(analyze(question))
                reranker.rerank(question, fresh, idf_weights(total, frequencies))
                timings.append((time.perf_counter() - started) * 1000)
        kb.close()
        print(
            f"{name:10s} {len(queries)} queries x {args.passes} passes, "
            f"{args.candidates} candidates: p50 {statistics.median(timings):.2f} ms, "
            f"p95 {percentile(timings, 0.95):.2f} ms, max {max(timings):.2f} ms"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
