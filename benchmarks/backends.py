"""Issue 13: the embedded backend beside PostgreSQL + Milvus Lite, on one evaluation set.

    python benchmarks/backends.py [--dataset cmrc2018] [--queries 300] [--work DIR]

1. index the dataset once in the embedded backend (`build_kb`, cached in the work folder);
2. copy the knowledge base folder and `sourcebook migrate` the copy into a throwaway
   PostgreSQL + a Milvus Lite server (tests/servers.py): the same chunks and vectors;
3. retrieval metrics of both through `KnowledgeBase.search` (bm25, dense, hybrid with the
   reranker): nDCG@10 must agree within 0.01;
4. latency of the store's two searches alone (keyword + vector, the part that differs;
   query vectors embedded once beforehand): p50 / p95 per backend.

Prints a table and writes `benchmarks/results/backends.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import milvus_server, postgres_server  # noqa: E402
from sourcebook import KnowledgeBase, Settings  # noqa: E402
from sourcebook.evaluation.datasets import load_named  # noqa: E402
from sourcebook.evaluation.run import RetrievalConfig, build_kb, evaluate_retrieval  # noqa: E402
from sourcebook.index.analyzer import analyze  # noqa: E402

CONFIGS = (
    RetrievalConfig("bm25", "bm25"),
    RetrievalConfig("dense", "dense"),
    RetrievalConfig("hybrid-rrf+rerank", "hybrid", "rrf", "learned"),
)


def store_latency(kb: KnowledgeBase, queries: list[str], vectors: np.ndarray) -> dict[str, float]:
    """p50/p95 ms of keyword_search + vector_search (50 candidates each, as retrieval)."""
    store, timings = kb.store, []
    for query, vector in zip(queries, vectors, strict=True):
        started = time.perf_counter()
        store.keyword_search(query, 50)
        store.vector_search(vector, 50)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(timings, 50)), 2),
        "p95_ms": round(float(np.percentile(timings, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cmrc2018")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sourcebook-backends"))
    args = parser.parse_args()

    dataset = load_named(args.dataset)
    queries = dataset.split("test")[: args.queries]
    kb = build_kb(dataset, Settings(), args.work, print)
    embedded_path = kb.path
    kb.close()
    results: dict[str, Any] = {
        "dataset": dataset.name,
        "queries": len(queries),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    with postgres_server() as postgres, milvus_server(args.work) as milvus:
        copy = args.work / "copy-kb"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(embedded_path, copy, ignore=shutil.ignore_patterns("write.lock"))
        started = time.perf_counter()
        command = [sys.executable, "-m", "sourcebook.surfaces.cli", "migrate", "--kb", str(copy)]
        command += ["--to-database", postgres.new_database(), "--to-search"]
        command += [milvus.new_collection()]
        subprocess.run(command, check=True)
        results["migrate_s"] = round(time.perf_counter() - started, 1)
        for name, path in (("embedded", embedded_path), ("postgres+milvus-lite", copy)):
            with KnowledgeBase(path, Settings(kb=path)) as base:
                texts = [q.text for q in queries]
                vectors = np.vstack([base.embedder.embed_query(t) for t in texts])
                for text in texts[:20]:  # warm both paths
                    base.store.keyword_search(text, 50)
                results[name] = {
                    "chunks": base.status().chunks,
                    "retrieval": evaluate_retrieval(base, dataset, queries, CONFIGS),
                    "store_search": store_latency(base, texts, vectors),
                    "analysed_tokens_per_query": round(
                        float(np.mean([len(analyze(t)) for t in texts])), 1
                    ),
                }
    embedded, remote = results["embedded"], results["postgres+milvus-lite"]
    results["ndcg@10_difference"] = {
        config.name: round(
            remote["retrieval"][config.name]["ndcg@10"]
            - embedded["retrieval"][config.name]["ndcg@10"],
            4,
        )
        for config in CONFIGS
    }
    out = ROOT / "benchmarks" / "results" / "backends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
