"""Real documents made by the tests: PDFs drawn with fpdf2 (a CJK TrueType font for
Chinese), pages rendered to images with Pillow, slides, sheets, notebooks and e-books
written by their own libraries."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def cjk_font() -> Path:
    assert CJK_FONT.is_file(), "the CJK test font is missing: run scripts/install-fonts.sh"
    return CJK_FONT


def new_pdf() -> FPDF:
    pdf = FPDF(format="A4", unit="pt")
    pdf.set_auto_page_break(False)
    pdf.add_font("cjk", fname=str(cjk_font()))
    pdf.add_font("cjk", style="B", fname=str(cjk_font()))
    return pdf


def running_page(pdf: FPDF, number: int) -> None:
    """A page with a running header and a page number, as reports and books have."""
    pdf.add_page()
    pdf.set_font("cjk", size=8)
    pdf.set_xy(40, 20)
    pdf.cell(300, 10, "Sourcebook 测试报告 · Internal")
    pdf.set_xy(280, 810)
    pdf.cell(40, 10, f"- {number} -")


def two_column_report(path: Path) -> Path:
    """Three pages: a spanning title, two columns of text, a bordered table, a hyphenated
    English paragraph and a Chinese paragraph wrapped across lines."""
    pdf = new_pdf()
    pdf.set_title("双栏测试报告")
    running_page(pdf, 1)
    pdf.set_font("cjk", "B", size=20)
    pdf.set_xy(40, 60)
    pdf.cell(500, 24, "双栏排版 Two Columns")
    pdf.set_font("cjk", size=10)
    left = "左栏第一段：量化把权重从 fp16 压缩到 int4，显存占用降到四分之一。" * 6
    right = "RIGHT COLUMN. Speculative decoding drafts tokens with a small model. " * 6
    pdf.set_xy(40, 110)
    pdf.multi_cell(240, 14, left)
    pdf.set_xy(310, 110)
    pdf.multi_cell(240, 14, right)
    running_page(pdf, 2)
    pdf.set_font("cjk", "B", size=14)
    pdf.set_xy(40, 60)
    pdf.cell(400, 18, "模型对比 Model Comparison")
    pdf.set_font("cjk", size=10)
    pdf.set_xy(40, 90)
    with pdf.table(width=400, col_widths=(150, 125, 125), text_align="LEFT") as table:
        for row in (
            ("模型 Model", "参数量 Params", "显存 Memory"),
            ("Mixtral 8x7B", "46.7B", "94 GB"),
            ("Qwen2.5-7B", "7.6B", "15 GB"),
            ("Llama-3-8B", "8.0B", "16 GB"),
        ):
            cells = table.row()
            for value in row:
                cells.cell(value)
    running_page(pdf, 3)
    pdf.set_font("cjk", "B", size=14)
    pdf.set_xy(40, 60)
    pdf.cell(400, 18, "断行 Line Breaks")
    pdf.set_font("cjk", size=10)
    for y, line in enumerate(
        (
            "Tokenizers split text into sub-",
            "word units before the embedding",
            "layer reads them.",
        )
    ):
        pdf.set_xy(40, 90 + 14 * y)
        pdf.cell(300, 12, line)
    for y, line in enumerate(("知识蒸馏让小模型学习大模", "型的输出分布，温度通常取二到四。")):
        pdf.set_xy(40, 150 + 14 * y)
        pdf.cell(300, 12, line)
    pdf.output(str(path))
    return path
