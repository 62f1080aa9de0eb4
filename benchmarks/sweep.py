"""Tune chunking, candidate depth, fusion and rerank depth on the *tuning* split.

Every setting is scored with `evaluate_retrieval` (the real `KnowledgeBase.search`) on the
tuning half of Cranfield and CMRC 2018; the held-out half is never touched here. Each
chunking needs its own index (built once under benchmarks/work/eval and reused).

    python benchmarks/sweep.py [--chunking 300:45 150:30 500:60 300:0] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sourcebook.evaluation.datasets import load_named
from sourcebook.evaluation.run import RetrievalConfig, build_kb, evaluate_retrieval
from sourcebook.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("cranfield", "cmrc2018")
RERANKED = RetrievalConfig("rrf+rerank", "hybrid", "rrf", "learned")
METRICS = {"cranfield": ("ndcg@10", "mrr@10"), "cmrc2018": ("recall@1", "recall@5")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunking", nargs="+", default=["300:45", "150:30", "500:60", "300:0"])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "eval")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "eval" / "sweep-tune.json"
    )
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    for name in DATASETS:
        dataset = load_named(name)
        queries = dataset.split("tune")
        for chunking in args.chunking:
            tokens, overlap = (int(x) for x in chunking.split(":"))
            settings = Settings(chunk_tokens=tokens, chunk_overlap=overlap)
            kb = build_kb(dataset, settings, args.work, print)
            grid: list[dict[str, Any]] = [{}]  # the defaults, for every chunking
            if chunking == args.chunking[0]:  # search settings, on the default chunking
                grid += [{"candidates": c} for c in (20, 100)]
                grid += [{"rrf_k": k} for k in (10, 30, 120)]
                grid += [{"rerank_depth": d} for d in (10, 20, 50)]
                grid += [{"fusion": "weighted"}]
            for update in grid:
                base = kb.settings
                kb.settings = base.model_copy(update=update)
                config = RetrievalConfig(
                    "rrf+rerank", "hybrid", update.get("fusion", "rrf"), "learned"
                )
                result = evaluate_retrieval(kb, dataset, queries, [config])[config.name]
                kb.settings = base
                row = {"dataset": name, "chunking": chunking, **update, **result}
                rows.append(row)
                shown = "  ".join(f"{m} {result[m]:.4f}" for m in METRICS[name])
                print(
                    f"{name:10s} chunk {chunking:7s} {json.dumps(update):24s} {shown}", flush=True
                )
            kb.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
