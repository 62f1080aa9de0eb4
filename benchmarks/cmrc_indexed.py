"""CMRC 2018 answer figures on the paragraphs the CMRC knowledge base holds so far.

`sourcebook eval cmrc2018 --split test --answer-limit 300` first indexes all 848
paragraphs, which takes an hour on a loaded 2-core machine. This measures the same answer
figures (`evaluate_answers`: gold contained, refusals of answerable questions and of the
same questions with their paragraph excluded) on the held-out questions whose paragraph is
already in the knowledge base `build_kb` writes (benchmarks/work/eval/cmrc2018-…), without
indexing anything. Fewer competing paragraphs make retrieval easier than on the full set, so
read it as a comparison between answerers on the same subset, not as the full figure.

    python benchmarks/cmrc_indexed.py [--split test] [--limit 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_refusal import open_indexed

from sourcebook.evaluation.datasets import load_named
from sourcebook.evaluation.run import evaluate_answers
from sourcebook.settings import DEFAULT_EMBEDDER, Settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "eval")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    dataset = load_named("cmrc2018")
    kb, indexed = open_indexed(dataset, Settings(embedder=DEFAULT_EMBEDDER), args.work)
    queries = [q for q in dataset.split(args.split) if next(iter(q.relevant)) in indexed]
    queries = queries[: args.limit]
    result = evaluate_answers(kb, queries)
    kb.close()
    result["paragraphs_indexed"] = len(indexed)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
