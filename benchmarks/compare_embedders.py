"""Compare the bundled embedding backends for dense-only retrieval quality and speed.

Datasets (see ../shared/RESOURCES.md):
- Cranfield 1400, English: each doc is embedded as title + text (.T and .W; most .W fields
  already begin with the title, which is then not repeated). Binary relevance (grades 1-4).
- CMRC 2018 dev, Chinese: corpus = the 848 paragraphs, queries = all 3,219 questions, the
  relevant doc is the question's own paragraph.

Calibration: for every CMRC question, the top-1 cosine with its own paragraph in the corpus
("answerable") and with it removed ("unanswerable": best score among the other paragraphs).

Speed is timed on every run (cached embeddings or not): passages/s over the first 128 passages of
each corpus in batches of 32, query latency over 200 queries (100 Cranfield + 100 CMRC), and load
time (constructor + first query, since both backends load weights lazily). The CPU use of other
processes just before timing is recorded: on a busy 2-core machine the timings mean little.

Usage:  python benchmarks/compare_embedders.py [--no-cache] [--models NAME ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray

from sourcebook.index.embedders import EMBEDDERS, Embedder, EmbedderOptions, Vectors, get_embedder

DATA = Path(os.environ.get("SOURCEBOOK_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results" / "embedders.json"
BATCH = 32
LATENCY_QUERIES = 200  # half Cranfield, half CMRC
SPEED_SAMPLE = 128  # passages per corpus timed on every run, cached or not
PCTS = (5, 25, 50, 75, 95)


# ---------------------------------------------------------------- data


def load_cranfield() -> tuple[list[str], list[str], list[set[int]]]:
    """Return doc texts, query texts and, per query position, the relevant doc indexes."""
    root = DATA / "cranfield"
    docs: list[str] = []
    ids: dict[int, int] = {}
    txt = (root / "cran.all.1400").read_text(encoding="latin-1")
    for m in re.finditer(r"^\.I (\d+)\n(.*?)(?=^\.I |\Z)", txt, re.S | re.M):
        parts = re.split(r"^\.([A-Z])\s*$", m[2], flags=re.M)
        fields: dict[str, list[str]] = {}
        for key, val in zip(parts[1::2], parts[2::2], strict=True):
            fields.setdefault(key, []).append(" ".join(val.split()))
        title, text = " ".join(fields.get("T", [])), " ".join(fields.get("W", []))
        ids[int(m[1])] = len(docs)
        docs.append(text if text.startswith(title) else f"{title}\n{text}".strip())
    qtxt = (root / "cran.qry").read_text(encoding="latin-1")
    queries = [
        " ".join(m[1].split()) for m in re.finditer(r"^\.W\n(.*?)(?=^\.I |\Z)", qtxt, re.S | re.M)
    ]
    rel: list[set[int]] = [set() for _ in queries]
    for line in (root / "cranqrel").read_text().splitlines():
        q, d, grade = (int(x) for x in line.split())
        if 1 <= grade <= 4:
            rel[q - 1].add(ids[d])
    return docs, queries, rel


def load_cmrc() -> tuple[list[str], list[str], list[int]]:
    """Return paragraphs, questions and each question's paragraph index."""
    data = json.loads((DATA / "cmrc2018/cmrc2018_dev.json").read_text(encoding="utf-8"))["data"]
    paras = [p for article in data for p in article["paragraphs"]]
    pairs = [(q["question"], i) for i, p in enumerate(paras) for q in p["qas"]]
    return [p["context"] for p in paras], [q for q, _ in pairs], [i for _, i in pairs]


# ---------------------------------------------------------------- embedding


def embed(model: Embedder, texts: Sequence[str], kind: str, tag: str, cache: bool) -> Vectors:
    """Embed passages (in batches of 32) or queries (one by one), cached as .npy."""
    digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
    path = WORK / model.name / f"{tag}-{kind}-{digest}.npy"
    if cache and path.exists():
        cached: Vectors = np.load(path)
        return cached
    if kind == "passages":
        vecs = embed_batches(model, texts)
    else:
        vecs = np.vstack([model.embed_query(t) for t in texts])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs.astype(np.float32))
    return vecs


