"""The command line: JSON output, readable errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.surfaces.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_search_and_ask_json(notes_kb: KnowledgeBase) -> None:
    kb = str(notes_kb.path)
    code, out, _ = run("search", "KV cache 显存", "--kb", kb, "--json", "-k", "3")
    assert code == 0
    hits = json.loads(out)
    assert len(hits) == 3 and all({"path", "line_start", "ranks"} <= set(h) for h in hits)
    code, out, _ = run("ask", "Adam 的默认 β2 是多少？", "--kb", kb, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["found"] and "0.999" in answer["text"]
    location = answer["citations"][0]["hit"]
    code, out, _ = run(
        "show",
        f"{location['path']}:{location['line_start']}-{location['line_end']}",
        "--kb",
        kb,
        "--json",
    )
    assert code == 0 and "0.999" in json.loads(out)["text"]


def test_status_json(notes_kb: KnowledgeBase) -> None:
    code, out, _ = run("status", "--kb", str(notes_kb.path), "--json")
    status = json.loads(out)
    assert code == 0 and status["documents"] == 20 and status["index_consistent"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "LoRA", "--kb", "{missing}"), "no knowledge base at"),
        (("ask", "   ", "--kb", "{kb}"), "the question is empty"),
        (("search", "LoRA", "--kb", "{kb}", "--limit", "0"), "Invalid value"),
        (("show", "/no/such/file.md", "--kb", "{kb}"), "is not in the knowledge base"),
        (("init", "--kb", "{kb}"), "already exists"),
        (("init", "--kb", "{missing}", "--model", "bert"), "unknown embedding model"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(
    notes_kb: KnowledgeBase, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    filled = [a.format(kb=notes_kb.path, missing=tmp_path / "nothing") for a in args]
    code, out, err = run(*filled)
    assert code != 0
    assert message in out + err


def test_add_reports_failed_files_with_exit_code_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ok.md").write_text("# 标题\n\nLoRA 的 rank 通常取 8。\n", encoding="utf-8")
    (notes / "broken.pdf").write_bytes(b"%PDF-1.5 broken")
    env = {"SOURCEBOOK_EMBEDDER": "use-multilingual"}
    result = runner.invoke(app, ["add", str(notes), "--kb", str(tmp_path / "kb")], env=env)
    assert result.exit_code == 2
    assert "1 added" in result.stdout and "1 failed" in result.stdout
    assert "broken.pdf" in result.stderr and "corrupt PDF" in result.stderr
