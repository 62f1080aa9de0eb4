"""The study-notes evaluation set: real-looking notes, questions with gold facts and lines.

The set lives in the repository (`datasets/study-notes/`, see its README): `notes/` is the
corpus (Markdown, one HTML page, one PDF) and `questions.jsonl` the questions, each with
the facts a right answer contains and the 1-based line ranges that hold them. This module
loads and checks the set, and runs it through `KnowledgeBase.ask` (`sourcebook eval
study-notes`), reporting per question language:

- facts contained: every fact of the question is in the answer text;
- cited on gold: a quote's line range overlaps a gold range of the same file;
- both, refusals of answerable and of unanswerable questions;
- whether every quote is a byte-exact substring of its file on the lines it cites.

Facts are compared after NFKC, case folding and whitespace removal (`fold`); quotes are
compared exactly (see `quote_check`).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from sourcebook.evaluation.metrics import percentile
from sourcebook.models import Answer, Citation, SearchHit
from sourcebook.settings import DEFAULT_EMBEDDER, Settings

NAME = "study-notes"
KINDS = (
    "definition",
    "number",
    "table",
    "why",
    "multi",
    "list",
    "code",
    "heading",
    "unanswerable",
)
# Fixed once, when the set was first published (of salts v1..v399 the one whose halves
# were most even per language and answerability); changing it reshuffles tune and test.
_SPLIT_SALT = "study-notes/v393:"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GoldRange:
    path: str  # relative to the dataset folder, e.g. "notes/lora-qlora.md"
    start: int  # 1-based, inclusive
    end: int


@dataclass(frozen=True)
class NotesQuestion:
    id: str
    split: Literal["tune", "test"]
    lang: Literal["zh", "en", "mixed"]
    note_lang: Literal["zh", "en"]
    kind: str
    question: str
    answerable: bool
    facts: tuple[str, ...]
    gold: tuple[GoldRange, ...]


def dataset_root() -> Path:
    """The folder of the set: $SOURCEBOOK_STUDY_NOTES, else datasets/study-notes in the
    checkout this package runs from, else under the current directory."""
    configured = os.environ.get("SOURCEBOOK_STUDY_NOTES")
    if configured:
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "datasets" / NAME
        if (candidate / "questions.jsonl").is_file():
            return candidate
    return Path("datasets") / NAME


def split_of(question_id: str) -> Literal["tune", "test"]:
    """A fixed half by a hash of the id: adding questions never moves existing ones."""
    digest = hashlib.blake2b((_SPLIT_SALT + question_id).encode(), digest_size=2).digest()
    return "tune" if digest[0] % 2 == 0 else "test"


def fold(text: str) -> str:
    """What facts are matched on: NFKC, case-folded, without any whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


# --- the notes as lines ------------------------------------------------------------------


@cache
def _lines_cached(path: Path, mtime_ns: int) -> tuple[str, ...]:
    if path.suffix.lower() == ".pdf":
        # a PDF has no text lines of its own: citations count lines of the extracted text
        from sourcebook.ingest.converters import convert

        return tuple(convert(path, path.read_bytes()).text.split("\n"))
    text = path.read_bytes().decode("utf-8-sig")
    return tuple(line.removesuffix("\r") for line in text.split("\n"))


def note_lines(path: Path) -> tuple[str, ...]:
    """The lines that gold ranges and citations number: the file's own lines, except for
    a PDF, whose lines are those of the text the converter extracts."""
    return _lines_cached(path.resolve(), path.stat().st_mtime_ns)


def range_text(root: Path, gold: GoldRange) -> str:
    lines = note_lines(root / gold.path)
    return "\n".join(lines[gold.start - 1 : gold.end])


# --- loading and checking ----------------------------------------------------------------


def load_questions(root: Path | None = None) -> list[NotesQuestion]:
    root = root or dataset_root()
    path = root / "questions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: set SOURCEBOOK_STUDY_NOTES to the set's folder")
    questions = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                questions.append(_question(json.loads(line)))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: malformed question ({exc})") from exc
    return questions


def _question(row: dict[str, Any]) -> NotesQuestion:
    return NotesQuestion(
        id=str(row["id"]),
        split=row["split"],
        lang=row["lang"],
        note_lang=row["note_lang"],
        kind=row["kind"],
        question=row["question"],
        answerable=bool(row["answerable"]),
        facts=tuple(row["facts"]),
        gold=tuple(GoldRange(g["path"], int(g["start"]), int(g["end"])) for g in row["gold"]),
    )


