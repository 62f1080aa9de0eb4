"""English questions over the Chinese study notes, written after the study-notes splits were
fixed and without reading the held-out split: a check of how the cross-language changes
generalise beyond the tuning questions they were made on.

`benchmarks/data/study-notes-dev-en.jsonl`: 25 answerable questions (each with the facts a
correct answer contains, exact substrings of the notes) over `distributed-training.md` and
`kv-cache-inference.md`, and 8 on-topic ones the notes do not answer.
`benchmarks/data/study-notes-dev2-en.jsonl` (session 8, written from the notes alone, never
from the question splits): 49 answerable and 15 unanswerable English questions over eight
other Chinese notes (one question, on LLaMA-2 70B's KV groups, was labelled unanswerable
until session 10: `kv-cache-inference.md` answers it).
`benchmarks/data/study-notes-dev3.jsonl` (session 10, written the same way, over all thirteen
notes): 65 answerable and 65 unanswerable questions, 90 in English and 40 in Chinese or
mixed; the unanswerable ones are near misses: every name they use is in the notes, the fact
they ask for is not (a default, a year, a table row one version past the last). Each
question is in the "tune" half (78, on which `calibrate_refusal.py` fits the judge) or the
"check" half (52): report on `--split check`.

    python benchmarks/notes_dev.py [--kb PATH] [--questions FILE] [--split S] [--verbose]

Without --kb, `datasets/study-notes/notes` is indexed into benchmarks/work/notes-dev-kb.
"""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from pathlib import Path

from sourcebook import KnowledgeBase, Settings

ROOT = Path(__file__).resolve().parents[1]


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=ROOT / "benchmarks" / "work" / "notes-dev-kb")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--questions",
        type=Path,
        default=ROOT / "benchmarks" / "data" / "study-notes-dev-en.jsonl",
        help="study-notes-dev-en.jsonl (the default), study-notes-dev2-en.jsonl or "
        "study-notes-dev3.jsonl",
    )
    parser.add_argument(
        "--split",
        choices=["tune", "check", "all"],
        default="all",
        help="of study-notes-dev3.jsonl: its tuning half (the judge is fitted on it) or the "
        "check half",
    )
    args = parser.parse_args()
    create = not (args.kb / "sourcebook.db").exists()
    kb = KnowledgeBase(args.kb, Settings(kb=args.kb), create=create)
    kb.add([ROOT / "datasets" / "study-notes" / "notes"])
    questions = [json.loads(line) for line in args.questions.open(encoding="utf-8")]
    questions = [q for q in questions if args.split in ("all", q.get("split", "all"))]
    answerable = [q for q in questions if q["a"]]
    contained = refused = at_5 = 0
    for q in answerable:
        facts = [_normal(f) for f in q["facts"]]
        hits = kb.search(q["q"], limit=5)
        at_5 += any(all(f in _normal(h.text) for f in facts) for h in hits)
        answer = kb.ask(q["q"])
        refused += not answer.found
        good = answer.found and all(f in _normal(answer.text) for f in facts)
        contained += good
        if args.verbose and not good:
            print(f"{'miss' if answer.found else 'refused'} {answer.confidence:.3f} {q['q']}")
    unanswerable = [q for q in questions if not q["a"]]
    refused_unanswerable = sum(not kb.ask(q["q"]).found for q in unanswerable)
    kb.close()
    n = len(answerable)
    print(
        f"answerable {n}: gold passage in the top 5 {at_5 / n:.2f}, facts contained "
        f"{contained / n:.2f}, refused {refused / n:.2f}; unanswerable {len(unanswerable)}: "
        f"refused {refused_unanswerable / len(unanswerable):.2f}"
    )


if __name__ == "__main__":
    main()
