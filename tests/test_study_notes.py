"""The study-notes evaluation set: the data is consistent, and `sourcebook eval
study-notes` runs it through the real pipeline and reports what it promises."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from sourcebook.evaluation.study_notes import (
    GoldRange,
    check_questions,
    dataset_root,
    fold,
    load_questions,
    note_lines,
    quote_check,
    split_of,
)
from sourcebook.models import Citation, SearchHit

ROOT = Path(__file__).resolve().parents[1] / "datasets" / "study-notes"


def test_dataset_is_found_from_the_checkout() -> None:
    assert dataset_root().resolve() == ROOT


def test_every_fact_is_on_its_gold_lines_and_every_path_exists() -> None:
    questions = load_questions(ROOT)
    assert check_questions(ROOT, questions) == []
    for question in questions:
        for gold in question.gold:
            assert (ROOT / gold.path).is_file(), gold.path


def test_the_set_has_the_promised_shape() -> None:
    questions = load_questions(ROOT)
    notes = list((ROOT / "notes").iterdir())
    markdown = [p for p in notes if p.suffix == ".md"]
    assert len(markdown) >= 10 and all(len(p.read_text()) >= 2000 for p in markdown)
    assert {p.suffix for p in notes} >= {".md", ".html", ".pdf"}
    assert len(questions) >= 150
    assert sum(not q.answerable for q in questions) >= 40
    assert sum(q.lang == "en" and q.note_lang == "zh" for q in questions) >= 40
    assert {q.lang for q in questions} == {"zh", "en", "mixed"}
    assert {q.kind for q in questions} >= {"definition", "number", "table", "why", "multi"}
    # questions on every kind of file
    assert {Path(g.path).suffix for q in questions for g in q.gold} == {".md", ".html", ".pdf"}


def test_split_is_the_hash_of_the_id_and_balanced_per_language() -> None:
    questions = load_questions(ROOT)
    assert all(q.split == split_of(q.id) for q in questions)
    counts = Counter((q.lang, q.split) for q in questions)
    for lang in ("zh", "en", "mixed"):
        tune, test = counts[(lang, "tune")], counts[(lang, "test")]
        assert abs(tune - test) <= 0.2 * (tune + test), (lang, tune, test)


def _rendered(root: Path) -> str:
    """questions.jsonl as `build_questions.py` renders it from the folder's YAML."""
    spec = importlib.util.spec_from_file_location("build_questions", ROOT / "build_questions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.render(root))


def test_questions_jsonl_is_built_from_questions_yaml() -> None:
    """The .jsonl is generated (gold lines computed from facts): it must be up to date."""
    assert _rendered(ROOT) == (ROOT / "questions.jsonl").read_text(encoding="utf-8")


# notes written after the engine was tuned, to check that its figures hold on unseen notes
FRESH = sorted((ROOT.parents[1] / "benchmarks" / "data").glob("fresh-notes*"))


@pytest.mark.parametrize("root", FRESH, ids=[p.name for p in FRESH])
def test_the_fresh_sets_are_consistent_and_built_from_their_yaml(root: Path) -> None:
    questions = load_questions(root)
    assert len(questions) >= 80 and sum(not q.answerable for q in questions) >= 40
    assert check_questions(root, questions) == []
    assert _rendered(root) == (root / "questions.jsonl").read_text(encoding="utf-8")


def test_the_converter_extracts_the_pdf_and_html_text() -> None:
    from sourcebook.ingest.converters import convert

    pdf = ROOT / "notes" / "speculative-decoding.pdf"
    text = convert(pdf, pdf.read_bytes()).text
    assert "min(1, p(x) / q(x))" in text and "quality is unchanged" in text
    page = ROOT / "notes" / "flash-attention.html"
    assert "不支持 V100" in convert(page, page.read_bytes()).text


def test_checker_reports_a_fact_off_its_gold_lines() -> None:
    question = next(q for q in load_questions(ROOT) if q.id == "ort-01")
    moved = dataclasses.replace(question, gold=(GoldRange(question.gold[0].path, 1, 3),))
    problems = check_questions(ROOT, [moved])
    assert any("not on its gold lines" in p for p in problems)
    missing = dataclasses.replace(question, gold=(GoldRange("notes/nope.md", 1, 1),))
    assert any("does not exist" in p for p in check_questions(ROOT, [missing]))


def test_fold_ignores_width_case_and_spaces_only() -> None:
    assert fold("QLoRA（Dettmers 等，2023）") == fold("qlora(dettmers等,2023)")
    assert fold("8.x") != fold("9.x")


def _citation(path: Path, lines: tuple[int, int], page: int | None = None) -> Citation:
    hit = SearchHit(
        chunk_id=1,
        doc_id=1,
        path=str(path),
        title="",
        kind="markdown",
        heading_path=[],
        line_start=lines[0],
        line_end=lines[1],
        page_start=page,
        page_end=page,
        text="",
        score=1.0,
    )
    return Citation(n=1, hit=hit, quote_lines=[lines])


def test_quote_check_is_byte_exact_on_the_cited_lines() -> None:
    note = ROOT / "notes" / "lora-qlora.md"
    lines = note_lines(note)
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("QLoRA（"))
    original = "QLoRA（Dettmers 等，2023）"
    citation = _citation(note, (number, number))
    assert quote_check(ROOT, citation, original, (number, number)) == "exact"
    assert quote_check(ROOT, citation, "QLoRA(Dettmers 等,2023)", (number, number)) == "altered"
    assert quote_check(ROOT, citation, original, (1, 2)) == "elsewhere"


