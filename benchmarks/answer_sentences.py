"""How many candidate sentences the extractive answerer should embed (quality vs. time).

The answerer ranks the sentences of the evidence by the question terms they cover and
embeds the best `answer_embedded_sentences` of them to compare with the question; embedding
is nearly all of an answer's time. For each cap, on CMRC 2018 questions of one split:
answer quality (`evaluate_answers`: gold answer contained, refusals with and without the
question's paragraph, citation precision) and the time of `KnowledgeBase.ask` on the first
`--timed` questions with empty vector caches (a fresh `KnowledgeBase` per cap).

    python benchmarks/answer_sentences.py --split tune --limit 400 --caps 16 12 10 8 6
    python benchmarks/answer_sentences.py --split test --limit 300 --caps 16 8

Choose on the tuning split; the held-out split is for reporting the choice once.
Quality runs share one knowledge base, so sentence vectors computed for a larger cap are
reused by smaller ones (the results are the same, only faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from sourcebook.evaluation.datasets import load_named
from sourcebook.evaluation.run import build_kb, evaluate_answers
from sourcebook.kb import KnowledgeBase
from sourcebook.settings import DEFAULT_EMBEDDER, Settings

ROOT = Path(__file__).resolve().parents[1]
QUALITY = (
    "answer_contains_gold",
    "refusal_rate_answerable",
    "refusal_rate_unanswerable",
    "citation_precision",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["tune", "test"], default="tune")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--caps", type=int, nargs="+", default=[16, 12, 10, 8, 6])
    parser.add_argument("--timed", type=int, default=40, help="questions timed per cap")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "eval")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    dataset = load_named("cmrc2018")
    settings = Settings(embedder=DEFAULT_EMBEDDER)
    queries = dataset.split(args.split)[: args.limit]
    kb = build_kb(dataset, settings, args.work, print)
    rows = []
    for cap in sorted(args.caps, reverse=True):
        timed_settings = settings.model_copy(update={"answer_embedded_sentences": cap})
        with KnowledgeBase(kb.path, timed_settings) as fresh:
            fresh.ask(queries[0].text)  # load the models
            times = []
            for query in queries[1 : args.timed + 1]:
                started = time.perf_counter()
                fresh.ask(query.text)
                times.append(1000 * (time.perf_counter() - started))
        kb.settings.answer_embedded_sentences = cap
        quality = evaluate_answers(kb, queries)
        row = {
            "cap": cap,
            **{k: quality[k] for k in QUALITY},
            "ask_p50_ms": round(statistics.median(times), 1),
            "ask_p95_ms": round(statistics.quantiles(times, n=20)[-1], 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.output:
        report = {"split": args.split, "questions": len(queries), "rows": rows}
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    kb.close()


if __name__ == "__main__":
    main()
