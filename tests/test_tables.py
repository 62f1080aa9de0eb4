"""Tables answer cell by cell: a row of a PDF table, a spreadsheet and a CSV is quoted with
its header through `KnowledgeBase.ask`, in Chinese and in English."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from documents import two_column_report, workbook
from sourcebook import KnowledgeBase, Settings


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
    text = tables_kb.document_text(citation.hit.path).split("\n")
    first, last = citation.quote_lines[citation.quotes.index(quote)]
    assert any(cell in line for line in text[first - 1 : last])  # cited lines hold the cell
    if suffix == "report.pdf":
        assert citation.hit.page_start == 2  # the table's page