def check_questions(root: Path, questions: Sequence[NotesQuestion]) -> list[str]:
    """Every problem with the set: unknown values, missing files, facts not on their gold
    lines (exact substrings of the note's text there), split not the id's hash."""
    problems: list[str] = []
    seen: set[str] = set()
    for q in questions:
        where = f"{q.id}:"
        if q.id in seen:
            problems.append(f"{where} duplicate id")
        seen.add(q.id)
        if q.split != split_of(q.id):
            problems.append(f"{where} split {q.split} but the id hashes to {split_of(q.id)}")
        if q.lang not in ("zh", "en", "mixed") or q.note_lang not in ("zh", "en"):
            problems.append(f"{where} bad lang/note_lang {q.lang}/{q.note_lang}")
        if q.kind not in KINDS or (q.kind == "unanswerable") == q.answerable:
            problems.append(f"{where} kind {q.kind} does not fit answerable={q.answerable}")
        if not q.answerable:
            if q.facts or q.gold:
                problems.append(f"{where} unanswerable questions have no facts and no gold")
            continue
        if not q.facts or not q.gold:
            problems.append(f"{where} answerable question without facts or gold")
            continue
        problems += _check_gold(root, q)
    return problems


def _check_gold(root: Path, q: NotesQuestion) -> list[str]:
    problems = []
    texts = []
    for gold in q.gold:
        path = root / gold.path
        if not path.is_file():
            problems.append(f"{q.id}: {gold.path} does not exist")
            continue
        count = len(note_lines(path))
        if not 1 <= gold.start <= gold.end <= count:
            problems.append(f"{q.id}: {gold.path}:{gold.start}-{gold.end} outside 1-{count}")
            continue
        texts.append(range_text(root, gold))
    for fact in q.facts:
        if not fact.strip():
            problems.append(f"{q.id}: empty fact")
        elif not any(fact in text for text in texts):
            problems.append(f"{q.id}: fact {fact!r} is not on its gold lines")
    return problems


# --- building questions.jsonl from questions.yaml ----------------------------------------


def locate_gold(root: Path, path: str, facts: Sequence[str], at: Sequence[str]) -> list[GoldRange]:
    """Gold ranges for facts of one note: the lines named by `at` (each must occur on
    exactly one line), else the one line each fact occurs on; neighbouring lines merge."""
    lines = note_lines(root / path)
    wanted: set[int] = set()
    for needle in at or facts:
        found = [i for i, line in enumerate(lines, start=1) if needle in line]
        if len(found) != 1:
            raise ValueError(
                f"{path}: {needle!r} occurs on {len(found)} lines {found[:5]}; "
                "name the gold line with `at`"
            )
        wanted.add(found[0])
    ranges: list[list[int]] = []
    for line in sorted(wanted):
        if ranges and line - ranges[-1][1] <= 2:  # one line apart: one passage
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    return [GoldRange(path, start, end) for start, end in ranges]


