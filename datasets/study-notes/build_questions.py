"""Build questions.jsonl from questions.yaml, then check it against the notes.

    python datasets/study-notes/build_questions.py          # rebuild and check
    python datasets/study-notes/build_questions.py --check  # only check the committed file

Gold line ranges are computed here from the facts (or the `at` anchors), so editing a
note only needs a rebuild; the check fails when a fact is no longer on its gold lines.
Needs the sourcebook package importable (PYTHONPATH=src or an installed checkout).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import yaml

from sourcebook.evaluation.study_notes import build_rows, check_questions, load_questions

ROOT = Path(__file__).resolve().parent


def render(root: Path = ROOT) -> str:
    source = yaml.safe_load((root / "questions.yaml").read_text(encoding="utf-8"))
    rows = build_rows(root, source)
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> int:
    if "--check" not in sys.argv:
        (ROOT / "questions.jsonl").write_text(render(), encoding="utf-8")
    questions = load_questions(ROOT)
    problems = check_questions(ROOT, questions)
    for problem in problems:
        print(problem, file=sys.stderr)
    counts = Counter((q.split, q.lang, q.note_lang, q.answerable) for q in questions)
    print(f"{len(questions)} questions, {sum(not q.answerable for q in questions)} unanswerable")
    for split in ("tune", "test"):
        parts = [
            f"{lang}/{note}/{'ans' if ans else 'unans'} {n}"
            for (s, lang, note, ans), n in sorted(counts.items())
            if s == split
        ]
        print(f"{split}: {sum(n for k, n in counts.items() if k[0] == split)}: " + ", ".join(parts))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
