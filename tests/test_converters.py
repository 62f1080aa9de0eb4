"""Each format converts with its structure; each kind of bad file fails with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from sourcebook.ingest.converters import ConversionError, convert

NOTES = Path(__file__).resolve().parents[1] / "examples" / "notes"


def test_markdown_front_matter_headings_and_tags() -> None:
    data = (
        "---\ntitle: 量化笔记\ntags: [llm, 量化]\n---\n"
        "# 量化\n正文。\n## GPTQ\n```\n# not a heading\n```\n"
    )
    doc = convert(Path("q.md"), data.encode())
    assert doc.title == "量化笔记"
    assert doc.tags == ["llm", "量化"]
    assert [(h.level, h.title) for h in doc.headings] == [(1, "量化"), (2, "GPTQ")]
    assert doc.text[doc.body_start :].startswith("# 量化")


def test_gbk_encoded_chinese_text_is_decoded() -> None:
    text = "混合精度训练使用 fp16 和 bf16，需要 loss scaling 防止梯度下溢。" * 3
    doc = convert(Path("gbk.txt"), text.encode("gbk"))
    assert "loss scaling" in doc.text and "混合精度训练" in doc.text


def test_rst_section_levels() -> None:
    data = "Title\n=====\n\nIntro.\n\nSection\n-------\n\nBody text.\n"
    doc = convert(Path("a.rst"), data.encode())
    assert [(h.level, h.title) for h in doc.headings] == [(1, "Title"), (2, "Section")]


def test_html_drops_boilerplate_and_maps_lines() -> None:
    path = NOTES / "web" / "kv-cache-inference.html"
    source = path.read_text(encoding="utf-8").split("\n")
    doc = convert(path, path.read_bytes())
    assert doc.title.startswith("KV Cache")
    assert any(h.title == "Prefill 阶段" for h in doc.headings)
    assert doc.source_lines is not None
    # the source line recorded for the "Prefill 阶段" heading holds that heading
    heading = next(h for h in doc.headings if h.title == "Prefill 阶段")
    line_index = doc.text.count("\n", 0, heading.offset)
    assert "Prefill 阶段" in source[doc.source_lines[line_index] - 1]
    nav_words = {"首页", "Home"}
    assert not any(word in doc.text.split("\n")[1] for word in nav_words)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("<p>显存 memory</p>".encode(), "UTF-8 with no charset declared (lxml alone: Latin-1)"),
        ('<meta charset="gbk"><p>显存 memory</p>'.encode("gbk"), "GBK, declared"),
        (b"\xef\xbb\xbf" + "<p>显存 memory</p>".encode(), "UTF-8 with a byte-order mark"),
    ],
)
def test_html_is_decoded_as_written(data: bytes, why: str) -> None:
    assert "显存 memory" in convert(Path("page.html"), data).text, why


def test_pdf_text_and_pages() -> None:
    path = NOTES / "papers" / "mixture-of-experts.pdf"
    doc = convert(path, path.read_bytes())
    assert "Mixture of Experts" in doc.text
    assert doc.pages is not None and max(doc.pages) == 2


def test_docx_headings_and_tables() -> None:
    document = docx.Document()
    document.add_heading("蒸馏 Distillation", 1)
    document.add_paragraph("温度 T 通常取 2 到 4。")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "teacher"
    table.cell(0, 1).text = "student"
    buffer = io.BytesIO()
    document.save(buffer)
    doc = convert(Path("d.docx"), buffer.getvalue())
    assert [h.title for h in doc.headings] == ["蒸馏 Distillation"]
    assert "温度 T 通常取 2 到 4。" in doc.text and "| teacher | student |" in doc.text


def encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(NOTES / "papers" / "mixture-of-experts.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.md", b"   \n", "empty file"),
        ("corrupt.pdf", b"%PDF-1.7\n1 0 obj <<>> garbage", "corrupt PDF"),
        ("locked.pdf", None, "encrypted PDF"),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("broken.docx", b"PK\x03\x04 not really a zip", "DOCX"),
        ("data.bin", b"abc", "unsupported file type"),
    ],
)
def test_bad_files_raise_with_reason(name: str, data: bytes | None, reason: str) -> None:
    with pytest.raises(ConversionError, match=reason):
        convert(Path(name), encrypted_pdf() if data is None else data)
