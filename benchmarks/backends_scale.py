"""Issue 13: search latency of PostgreSQL + Milvus Lite beside the embedded backend, at
`sourcebook bench` store sizes (100k chunks by default).

    python benchmarks/backends_scale.py [--chunks 100000] [--queries 200]
        [--modes hybrid,hybrid-rrf,bm25,dense] [--budget-s 900] [--work /tmp/sourcebook-scale]
        [--output benchmarks/results/backends-100k.json]

1. the store is built exactly as `sourcebook bench --chunks N` builds its query stores
   (`sourcebook.evaluation.bench`: the bilingual CMRC + Cranfield corpus, chunk vectors from
   `PrecomputedEmbedder`), in `<work>/bench/kb-<model>-<N>-precomputed`; an existing store
   of the right size there is reused;
2. a copy of its folder is `sourcebook migrate`d into a throwaway PostgreSQL + a Milvus Lite
   gRPC server (tests/servers.py): the same chunks and vectors, no re-embedding;
3. both knowledge bases are opened in this process and `KnowledgeBase.search` (limit 10) is
   timed for the same real queries (CMRC 2018 questions and Cranfield queries, as `bench`),
   interleaved (query i on one backend then the other, the order alternating), per retrieval
   mode: `hybrid` is the default (RRF + the learned reranker), `hybrid-rrf` the same
   without reranker (SOURCEBOOK_RERANKER=none), `bm25` and `dense` (without reranker).
   Each mode stops early when its time budget is spent (checked between queries); the
   number of queries actually timed is recorded. Each knowledge base keeps its query
   vectors in memory (`cached_embedder`): only the first mode run pays query embedding
   (with the default order, `hybrid`), the later modes time retrieval alone.
   The store's two searches alone (BM25 top-50 + vector top-50, as
   `benchmarks/backends.py`) are timed too.

Prints the table and writes JSON with p50/p95 per backend and their ratio, the time each
step took and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from backends import store_latency  # noqa: E402

from servers import milvus_server, postgres_server  # noqa: E402
from sourcebook import KnowledgeBase, Settings  # noqa: E402
from sourcebook.evaluation import bench  # noqa: E402
from sourcebook.index.embedders import EmbedderOptions, get_embedder  # noqa: E402
from sourcebook.settings import DEFAULT_EMBEDDER  # noqa: E402

MODES = {
    "hybrid": {"retrieval": "hybrid", "fusion": "rrf", "reranker": None},  # None: the default
    "hybrid-rrf": {"retrieval": "hybrid", "fusion": "rrf", "reranker": "none"},
    "bm25": {"retrieval": "bm25", "fusion": "rrf", "reranker": "none"},
    "dense": {"retrieval": "dense", "fusion": "rrf", "reranker": "none"},
}
WARMUP = 3
EMBEDDED, REMOTE = "embedded", "postgres+milvus-lite"


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def build_store(size: int, work: Path, console: Console) -> tuple[Path, dict[str, Any]]:
    """The `sourcebook bench` query store of `size` chunks (bench's own functions and
    paths), reused when it is already there with `size` chunks."""
    work = work.resolve() / "bench"
    work.mkdir(parents=True, exist_ok=True)
    name = DEFAULT_EMBEDDER
    kb_path = work / f"kb-{name}-{size}-precomputed"
    if kb_path.exists():
        with KnowledgeBase(kb_path, Settings(kb=kb_path)) as kb:
            status = kb.status()
        if status.chunks == size and status.index_consistent:
            console.print(f"reusing {kb_path} ({status.chunks:,} chunks)")
            return kb_path, {"reused": True, "chunks": status.chunks}
    started = time.perf_counter()
    pool = bench.load_pool(bench.data_folder())
    generator = bench.generate_passages(pool)
    passages = [next(generator) for _ in range(size)]
    real = get_embedder(name, EmbedderOptions(threads=Settings().threads))
    vectors = bench.sentence_vectors(real, pool, work, console)
    vectors_s = time.perf_counter() - started
    embedder = bench.PrecomputedEmbedder(real, pool.sentences, vectors)
    embedder.register(passages)
    folder = work / f"corpus-{size}"
    files = bench.write_corpus(folder, passages)
    console.print(f"building the {size:,}-chunk store ({files} files) in {kb_path} ...")
    seconds, chunks, documents = bench._ingest(
        kb_path, folder, Settings(kb=kb_path, embedder=name), embedder
    )
    console.print(f"  {chunks:,} chunks, {documents:,} documents in {seconds:.0f} s")
    return kb_path, {
        "reused": False,
        "chunks": chunks,
        "documents": documents,
        "corpus_and_sentence_vectors_s": round(vectors_s, 1),
        "ingest_s": round(seconds, 1),
        "embedding_fallbacks": embedder.fallbacks,
    }


def percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "mean_ms": round(float(np.mean(ms)), 1),
    }


def time_mode(
    bases: dict[str, KnowledgeBase], mode: str, queries: list[str], budget_s: float
) -> dict[str, Any]:
    """`kb.search(q, 10)` on both backends for each query in turn (the order alternating),
    until the queries or the budget run out."""
    for base in bases.values():
        update = {k: v for k, v in MODES[mode].items() if v is not None}
        base.settings = base._scale_default.model_copy(update=update)  # type: ignore[attr-defined]
    names = list(bases)
    for query in queries[:WARMUP]:
        for base in bases.values():
            base.search(query, limit=10)
    timings: dict[str, list[float]] = {name: [] for name in names}
    overlap = []
    started = time.monotonic()
    for i, query in enumerate(queries[WARMUP:]):
        if time.monotonic() - started > budget_s:
            break
        order = names if i % 2 == 0 else names[::-1]
        found = {}
        for name in order:
            begun = time.perf_counter()
            hits = bases[name].search(query, limit=10)
            timings[name].append((time.perf_counter() - begun) * 1000)
            found[name] = [hit.chunk_id for hit in hits]
        a, b = (found[n] for n in names)
        overlap.append(len(set(a) & set(b)) / max(1, len(a)))
    row: dict[str, Any] = {
        "queries_timed": len(timings[names[0]]),
        "seconds": round(time.monotonic() - started, 1),
        "load_average_after": load_now(),
        **{name: percentiles(ms) for name, ms in timings.items()},
        "top10_overlap": round(float(np.mean(overlap)), 3) if overlap else None,
    }
    row["ratio_p50"] = round(row[REMOTE]["p50_ms"] / row[EMBEDDED]["p50_ms"], 2)
    row["ratio_p95"] = round(row[REMOTE]["p95_ms"] / row[EMBEDDED]["p95_ms"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--modes", default="hybrid,hybrid-rrf,bm25,dense")
    parser.add_argument(
        "--budget-s", type=float, default=900.0, help="most seconds of timing per mode"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/sourcebook-scale"))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    output = args.output or HERE / "results" / f"backends-{args.chunks // 1000}k.json"
    console = Console()
    began = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_now(),
        },
        "notes": [bench.APPROXIMATION.format(model=DEFAULT_EMBEDDER, pool=bench.POOL_SENTENCES)],
        "steps_s": {},
    }
    step = time.perf_counter()
    kb_path, results["store"] = build_store(args.chunks, args.work, console)
    results["steps_s"]["build_store"] = round(time.perf_counter() - step, 1)
    pool = bench.load_pool(bench.data_folder())
    queries = bench.mixed_queries(pool, args.queries + WARMUP)

    work = args.work.resolve()
    milvus_folder = work / "milvus"
    shutil.rmtree(milvus_folder, ignore_errors=True)
    milvus_folder.mkdir(parents=True)
    with postgres_server() as postgres, milvus_server(milvus_folder) as milvus:
        copy = work / f"copy-kb-{args.chunks}"
        step = time.perf_counter()
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(kb_path, copy, ignore=shutil.ignore_patterns("write.lock"))
        results["steps_s"]["copy_folder"] = round(time.perf_counter() - step, 1)
        step = time.perf_counter()
        command = [sys.executable, "-m", "sourcebook.surfaces.cli", "migrate", "--kb", str(copy)]
        command += ["--to-database", postgres.new_database()]
        command += ["--to-search", milvus.new_collection()]
        console.print(f"migrating {copy} into PostgreSQL + Milvus Lite ...")
        subprocess.run(command, check=True)
        results["steps_s"]["migrate"] = round(time.perf_counter() - step, 1)
        results["machine"]["load_average_after_migrate"] = load_now()
        console.print(f"  migrated in {results['steps_s']['migrate']:.0f} s")

        bases = {
            EMBEDDED: KnowledgeBase(kb_path, Settings(kb=kb_path)),
            REMOTE: KnowledgeBase(copy, Settings(kb=copy)),
        }
        try:
            for base in bases.values():
                base._scale_default = base.settings  # type: ignore[attr-defined]
            results["backends"] = {name: base.backends.describe() for name, base in bases.items()}
            results["chunks"] = {name: base.status().chunks for name, base in bases.items()}
            results["defaults"] = {
                "retrieval": bases[EMBEDDED].settings.retrieval,
                "fusion": bases[EMBEDDED].settings.fusion,
                "reranker": bases[EMBEDDED].settings.reranker,
            }
            results["modes"] = {}
            for mode in modes:
                console.print(f"timing kb.search, {mode}, both backends interleaved ...")
                step = time.perf_counter()
                row = time_mode(bases, mode, queries, args.budget_s)
                results["modes"][mode] = row
                results["steps_s"][f"search_{mode}"] = round(time.perf_counter() - step, 1)
                console.print(
                    f"  {row['queries_timed']} queries: embedded p50/p95 "
                    f"{row[EMBEDDED]['p50_ms']}/{row[EMBEDDED]['p95_ms']} ms, "
                    f"PostgreSQL + Milvus Lite {row[REMOTE]['p50_ms']}/{row[REMOTE]['p95_ms']}"
                    f" ms, ratio p95 {row['ratio_p95']}"
                )
            step = time.perf_counter()
            texts = queries[WARMUP:]
            results["store_search"] = {}
            for name, base in bases.items():
                vectors = np.vstack([base.embedder.embed_query(t) for t in texts])
                results["store_search"][name] = store_latency(base, texts, vectors)
            results["steps_s"]["store_search"] = round(time.perf_counter() - step, 1)
        finally:
            for base in bases.values():
                base.close()
    results["machine"]["load_average_at_end"] = load_now()
    results["total_s"] = round(time.perf_counter() - began, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    console.print_json(json.dumps(results, ensure_ascii=False))
    console.print(f"wrote {output}")


if __name__ == "__main__":
    main()