def build_rows(root: Path, source: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """questions.jsonl rows from the YAML source (questions grouped by note); every
    fact or anchor that names no single line is reported at once."""
    rows, errors = [], []
    for path, entries in source.items():
        note_lang = _note_language(root / path)
        for entry in entries:
            answerable = entry["kind"] != "unanswerable"
            facts = list(entry.get("facts", [])) if answerable else []
            try:
                gold = locate_gold(root, path, facts, entry.get("at", [])) if answerable else []
            except ValueError as exc:
                errors.append(f"{entry['id']}: {exc}")
                continue
            rows.append(
                {
                    "id": entry["id"],
                    "split": split_of(entry["id"]),
                    "lang": entry["lang"],
                    "note_lang": note_lang,
                    "kind": entry["kind"],
                    "question": entry["q"],
                    "answerable": answerable,
                    "facts": facts,
                    "gold": [g.__dict__ for g in gold],
                }
            )
    if errors:
        raise ValueError("\n".join(errors))
    return rows


def _note_language(path: Path) -> Literal["zh", "en"]:
    from sourcebook.text import cjk_ratio

    return "zh" if cjk_ratio("\n".join(note_lines(path))) >= 0.2 else "en"


# --- quotes: byte-exact on the cited lines -----------------------------------------------


_TAG = re.compile(r"<[^>]*>")
_SYNTHETIC = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|```\s*)|\s*\|\s*")


def quote_check(root: Path, citation: Citation, quote: str, lines: tuple[int, int]) -> str:
    """'exact' when the quote is a substring of its file on the cited lines; 'elsewhere'
    when it is in the file but not on those lines; 'altered' when it is not in the file.

    Markdown and text files are compared character for character. An HTML page is
    compared with the visible text of the cited source lines (tags removed, entities
    decoded, whitespace collapsed), a PDF with the text pypdf extracts from the cited
    pages (lines joined as the converter joins them: a hyphen at a line end and a break
    between Chinese characters removed, whitespace collapsed); the separators the
    converter adds there (list markers, heading marks, table bars) are not part of the
    comparison.
    """
    path = Path(citation.hit.path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm", ".xhtml"):
        source = path.read_text(encoding="utf-8").split("\n")
        on_lines = _visible("\n".join(source[lines[0] - 1 : lines[1]]))
        return _pieces_in(quote, on_lines, _visible("\n".join(source)))
    if suffix == ".pdf":
        pages = _pdf_pages(path)
        first, last = citation.hit.page_start or 1, citation.hit.page_end or len(pages)
        on_pages = " ".join(pages[first - 1 : last])
        return _pieces_in(quote, _collapse(on_pages), _collapse(" ".join(pages)))
    text = path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n")
    source = text.split("\n")
    if quote in "\n".join(source[lines[0] - 1 : lines[1]]):
        return "exact"
    return "elsewhere" if quote in text else "altered"


def _visible(fragment: str) -> str:
    return _collapse(html.unescape(_TAG.sub("", fragment)))


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _pieces_in(quote: str, on_lines: str, whole: str) -> str:
    pieces = [_collapse(p) for p in _SYNTHETIC.split(quote) if p and p.strip()]
    pieces = [p for p in pieces if p]
    if all(p in on_lines for p in pieces):
        return "exact"
    return "elsewhere" if all(p in whole for p in pieces) else "altered"


@cache
def _pdf_pages(path: Path) -> tuple[str, ...]:
    from pypdf import PdfReader

    from sourcebook.ingest.converters.base import join_lines

    pages = (page.extract_text() or "" for page in PdfReader(path).pages)
    return tuple(join_lines(page.split("\n")) for page in pages)


# --- running it --------------------------------------------------------------------------


def _overlaps(path: str, start: int, end: int, gold: Iterable[GoldRange]) -> bool:
    return any(g.path == path and start <= g.end and g.start <= end for g in gold)


def _relative(root: Path, hit: SearchHit) -> str:
    try:
        return Path(hit.path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return hit.path


def score_answer(root: Path, question: NotesQuestion, answer: Answer) -> dict[str, Any]:
    """One question's outcome: refused, facts contained, cited on gold, quote checks."""
    text = fold(re.sub(r"\[\d+\]", "", answer.text))
    quotes = []
    cited = False
    for citation in answer.citations:
        path = _relative(root, citation.hit)
        for quote, lines in zip(citation.quotes, citation.quote_lines, strict=False):
            cited = cited or _overlaps(path, lines[0], lines[1], question.gold)
            quotes.append(
                {
                    "path": path,
                    "lines": list(lines),
                    "quote": quote,
                    "check": quote_check(root, citation, quote, lines),
                }
            )
    found = answer.found
    contained = found and question.answerable and all(fold(f) in text for f in question.facts)
    return {
        "id": question.id,
        "lang": question.lang,
        "note_lang": question.note_lang,
        "kind": question.kind,
        "answerable": question.answerable,
        "question": question.question,
        "refused": not found,
        "contained": contained,
        "cited": found and question.answerable and cited,
        "confidence": answer.confidence,
        "answer": answer.text,
        "quotes": quotes,
    }


GROUPS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "all": lambda r: True,
    "zh": lambda r: r["lang"] == "zh",
    "en": lambda r: r["lang"] == "en",
    "mixed": lambda r: r["lang"] == "mixed",
    "en_over_zh_notes": lambda r: r["lang"] == "en" and r["note_lang"] == "zh",
}


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Shares over a group of scored questions (answerable and unanswerable apart)."""
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    quotes = [q for r in records for q in r["quotes"]]

    def share(rows: Sequence[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> Any:
        return round(sum(1 for r in rows if test(r)) / len(rows), 4) if rows else None

    return {
        "questions": len(records),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "facts_contained": share(answerable, lambda r: r["contained"]),
        "cited_gold": share(answerable, lambda r: r["cited"]),
        "cited_and_contained": share(answerable, lambda r: r["cited"] and r["contained"]),
        "gold_in_top5": share(answerable, lambda r: r.get("gold_in_top5", False)),
        "refused_answerable": share(answerable, lambda r: r["refused"]),
        "refused_unanswerable": share(unanswerable, lambda r: r["refused"]),
        "quotes": len(quotes),
        "quotes_exact": share(quotes, lambda q: q["check"] == "exact"),
    }


def evaluate_study_notes(
    split: str,
    settings: Settings,
    work: Path,
    model: str | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Ingest the notes into a fresh temporary knowledge base and ask every question of
    `split` ("tune", "test" or "all") through `KnowledgeBase.ask`."""
    from sourcebook.kb import KnowledgeBase

    root = (root or dataset_root()).resolve()
    questions = [q for q in load_questions(root) if split == "all" or q.split == split]
    questions = questions[:limit] if limit else questions
    model = model or settings.embedder or DEFAULT_EMBEDDER
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="study-notes-", dir=work) as scratch:
        kb_path = Path(scratch) / "kb"
        kb_settings = settings.model_copy(update={"kb": kb_path, "embedder": model})
        with KnowledgeBase(kb_path, kb_settings, create=True) as kb:
            if progress:
                progress(f"indexing {root / 'notes'} with {model}")
            report = kb.add([root / "notes"])
            if report.failed:
                raise RuntimeError(f"notes that failed to ingest: {report.failed}")
            records, latencies = _ask_all(kb, root, questions, progress)
    return _report(split, model, report.added, records, latencies)


def _ask_all(
    kb: Any, root: Path, questions: Sequence[NotesQuestion], progress: Progress | None
) -> tuple[list[dict[str, Any]], list[float]]:
    records, latencies = [], []
    for index, question in enumerate(questions, start=1):
        started = time.perf_counter()
        answer = kb.ask(question.question)
        latencies.append((time.perf_counter() - started) * 1000)
        record = score_answer(root, question, answer)
        hits = kb.search(question.question, limit=5)
        record["gold_in_top5"] = question.answerable and any(
            _overlaps(_relative(root, h), h.line_start, h.line_end, question.gold) for h in hits
        )
        records.append(record)
        if progress and index % 25 == 0:
            progress(f"asked {index}/{len(questions)}")
    return records, latencies


def _report(
    split: str,
    model: str,
    documents: int,
    records: list[dict[str, Any]],
    latencies: list[float],
) -> dict[str, Any]:
    by_kind = {
        kind: aggregate([r for r in records if r["kind"] == kind])
        for kind in KINDS
        if any(r["kind"] == kind for r in records)
    }
    checks = [q["check"] for r in records for q in r["quotes"]]
    return {
        "kind": NAME,
        "split": split,
        "embedder": model,
        "documents": documents,
        "queries": len(records),
        "by_language": {
            name: aggregate([r for r in records if test(r)]) for name, test in GROUPS.items()
        },
        "by_kind": by_kind,
        "byte_exact_quotes": {
            "quotes": len(checks),
            "exact": checks.count("exact"),
            "elsewhere_in_file": checks.count("elsewhere"),
            "altered": checks.count("altered"),
            "answers_all_exact": sum(
                1
                for r in records
                if r["quotes"] and all(q["check"] == "exact" for q in r["quotes"])
            ),
            "answers_with_quotes": sum(1 for r in records if r["quotes"]),
        },
        "ask_p50_ms": round(percentile(latencies, 0.5), 1),
        "ask_p95_ms": round(percentile(latencies, 0.95), 1),
        "questions": records,
    }


_COLUMNS = (
    ("questions", "n"),
    ("facts_contained", "facts"),
    ("cited_gold", "cited"),
    ("cited_and_contained", "both"),
    ("gold_in_top5", "gold@5"),
    ("refused_answerable", "refused ans."),
    ("refused_unanswerable", "refused unans."),
    ("quotes_exact", "quotes exact"),
)


def summarize_study_notes(entry: dict[str, Any]) -> list[str]:
    """Markdown tables: per question language, then per kind, then the quote check."""
    header = "| group | " + " | ".join(title for _, title in _COLUMNS) + " |"
    rule = "|---|" + "---|" * len(_COLUMNS)
    lines = [
        f"**{NAME}**, {entry['split']} split, {entry['queries']} questions, "
        f"{entry['documents']} notes, {entry['embedder']}",
        "",
        header,
        rule,
    ]
    lines += [_row(name, row) for name, row in entry["by_language"].items()]
    lines += ["", header.replace("group", "kind"), rule]
    lines += [_row(name, row) for name, row in entry["by_kind"].items()]
    exact = entry["byte_exact_quotes"]
    lines += [
        "",
        f"byte-exact quotes: {exact['exact']}/{exact['quotes']} exact on their lines, "
        f"{exact['elsewhere_in_file']} elsewhere in the file, {exact['altered']} altered; "
        f"answers with every quote exact: {exact['answers_all_exact']}/"
        f"{exact['answers_with_quotes']}; ask p50 {entry['ask_p50_ms']} ms, "
        f"p95 {entry['ask_p95_ms']} ms",
    ]
    return lines


def _row(name: str, row: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "–" if value is None else str(value)

    return f"| {name} | " + " | ".join(cell(row[key]) for key, _ in _COLUMNS) + " |"
