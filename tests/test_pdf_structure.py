"""PDF structure: reading order on two-column pages, running headers and page numbers
removed, headings from type size and from the outline, tables as tables, hyphenation and
Chinese line breaks joined, positions kept for citations."""

from __future__ import annotations

from pathlib import Path

import pytest

from documents import new_pdf, running_page, two_column_report
from sourcebook.ingest.converters import convert


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_column_report(tmp_path_factory.mktemp("pdf") / "report.pdf")


def test_two_columns_are_read_one_after_the_other(report: Path) -> None:
    doc = convert(report, report.read_bytes())
    left = doc.text.index("左栏第一段")
    right = doc.text.index("RIGHT COLUMN")
    # the whole left column comes before the right one: no line of the right column
    # interleaves with the left
    assert left < right
    assert "RIGHT COLUMN" not in doc.text[left : doc.text.rindex("四分之一。")]
    assert doc.title == "双栏测试报告"


def test_running_headers_and_page_numbers_are_removed(report: Path) -> None:
    doc = convert(report, report.read_bytes())
    assert "测试报告 · Internal" not in doc.text
    assert "- 2 -" not in doc.text and "- 3 -" not in doc.text
    assert doc.pages is not None and max(doc.pages) == 3


def test_headings_by_type_size_give_chunks_a_path(report: Path) -> None:
    doc = convert(report, report.read_bytes())
    titles = [(h.level, h.title) for h in doc.headings]
    assert (1, "双栏排版 Two Columns") in titles
    assert (2, "模型对比 Model Comparison") in titles


def test_table_rows_keep_their_header(report: Path) -> None:
    doc = convert(report, report.read_bytes())
    lines = doc.text.split("\n")
    header = lines.index("| 模型 Model | 参数量 Params | 显存 Memory |")
    assert lines[header + 1] == "| --- | --- | --- |"
    assert lines[header + 2] == "| Mixtral 8x7B | 46.7B | 94 GB |"
    assert doc.pages is not None and doc.pages[header] == 2
    assert doc.boxes is not None and doc.boxes[header] is not None
    # the cells are not repeated as loose text outside the table
    assert doc.text.count("Qwen2.5-7B") == 1


def test_hyphenation_and_chinese_line_breaks_are_joined(report: Path) -> None:
    doc = convert(report, report.read_bytes())
    assert "split text into subword units before the embedding layer reads them." in doc.text
    assert "知识蒸馏让小模型学习大模型的输出分布，温度通常取二到四。" in doc.text
    # Chinese and English keep the space between them; Chinese gets none inside
    assert "量化把权重从 fp16 压缩到 int4，显存占用降到四分之一。" in doc.text


def test_every_line_has_its_page_and_box(report: Path) -> None:
    doc = convert(report, report.read_bytes())
    lines = doc.text.split("\n")
    assert doc.pages is not None and doc.boxes is not None
    assert len(doc.pages) == len(lines) == len(doc.boxes)
    index = next(i for i, line in enumerate(lines) if "RIGHT COLUMN" in line)
    x0, top, x1, bottom = doc.boxes[index] or (0, 0, 0, 0)
    assert 0.5 < x0 < x1 <= 1 and 0 < top < bottom < 1  # the right half of page 1
    assert doc.pages[index] == 1


def test_outline_levels_name_the_headings(tmp_path: Path) -> None:
    pdf = new_pdf()
    pdf.add_page()
    for y, (level, title, body) in enumerate(
        (
            (0, "Attention", "Scaled dot-product attention divides by the square root of d."),
            (1, "多头注意力", "多头注意力把 Q、K、V 投影到多个子空间。"),
            (1, "KV Cache", "The KV cache stores keys and values of past tokens."),
        )
    ):
        pdf.set_font("cjk", size=11)  # same type as the body: only the outline tells
        pdf.set_xy(40, 60 + 80 * y)
        pdf.start_section(title, level=level)
        pdf.cell(300, 14, title)
        pdf.set_xy(40, 80 + 80 * y)
        pdf.cell(400, 14, body)
    path = tmp_path / "outline.pdf"
    pdf.output(str(path))
    doc = convert(path, path.read_bytes())
    assert [(h.level, h.title) for h in doc.headings] == [
        (1, "Attention"),
        (2, "多头注意力"),
        (2, "KV Cache"),
    ]


def test_a_heading_atop_every_page_is_not_a_running_header(tmp_path: Path) -> None:
    pdf = new_pdf()
    for n in range(1, 4):
        running_page(pdf, n)  # the small running header and page number: dropped
        pdf.set_font("cjk", "B", size=14)
        pdf.set_xy(40, 45)  # in the top margin, on every page, differing only in digits
        pdf.cell(400, 18, f"第 {n} 节 Section {n}")
        pdf.set_font("cjk", size=10)
        pdf.set_xy(40, 90)
        pdf.multi_cell(500, 14, f"第{n}节的正文：检索先召回，再重排序。")
    path = tmp_path / "sections.pdf"
    pdf.output(str(path))
    doc = convert(path, path.read_bytes())
    assert [h.title for h in doc.headings] == [f"第 {n} 节 Section {n}" for n in (1, 2, 3)]
    assert "Internal" not in doc.text
