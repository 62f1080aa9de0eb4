"""Tables answer cell by cell: a row of a PDF table, a spreadsheet and a CSV is quoted with
its header through `KnowledgeBase.ask`, in Chinese and in English; so is a row far down a
long HTML table or a PDF table drawn without outer borders (written in blocks, each under
its header)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from documents import (
    TOOL_TABLE_HEADER,
    open_sided_table_pdf,
    tool_row,
    two_column_report,
    workbook,
)
from sourcebook import KnowledgeBase, Settings
from sourcebook.ingest.converters import convert


@pytest.fixture(scope="module")
def tables_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeBase]:
    base = tmp_path_factory.mktemp("tables")
    notes = base / "notes"
    notes.mkdir()
    two_column_report(notes / "report.pdf")
    workbook(notes / "gpus.xlsx")
    (notes / "latency.csv").write_text(
        "接口 Endpoint,p50 延迟 ms,p95 延迟 ms\n"
        "/api/search,12,31\n/api/ask,85,240\n/v1/chat,410,980\n",
        encoding="utf-8",
    )
    open_sided_table_pdf(notes / "tools.pdf")
    cells = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in tool_row(i)) + "</tr>\n" for i in range(40, 100)
    )
    header = "".join(f"<th>{c}</th>" for c in TOOL_TABLE_HEADER)
    (notes / "tools.html").write_text(
        f"<html><body><h1>工具列表</h1><table><tr>{header}</tr>\n{cells}</table></body></html>",
        encoding="utf-8",
    )
    kb = KnowledgeBase.create(base / "kb", Settings(kb=base / "kb"))
    report = kb.add([notes])
    assert not report.failed, report.failed
    yield kb
    kb.close()


@pytest.mark.parametrize(
    ("question", "cell", "header", "suffix"),
    [
        ("Qwen2.5-7B 需要多少显存？", "15 GB", "显存 Memory", "report.pdf"),
        ("How many parameters does Mixtral 8x7B have?", "46.7B", "参数量 Params", "report.pdf"),
        ("H100 的价格是多少？", "30000 USD", "价格 Price", "gpus.xlsx"),
        ("What is the p95 latency of /api/ask?", "240", "p95 延迟 ms", "latency.csv"),
        # rows far below the header of a 60-row table and of a table without outer borders
        ("软件包 tool97 的大小是多少？", "4589", "大小", "tools.html"),
        ("What is the size of the tool28 package?", "2036", "大小", "tools.pdf"),
    ],
)
def test_a_cell_is_answered_with_its_row_and_header(
    tables_kb: KnowledgeBase, question: str, cell: str, header: str, suffix: str
) -> None:
    answer = tables_kb.ask(question)
    assert answer.found, answer.text
    assert cell in answer.text
    citation = next(c for c in answer.citations if c.hit.path.endswith(suffix))
    quote = next(q for q in citation.quotes if cell in q)
    # the row is quoted together with its header row (a quote of its own, before it)
    header_quote = next(q for q in citation.quotes if header in q)
    assert citation.quotes.index(header_quote) < citation.quotes.index(quote)
    assert answer.text.index(header) < answer.text.index(cell)
    # an HTML page is cited by the lines of its source, other files by their text's lines
    if suffix.endswith(".html"):
        text = Path(citation.hit.path).read_text(encoding="utf-8").split("\n")
    else:
        text = tables_kb.document_text(citation.hit.path).split("\n")
    first, last = citation.quote_lines[citation.quotes.index(quote)]
    assert any(cell in line for line in text[first - 1 : last])  # cited lines hold the cell
    if suffix == "report.pdf":
        assert citation.hit.page_start == 2  # the table's page


def test_a_pdf_table_without_outer_borders_keeps_its_first_and_last_columns(
    tmp_path: Path,
) -> None:
    path = open_sided_table_pdf(tmp_path / "tools.pdf")
    text = convert(path, path.read_bytes()).text
    assert "| tool07 | V:7, I:14 | 1259 | 第 7 号工具 tool number 7 |" in text
    lines = text.split("\n")
    # 30 rows in blocks that each repeat the header: every row sits under a header line
    headers = [i for i, line in enumerate(lines) if line == "| 软件包 | 流行度 | 大小 | 说明 |"]
    assert len(headers) > 1
    row = lines.index("| tool30 | V:30, I:60 | 2110 | 第 30 号工具 tool number 30 |")
    assert row - max(h for h in headers if h < row) <= 12
