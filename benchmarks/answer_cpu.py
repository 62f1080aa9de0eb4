"""CPU time per extractive answer (`kb.ask`) on an existing knowledge base.

Process CPU seconds (every thread: the answer runs in its worker pool) are far less
sensitive to other jobs on a shared machine than wall time, so two answerers can be
compared on one store even under load: run this once per checkout (PYTHONPATH=…/src) on
copies of the same knowledge base, alternating.

    python benchmarks/answer_cpu.py KB_FOLDER [--questions 60]

The questions are the study-notes tuning split (the store should hold those notes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from sourcebook.evaluation.study_notes import dataset_root, load_questions
from sourcebook.kb import KnowledgeBase
from sourcebook.settings import DEFAULT_EMBEDDER, Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kb", type=Path)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    kb = KnowledgeBase(args.kb, Settings(kb=args.kb, embedder=DEFAULT_EMBEDDER))
    questions = [q.question for q in load_questions(dataset_root()) if q.split == "tune"]
    for question in questions[: args.warmup]:
        kb.ask(question)  # loads the models and the bilingual dictionary
    wall, cpu = [], []
    for question in questions[args.warmup : args.warmup + args.questions]:
        started, used = time.perf_counter(), time.process_time()
        kb.ask(question)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    kb.close()
    wall.sort()
    cpu.sort()
    print(
        json.dumps(
            {
                "asks": len(cpu),
                "cpu_p50_ms": round(cpu[len(cpu) // 2], 1),
                "cpu_p95_ms": round(cpu[int(len(cpu) * 0.95)], 1),
                "wall_p50_ms": round(wall[len(wall) // 2], 1),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
