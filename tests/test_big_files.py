"""CSV files of any size are read and stored in parts: the result is the file read whole,
a process killed between parts leaves a consistent store that `sync` completes, and a
malformed file is reported before any of it replaces what was indexed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from killing import kill_when, stored_rows
from sourcebook import KnowledgeBase, Settings
from sourcebook.ingest.converters import convert
from sourcebook.store.base import PARTIAL_HASH

GOODS = ["显卡 GPU", "内存条 RAM", "固态硬盘 SSD", "主板 motherboard", "电源 power supply"]


def write_csv(path: Path, rows: int, start: int = 0) -> None:
    """A header, then one row per item: a code only that row holds, Chinese and English
    names, a price. Row i is on file line i + 2."""
    lines = ["编号 code,商品 item,价格 price"]
    for i in range(start, start + rows):
        lines.append(f"sku{i:06d},{GOODS[i % len(GOODS)]} 第{i}号,{100 + i * 3}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_csv_stored_in_parts_reads_as_the_whole_file(tmp_path: Path) -> None:
    table = tmp_path / "data" / "prices.csv"
    table.parent.mkdir()
    write_csv(table, 1_000)
    settings = Settings(kb=tmp_path / "kb", embedder="use-multilingual", csv_part_rows=100)
    with KnowledgeBase.create(tmp_path / "kb", settings) as kb:
        report = kb.add([table.parent])
        assert (report.added, report.failed) == (1, [])
        whole = convert(table, table.read_bytes())  # the same file as one part
        assert kb.document_text(table) == whole.text
        # line ranges read only the parts that hold them, and are the whole text's lines
        lines = whole.text.split("\n")
        for first, last in [(1, 3), (100, 160), (400, 1100), (len(lines) - 2, len(lines) + 5)]:
            expected = "\n".join(lines[first - 1 : last])
            assert kb.document_text(table, first, last) == expected, (first, last)
        # what one API or MCP request gets is cut at a line limit, and says so
        text, truncated = kb.document_lines(table, None, None, limit=500)
        assert (text, truncated) == ("\n".join(lines[:500]), True)
        text, truncated = kb.document_lines(table, 1001, None, limit=500)
        assert (text, truncated) == ("\n".join(lines[1000:]), False)
        # the web view asks every document for its wiki-links: a sheet's text is not read
        reads: list[tuple[int | None, int | None]] = []
        read = kb.store.document_text

        def recorded(path: str, start: int | None = None, end: int | None = None) -> str | None:
            reads.append((start, end))
            return read(path, start, end)

        kb.store.document_text = recorded  # type: ignore[method-assign]
        assert kb.links(table) == []
        assert reads == [(1, 1)]  # only the check that the reader may read it
        kb.store.document_text = read  # type: ignore[method-assign]
        document = kb.store.document(str(table))
        assert document is not None
        assert (
            document.content_hash == hashlib.blake2b(table.read_bytes(), digest_size=16).hexdigest()
        )
        assert document.chunks == report.chunks_added > 10  # ten parts of 100 rows
        # a row of the last part is found and cited on its own line of the file
        hit = kb.search("sku000987", limit=1)[0]
        assert hit.path.endswith("prices.csv") and hit.line_start <= 989 <= hit.line_end
        assert "| 编号 code | 商品 item | 价格 price |" in hit.text  # under its header
        lines = table.read_text(encoding="utf-8").split("\n")
        assert lines[989 - 1].startswith("sku000987,")
        assert kb.store.consistency_problems() == []

        # the file shrinks and changes: every part of the old version goes
        write_csv(table, 250, start=5_000)
        report = kb.sync()
        assert (report.updated, report.failed) == (1, [])
        assert kb.document_text(table) == convert(table, table.read_bytes()).text
        assert all("sku000987" not in h.text for h in kb.search("sku000987", limit=3))
        assert kb.store.consistency_problems() == []


def test_a_csv_is_not_held_to_the_file_size_limit(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    write_csv(notes / "big.csv", 2_000)  # ~80 KB
    (notes / "big.md").write_text("# 笔记\n\n" + "很长的笔记。" * 20_000, encoding="utf-8")
    settings = Settings(kb=tmp_path / "kb", embedder="use-multilingual", max_file_mb=0.05)
    with KnowledgeBase.create(tmp_path / "kb", settings) as kb:
        report = kb.add([notes])
        assert report.added == 1
        assert [(Path(f.path).name, f.reason) for f in report.failed] == [
            ("big.md", "larger than the 0.05 MB limit (raise it with SOURCEBOOK_MAX_FILE_MB)")
        ]
        assert kb.search("sku001999", limit=1)[0].path.endswith("big.csv")


def test_a_malformed_csv_is_reported_before_it_replaces_the_indexed_version(
    tmp_path: Path,
) -> None:
    table = tmp_path / "data" / "prices.csv"
    table.parent.mkdir()
    write_csv(table, 300)
    settings = Settings(kb=tmp_path / "kb", embedder="use-multilingual", csv_part_rows=40)
    with KnowledgeBase.create(tmp_path / "kb", settings) as kb:
        kb.add([table.parent])
        indexed = kb.document_text(table)
        # a stray quote near the end: found only after several parts could be stored
        text = table.read_text(encoding="utf-8").split("\n")
        text[280] = 'sku999999,"unterminated'
        table.write_text("\n".join(text), encoding="utf-8")
        # an upload keeps what was indexed when its replacement fails
        report = kb.add([table.parent], keep_unreadable=True)
        assert [f.reason for f in report.failed] == [
            "malformed CSV in the row starting on line 281: unexpected end of data"
        ]
        assert kb.document_text(table) == indexed
        # `sync` of a file that cannot be read any more removes it, leaving no part behind
        report = kb.sync()
        assert report.removed == 1 and kb.store.document(str(table)) is None
        assert kb.search("sku000010", limit=3) == []
        assert kb.store.consistency_problems() == []


def test_sigkill_between_parts_then_sync_completes_the_file(tmp_path: Path) -> None:
    table = tmp_path / "data" / "prices.csv"
    table.parent.mkdir()
    write_csv(table, 30_000)
    kb_path = tmp_path / "kb"
    env = {
        **os.environ,
        "SOURCEBOOK_EMBEDDER": "use-multilingual",
        "SOURCEBOOK_KB": str(kb_path),
        "SOURCEBOOK_CSV_PART_ROWS": "200",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sourcebook.surfaces.cli", "add", str(table), "--no-wait"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    kill_when(process, lambda: stored_rows(kb_path / "sourcebook.db", "chunks") >= 100, within=240)

    settings = Settings(kb=kb_path, csv_part_rows=200)
    with KnowledgeBase(kb_path, settings) as kb:
        document = kb.store.document(str(table))
        assert document is not None and document.content_hash == PARTIAL_HASH  # killed mid-file
        assert kb.store.consistency_problems() == []
        assert kb.status().indexed_in_part == [str(table)]
        shown = subprocess.run(
            [sys.executable, "-m", "sourcebook.surfaces.cli", "status"],
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
        ).stdout
        assert "incomplete" in shown and "prices.csv" in shown and "sync" in shown
        assert kb.search("sku000003", limit=1)[0].path.endswith("prices.csv")  # the parts stored
        report = kb.sync(wait=False)  # keyword-searchable is enough here
        assert (report.updated, report.failed) == (1, [])
        document = kb.store.document(str(table))
        assert document is not None and document.content_hash != PARTIAL_HASH
        assert kb.status().indexed_in_part == []
        assert kb.document_text(table) == convert(table, table.read_bytes()).text
        hit = kb.search("sku029999", limit=1)[0]
        assert hit.line_start <= 30_001 <= hit.line_end
        assert kb.store.consistency_problems() == []
