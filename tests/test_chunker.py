"""Chunks follow the structure, respect the budget and cite exact lines."""

from __future__ import annotations

import itertools
from pathlib import Path

from sourcebook.ingest.chunker import ChunkingOptions, chunk_document
from sourcebook.ingest.converters import convert
from sourcebook.models import ChunkDraft, Heading, ParsedDocument
from sourcebook.text import count_tokens

NOTES = Path(__file__).resolve().parents[1] / "examples" / "notes"


def chunks_of(
    path: Path, options: ChunkingOptions | None = None
) -> tuple[ParsedDocument, list[ChunkDraft]]:
    doc = convert(path, path.read_bytes())
    return doc, chunk_document(doc, options or ChunkingOptions())


def test_heading_paths_and_line_ranges_match_the_file() -> None:
    path = NOTES / "llm" / "lora.md"
    lines = path.read_text(encoding="utf-8").split("\n")  # the file's own characters
    _, chunks = chunks_of(path)
    assert any(c.heading_path == ["LoRA", "为什么省显存"] for c in chunks)
    for chunk in chunks:
        first_line = chunk.text.split("\n")[0]
        last_line = chunk.text.split("\n")[-1]
        assert first_line.strip() in lines[chunk.line_start - 1]
        assert last_line.strip() in lines[chunk.line_end - 1]


def test_budget_and_overlap_on_every_note() -> None:
    options = ChunkingOptions(max_tokens=80, overlap_tokens=20)
    for path in sorted(NOTES.rglob("*.md")):
        doc, chunks = chunks_of(path, options)
        assert chunks, path
        for chunk in chunks:
            assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
            fence_lines = [ln for ln in chunk.text.split("\n") if ln.strip().startswith("```")]
            if count_tokens(chunk.text) > options.max_tokens:
                # only an atomic block bigger than the budget may exceed it
                assert len(fence_lines) == 0 and "|" not in chunk.text[:1], chunk.text


def test_code_blocks_and_tables_stay_whole() -> None:
    body = "\n\n".join(f"第 {i} 段文字，讲 attention 的细节。" * 3 for i in range(6))
    code = (
        "```python\n" + "\n".join(f"x{i} = softmax(q @ k.T / d ** 0.5)" for i in range(6)) + "\n```"
    )
    table = "| name | value |\n|---|---|\n" + "\n".join(f"| beta{i} | 0.9{i} |" for i in range(5))
    text = f"# Attention\n\n{body}\n\n{code}\n\n{table}\n\n{body}\n"
    doc = ParsedDocument(text=text, title="t", headings=[Heading(0, 1, "Attention")])
    chunks = chunk_document(doc, ChunkingOptions(max_tokens=120, overlap_tokens=20))
    assert any(code in c.text for c in chunks)
    assert any(table in c.text for c in chunks)
    assert len(chunks) > 2


def test_overlap_repeats_tail_of_previous_chunk() -> None:
    sentences = "".join(f"这是第{i}句话，内容是关于量化的说明。" for i in range(40))
    doc = ParsedDocument(text=sentences, title="t")
    chunks = chunk_document(doc, ChunkingOptions(max_tokens=60, overlap_tokens=20))
    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        assert current.char_start < previous.char_end  # overlapping
        assert current.char_start > previous.char_start  # but always advancing
