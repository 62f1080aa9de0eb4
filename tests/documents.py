"""Real documents made by the tests: PDFs drawn with fpdf2 (a CJK TrueType font for
Chinese), pages rendered to images with Pillow, slides, sheets, notebooks and e-books
written by their own libraries."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def cjk_font() -> Path:
    assert CJK_FONT.is_file(), "the CJK test font is missing: run scripts/install-system.sh"
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


TOOL_TABLE_HEADER = ["软件包", "流行度", "大小", "说明"]


def tool_row(i: int) -> list[str]:
    """Row i of the tool tables: a name, a popularity, a size only this row has, a
    description in Chinese and English."""
    return [
        f"tool{i:02d}",
        f"V:{i}, I:{2 * i}",
        str(1000 + 37 * i),
        f"第 {i} 号工具 tool number {i}",
    ]


def open_sided_table_pdf(path: Path, rows: int = 30) -> Path:
    """A page with a table drawn as the Debian Reference's are: each row ruled across the
    whole table, lines between the columns, no border at its left and right ends."""
    pdf = new_pdf()
    running_page(pdf, 1)
    pdf.set_font("cjk", size=9)
    lefts, right, top, height = [60.0, 160.0, 230.0, 280.0], 540.0, 60.0, 16.0
    for r, cells in enumerate([TOOL_TABLE_HEADER] + [tool_row(i) for i in range(1, rows + 1)]):
        y = top + r * height
        pdf.line(lefts[0], y, right, y)
        for x in lefts[1:]:
            pdf.line(x, y, x, y + height)
        for x, text in zip(lefts, cells, strict=True):
            pdf.set_xy(x + 3, y + 3)
            pdf.cell(90, 10, text)
    pdf.line(lefts[0], top + (rows + 1) * height, right, top + (rows + 1) * height)
    pdf.output(str(path))
    return path


def text_image(lines: list[str], size: int = 34) -> bytes:
    """A page of text drawn at about 200 dpi (34 px: 12 pt type), as a PNG."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(cjk_font()), size)
    image = Image.new("RGB", (1400, 120 + len(lines) * size * 2), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((80, 60 + i * size * 2), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def scanned_pdf(path: Path, lines: list[str]) -> Path:
    """A PDF whose only page is a picture of text (no text layer), like a scan."""
    import io

    pdf = FPDF(format="A4", unit="pt")
    pdf.add_page()
    pdf.image(io.BytesIO(text_image(lines)), x=20, y=40, w=555)
    pdf.output(str(path))
    return path


def slides(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    deck.core_properties.title = "检索增强 RAG"
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "混合检索 Hybrid Search"
    body = first.placeholders[1].text_frame
    body.text = "BM25 与向量检索融合，RRF 的 k 取 60。"
    item = body.add_paragraph()
    item.text = "Dense retrieval finds paraphrases."
    item.level = 1
    first.notes_slide.notes_text_frame.text = "讲到这里演示一次查询。"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Rerankers"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(1.5)).table
    for r, row in enumerate((("模型", "延迟"), ("cross-encoder", "40 ms"), ("learned", "2 ms"))):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    deck.save(str(path))
    return path


def workbook(path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "GPU 价格"
    sheet.append(["型号 Model", "显存 GB", "价格 Price"])
    for row in (("A100", 80, "15000 USD"), ("H100", 80, "30000 USD"), ("RTX 4090", 24, "1600 USD")):
        sheet.append(list(row))
    other = book.create_sheet("Notes")
    other.append(["key", "value"])
    other.append(["owner", "李雷"])
    book.save(str(path))
    return path


def notebook(path: Path) -> Path:
    import nbformat

    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_markdown_cell("# 余弦相似度 Cosine\n\n余弦相似度衡量两个向量的夹角。"),
        nbformat.v4.new_code_cell(
            "import numpy as np\nprint(np.dot([1, 0], [1, 0]))",
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")],
        ),
        nbformat.v4.new_markdown_cell(
            "## Normalisation\n\nNormalise vectors to unit length first."
        ),
    ]
    nbformat.write(book, str(path))
    return path


def ebook(path: Path) -> Path:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("sourcebook-test")
    book.set_title("向量数据库入门")
    book.set_language("zh")
    chapters = []
    for i, (title, body) in enumerate(
        (
            ("第一章 索引", "HNSW 是一种分层的近邻图，查询时从顶层逐层下降。"),
            ("Chapter 2 Filters", "Pre-filtering applies metadata filters before the search."),
        ),
        start=1,
    ):
        chapter = epub.EpubHtml(title=title, file_name=f"c{i}.xhtml", lang="zh")
        chapter.content = f"<html><body><h1>{title}</h1><p>{body}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.spine = ["nav", *chapters]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)
    return path
