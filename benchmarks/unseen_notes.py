"""The answer figures on notes the engine was not tuned on, pooled over every held-out half.

Issue 10's figures are re-checked on notes nobody here has seen. Each `fresh-notes*` set
(4 notes, 100 questions, see its README) was written after the engine; the halves listed in
`HELD_OUT` were never read for failures nor fitted on. One set alone has ~25 answerable and
~25 unanswerable questions per half, where one question moves a rate by four points, so
this script asks every held-out half and pools the scored questions: per question language,
per note language, and per set, and how well the refusal judge's confidence separates the
answerable questions from the rest (`judge_curve`).

    .venv/bin/python benchmarks/unseen_notes.py [--output unseen.json]

Each set is ingested into its own temporary knowledge base (`evaluate_study_notes`), with
the default settings, as `sourcebook eval study-notes` does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sourcebook.evaluation.study_notes import GROUPS, aggregate, evaluate_study_notes
from sourcebook.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"

# set → its halves that nothing was read or fitted on (see each set's README)
HELD_OUT: dict[str, tuple[str, ...]] = {
    "fresh-notes": ("test",),
    "fresh-notes-2": ("tune", "test"),
    "fresh-notes-3": ("test",),
    "fresh-notes-4": ("test",),
    "fresh-notes-5": ("test",),
}

_COLUMNS = (
    ("answerable", "ans."),
    ("unanswerable", "unans."),
    ("cited_and_contained", "facts+cited"),
    ("refused_answerable", "refused ans."),
    ("refused_unanswerable", "refused unans."),
    ("quotes_exact", "quotes exact"),
)


def ask_held_out(work: Path) -> list[dict[str, Any]]:
    """Every held-out question, scored, with the set and half it comes from."""
    records = []
    for name, halves in HELD_OUT.items():
        for half in halves:
            report = evaluate_study_notes(half, Settings(), work, root=DATA / name)
            for record in report["questions"]:
                records.append({**record, "set": f"{name}/{half}"})
            print(f"asked {name}/{half}: {report['queries']} questions", flush=True)
    return records


def table(groups: Mapping[str, Sequence[dict[str, Any]]]) -> list[str]:
    """A Markdown table of `aggregate` per group."""
    lines = [
        "| group | " + " | ".join(title for _, title in _COLUMNS) + " |",
        "|---|" + "---|" * len(_COLUMNS),
    ]
    for name, records in groups.items():
        if not records:
            continue
        shares = aggregate(records)
        cells = [_cell(shares[key]) for key, _ in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def judge_curve(records: Sequence[dict[str, Any]]) -> list[str]:
    """How well the answer/refuse confidence ranks answerable above unanswerable questions
    (AUC; a question a rule refused counts as confidence 0), and the share of unanswerable
    ones refused at the thresholds that would refuse 5-15% of the answerable ones: whether
    a change separates them better or only moves along the same curve."""
    answerable = sorted(r["confidence"] for r in records if r["answerable"])
    unanswerable = [r["confidence"] for r in records if not r["answerable"]]
    pairs = sum((a > u) + 0.5 * (a == u) for a in answerable for u in unanswerable)
    lines = [f"AUC {pairs / (len(answerable) * len(unanswerable)):.3f}"]
    for share in (0.05, 0.10, 0.15):
        threshold = answerable[int(share * len(answerable))]
        refused = sum(u < threshold for u in unanswerable) / len(unanswerable)
        lines.append(f"answerable refused {share:.0%}: unanswerable refused {refused:.3f}")
    return lines


def _grouped(records: Sequence[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(record)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, help="write the scored questions as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unseen-notes-") as scratch:
        records = ask_held_out(args.work or Path(scratch))
    by_language = {name: [r for r in records if test(r)] for name, test in GROUPS.items()}
    by_note = {f"{lang} notes": rs for lang, rs in _grouped(records, "note_lang").items()}
    by_set = _grouped(records, "set")
    for title, groups in (
        ("question language", by_language),
        ("note language", by_note),
        ("set", by_set),
    ):
        print(f"\nby {title}:")
        print("\n".join(table(groups)))
    print("\njudge:\n" + "\n".join(judge_curve(records)))
    if args.output:
        args.output.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