def embed_batches(model: Embedder, texts: Sequence[str]) -> Vectors:
    return np.vstack(
        [model.embed_passages(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    )


def speed(model: Embedder, corpora: dict[str, list[str]], queries: list[str]) -> dict[str, Any]:
    """Passages/s on the first SPEED_SAMPLE passages of each corpus; query latency in ms."""
    busy = psutil.cpu_percent(interval=1.0)  # we are idle now: this is everyone else
    out: dict[str, Any] = {"others_cpu_percent": busy}
    for tag, texts in corpora.items():
        t0 = time.perf_counter()
        embed_batches(model, texts[:SPEED_SAMPLE])
        out[f"{tag}_passages_per_s"] = round(SPEED_SAMPLE / (time.perf_counter() - t0), 1)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        model.embed_query(q)
        times.append((time.perf_counter() - t0) * 1000)
    out["query_ms"] = {f"p{p}": round(float(np.percentile(times, p)), 2) for p in (50, 95)}
    return out


# ---------------------------------------------------------------- metrics


def top_k(scores: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def rank_metrics(ranked: NDArray[np.int64], rel: Sequence[set[int]]) -> dict[str, float]:
    """Binary-relevance nDCG@10, MRR@10, Recall@1/5/10 averaged over queries."""
    disc = 1 / np.log2(np.arange(2, 12))
    out: dict[str, list[float]] = {k: [] for k in ("ndcg@10", "mrr@10", "r@1", "r@5", "r@10")}
    for row, gold in zip(ranked[:, :10], rel, strict=True):
        hits = np.array([d in gold for d in row], dtype=float)
        out["ndcg@10"].append(float(hits @ disc / disc[: min(len(gold), 10)].sum()))
        out["mrr@10"].append(1 / (1 + int(hits.argmax())) if hits.any() else 0.0)
        for k in (1, 5, 10):
            out[f"r@{k}"].append(hits[:k].sum() / len(gold))
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


def calibration(scores: NDArray[np.float32], own: NDArray[np.int64]) -> dict[str, Any]:
    rows = np.arange(len(own))
    present = scores.max(axis=1)
    masked = scores.copy()
    masked[rows, own] = -np.inf
    removed = masked.max(axis=1)
    # AUC: P(top-1 when answerable > top-1 when unanswerable), over all pairs
    ranks = np.concatenate([present, removed]).argsort().argsort()[: len(present)] + 1
    auc = (ranks.sum() - len(present) * (len(present) + 1) / 2) / (len(present) * len(removed))
    pct = {
        name: {f"p{p}": round(float(np.percentile(v, p)), 4) for p in PCTS}
        for name, v in (("present", present), ("removed", removed))
    }
    return {**pct, "auc": round(float(auc), 4)}


# ---------------------------------------------------------------- main


def run_model(name: str, threads: int, cache: bool, data: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = get_embedder(name, EmbedderOptions(threads=threads))
    model.embed_query("warm-up")  # both backends load their weights lazily
    res: dict[str, Any] = {"dim": model.dim, "load_s": round(time.perf_counter() - t0, 2)}

    cdocs, cqueries, crel = data["cranfield"]
    paras, questions, own = data["cmrc"]
    half = LATENCY_QUERIES // 2
    res["speed"] = speed(
        model, {"cranfield": cdocs, "cmrc": paras}, cqueries[:half] + questions[:half]
    )

    dvec = embed(model, cdocs, "passages", "cranfield", cache)
    qvec = embed(model, cqueries, "queries", "cranfield", cache)
    res["cranfield"] = rank_metrics(top_k(qvec @ dvec.T, 10), crel)

    pvec = embed(model, paras, "passages", "cmrc", cache)
    qvec = embed(model, questions, "queries", "cmrc", cache)
    scores = qvec @ pvec.T
    res["cmrc"] = rank_metrics(top_k(scores, 10), [{i} for i in own])
    res["calibration_cmrc_top1"] = calibration(scores, np.asarray(own))
    return res


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | dim | load s | cran p/s | cmrc p/s | query p50/p95 ms | others' CPU % "
        "| Cran nDCG@10 | Cran MRR@10 | Cran R@10 | CMRC R@1 | CMRC R@5 | CMRC MRR@10 |",
        "|---" * 13 + "|",
    ]
    for name, r in results.items():
        c, m, sp = r["cranfield"], r["cmrc"], r["speed"]
        q = sp["query_ms"]
        lines.append(
            f"| {name} | {r['dim']} | {r['load_s']:.2f} | {sp['cranfield_passages_per_s']} "
            f"| {sp['cmrc_passages_per_s']} | {q['p50']:.1f} / {q['p95']:.1f} "
            f"| {sp['others_cpu_percent']:.0f} | {c['ndcg@10']:.3f} "
            f"| {c['mrr@10']:.3f} | {c['r@10']:.3f} | {m['r@1']:.3f} | {m['r@5']:.3f} "
            f"| {m['mrr@10']:.3f} |"
        )
    lines += [
        "",
        "CMRC top-1 cosine, own paragraph present vs removed (p5 / p25 / p50 / p75 / p95), AUC:",
        "",
        "| model | present | removed | AUC |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        cal = r["calibration_cmrc_top1"]
        fmt = {k: " / ".join(f"{v:.3f}" for v in cal[k].values()) for k in ("present", "removed")}
        lines.append(f"| {name} | {fmt['present']} | {fmt['removed']} | {cal['auc']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=sorted(EMBEDDERS), choices=sorted(EMBEDDERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-cache", action="store_true", help="re-embed everything")
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = {"cranfield": load_cranfield(), "cmrc": load_cmrc()}
    results = {name: run_model(name, args.threads, not args.no_cache, data) for name in args.models}
    wall = time.perf_counter() - t0

    print(markdown(results))
    print(f"\nwall time {wall:.0f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "threads": args.threads,
        "batch": BATCH,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "speed_sample": SPEED_SAMPLE,
        "latency_queries": LATENCY_QUERIES,
        **{
            tag: {
                "passages": len(docs),
                "queries": len(queries),
                "mean_passage_chars": round(float(np.mean([len(d) for d in docs])), 1),
            }
            for tag, (docs, queries, _) in data.items()
        },
        "wall_s": round(wall, 1),
        "cache": not args.no_cache,
    }
    RESULTS.write_text(json.dumps({"settings": meta, "models": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