def test_quote_check_for_html_and_pdf_compares_the_visible_text() -> None:
    page = ROOT / "notes" / "flash-attention.html"
    number = next(i for i, line in enumerate(note_lines(page), 1) if "不支持 V100" in line)
    citation = _citation(page, (number, number))
    quote = (
        "- flash-attn 包需要 Ampere 及以上的 GPU（A100、RTX 30 系列、RTX 40 系列、H100），"
        "不支持 V100"
    )
    assert quote_check(ROOT, citation, quote, (number, number)) == "exact"
    assert quote_check(ROOT, citation, quote.replace("（", "("), (number, number)) == "altered"
    pdf = ROOT / "notes" / "speculative-decoding.pdf"
    citation = _citation(pdf, (12, 13), page=1)
    quote = "accept it with probability min(1, p(x) / q(x))"
    assert quote_check(ROOT, citation, quote, (12, 13)) == "exact"
    assert quote_check(ROOT, citation, "a sentence the PDF does not have", (12, 13)) == "altered"


@pytest.mark.slow
def test_eval_study_notes_on_the_tune_split(tmp_path: Path) -> None:
    """Through the real CLI with the fast embedder, every tuning question: the report's
    structure, and every quote of every answer a byte-exact substring of its file on the
    lines it cites."""
    from typer.testing import CliRunner

    from sourcebook.surfaces.cli import app

    output = tmp_path / "results.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "study-notes",
            "--split",
            "tune",
            "--model",
            "use-multilingual",
            "--work",
            str(tmp_path / "work"),
            "--output",
            str(output),
            "--chart",
            str(tmp_path / "chart.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    entry = json.loads(output.read_text())["datasets"]["study-notes"]
    tune_ids = {q.id for q in load_questions(ROOT) if q.split == "tune"}
    assert entry["split"] == "tune" and entry["queries"] == len(tune_ids)
    assert {r["id"] for r in entry["questions"]} == tune_ids
    assert set(entry["by_language"]) == {"all", "zh", "en", "mixed", "en_over_zh_notes"}
    overall = entry["by_language"]["all"]
    for key in (
        "facts_contained",
        "cited_gold",
        "cited_and_contained",
        "refused_answerable",
        "refused_unanswerable",
        "quotes_exact",
    ):
        assert key in overall
    assert overall["questions"] == len(tune_ids) == overall["answerable"] + overall["unanswerable"]
    quotes = [q for r in entry["questions"] for q in r["quotes"]]
    exact = entry["byte_exact_quotes"]
    assert quotes and exact["quotes"] == len(quotes)
    assert exact["exact"] + exact["elsewhere_in_file"] + exact["altered"] == len(quotes)
    wrong = [(r["id"], q) for r in entry["questions"] for q in r["quotes"] if q["check"] != "exact"]
    assert not wrong, wrong
    assert "byte-exact quotes:" in result.output and "en_over_zh_notes" in result.output
    assert not (tmp_path / "chart.png").exists()  # no retrieval figures to chart
    assert not any((tmp_path / "work").iterdir())  # the temporary knowledge base is gone
