"""Notebooks, slides, spreadsheets, e-books, images and scanned pages (read by real OCR),
Markdown's wiki-links, tags and footnotes: each converts with its structure, and each
kind of bad file is reported while the rest of the folder is indexed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from documents import ebook, notebook, scanned_pdf, slides, text_image, workbook
from sourcebook.ingest.converters import ConversionError, convert, use_engine
from sourcebook.retrieve.links import wiki_links


@pytest.fixture(autouse=True)
def auto_ocr() -> None:
    use_engine("auto")


def test_notebook_cells_and_outputs(tmp_path: Path) -> None:
    path = notebook(tmp_path / "cosine.ipynb")
    doc = convert(path, path.read_bytes())
    assert [(h.level, h.title) for h in doc.headings] == [
        (1, "余弦相似度 Cosine"),
        (2, "Normalisation"),
    ]
    assert "```python\nimport numpy as np" in doc.text
    assert "```text\n1\n```" in doc.text  # the output, after its code
    assert doc.title == "余弦相似度 Cosine"


def test_slides_are_sections_with_tables_and_notes(tmp_path: Path) -> None:
    path = slides(tmp_path / "rag.pptx")
    doc = convert(path, path.read_bytes())
    assert [(h.level, h.title) for h in doc.headings] == [
        (1, "混合检索 Hybrid Search"),
        (1, "Rerankers"),
    ]
    assert "BM25 与向量检索融合，RRF 的 k 取 60。" in doc.text
    assert "  - Dense retrieval finds paraphrases." in doc.text
    assert "Notes: 讲到这里演示一次查询。" in doc.text
    assert "| 模型 | 延迟 |\n| --- | --- |\n| cross-encoder | 40 ms |" in doc.text
    lines = doc.text.split("\n")
    assert doc.pages is not None
    assert doc.pages[lines.index("| learned | 2 ms |")] == 2  # the slide number
    assert doc.title == "检索增强 RAG"


def test_spreadsheet_rows_sit_under_their_header(tmp_path: Path) -> None:
    path = workbook(tmp_path / "gpus.xlsx")
    doc = convert(path, path.read_bytes())
    assert [h.title for h in doc.headings] == ["GPU 价格", "Notes"]
    assert "| 型号 Model | 显存 GB | 价格 Price |\n| --- | --- | --- |\n| A100 | 80 |" in doc.text
    assert "| owner | 李雷 |" in doc.text


def test_csv_blocks_repeat_the_header_and_cite_file_lines(tmp_path: Path) -> None:
    rows = ["城市,人口（万）,note"] + [f'city{i},{i * 10},"multi\nline {i}"' for i in range(45)]
    path = tmp_path / "cities.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    doc = convert(path, path.read_bytes())
    lines = doc.text.split("\n")
    assert doc.text.count("| 城市 | 人口（万） | note |") == 3  # 45 rows in blocks of 20
    row = lines.index("| city3 | 30 | multi line 3 |")
    # the row starts on file line 2 + 2 * 3 (each earlier row spans two lines)
    assert doc.source_lines is not None and doc.source_lines[row] == 8


def test_epub_chapters_in_reading_order(tmp_path: Path) -> None:
    path = ebook(tmp_path / "vectors.epub")
    doc = convert(path, path.read_bytes())
    assert doc.title == "向量数据库入门"
    assert [h.title for h in doc.headings] == ["第一章 索引", "Chapter 2 Filters"]
    assert doc.text.index("HNSW 是一种分层的近邻图") < doc.text.index("Pre-filtering")


def test_markdown_wiki_links_tags_and_footnotes() -> None:
    note = (
        "---\ntags: [rag]\n---\n# 检索\n"
        "见 [[LoRA 笔记|LoRA]] 与 [[KV Cache#Prefill]]。 #向量检索 #ml/rag\n"
        "C# and `#not-a-tag` and [x](#anchor) are not tags.\n\n"
        "BM25 来自 Okapi[^1]。\n\n[^1]: Robertson et al., 1994.\n"
    )
    doc = convert(Path("n.md"), note.encode())
    assert doc.tags == ["rag", "向量检索", "ml/rag"]
    assert [(t, shown) for _, t, shown, _ in wiki_links(doc.text)] == [
        ("LoRA 笔记", "LoRA"),
        ("KV Cache", "KV Cache"),
    ]
    assert [(h.level, h.title) for h in doc.headings] == [(1, "检索"), (1, "Footnotes")]
    assert doc.text == note  # the note's own characters, unchanged


def test_image_is_read_by_ocr_with_boxes() -> None:
    png = text_image(["量化把权重压缩到 int4", "Quantization cuts memory"])
    doc = convert(Path("scan.png"), png)
    lines = [line for line in doc.text.split("\n") if line]
    assert lines[0].replace(" ", "") == "量化把权重压缩到int4"
    assert "Quantization cuts memory" in doc.text
    assert doc.pages is not None and set(doc.pages) == {1}
    assert doc.boxes is not None
    for box, line in zip(doc.boxes, doc.text.split("\n"), strict=True):
        assert not line or (box is not None and 0 <= box[0] < box[2] <= 1)


def test_scanned_pdf_page_is_read_by_ocr(tmp_path: Path) -> None:
    path = scanned_pdf(
        tmp_path / "scan.pdf", ["知识蒸馏的温度通常取二到四。", "Distillation uses soft labels."]
    )
    doc = convert(path, path.read_bytes())
    assert "知识蒸馏的温度通常取二到四。" in doc.text
    assert "Distillation uses soft labels." in doc.text
    assert doc.pages is not None and doc.boxes is not None and doc.boxes[0] is not None


def test_without_ocr_scans_and_images_are_reported_not_indexed_empty(tmp_path: Path) -> None:
    use_engine("none")
    path = scanned_pdf(tmp_path / "scan.pdf", ["知识蒸馏"])
    with pytest.raises(ConversionError, match=r"no text layer \(install 'sourcebook\[ocr\]'"):
        convert(path, path.read_bytes())
    with pytest.raises(ConversionError, match=r"no text layer \(install 'sourcebook\[ocr\]'"):
        convert(Path("a.png"), text_image(["知识蒸馏"]))


def test_markdown_note_includes_the_text_of_its_images(tmp_path: Path) -> None:
    (tmp_path / "fig.png").write_bytes(text_image(["向量索引 HNSW 的参数 M=16"]))
    note = tmp_path / "note.md"
    note.write_text("# 索引\n\n参数见图：\n\n![参数](fig.png)\n", encoding="utf-8")
    doc = convert(note, note.read_bytes())
    assert "HNSW" in doc.text[len(note.read_text(encoding="utf-8")) :]
    lines = doc.text.split("\n")
    at = next(i for i, line in enumerate(lines) if "HNSW" in line)
    assert doc.source_lines is not None and doc.source_lines[at] == 5  # the ![](fig.png) line


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pptx", b"PK\x03\x04 not a deck", "PPTX"),
        ("broken.xlsx", b"PK\x03\x04 not a book", "XLSX"),
        ("broken.ipynb", b'{"cells": ', "notebook"),
        ("broken.epub", b"PK\x03\x04 no book", "EPUB"),
        ("broken.png", b"\x89PNG\r\n\x1a\n garbage", "unreadable image"),
        (
            "broken.csv",
            b'a,b\n"open quote,1\n' + b"x" * 10,
            "malformed CSV in the row starting on line 2",
        ),
        ("binary.csv", b"a,b\n\x00\x01\x02", "binary file"),
    ],
)
def test_bad_files_raise_with_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ConversionError, match=reason):
        convert(Path(name), data)


def test_bad_files_are_reported_and_the_rest_indexed(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    workbook(notes / "gpus.xlsx")
    slides(notes / "rag.pptx")
    notebook(notes / "cosine.ipynb")
    ebook(notes / "vectors.epub")
    (notes / "broken.pptx").write_bytes(b"PK\x03\x04 not a deck")
    (notes / "broken.xlsx").write_bytes(b"PK\x03\x04 not a book")
    (notes / "broken.ipynb").write_bytes(b'{"cells": ')
    (notes / "broken.epub").write_bytes(b"PK\x03\x04 no book")
    (notes / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    kb = tmp_path / "kb"
    run = [sys.executable, "-m", "sourcebook.surfaces.cli"]
    subprocess.run([*run, "init", "--kb", str(kb)], check=True, capture_output=True)
    result = subprocess.run(
        [*run, "add", str(notes), "--kb", str(kb), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == 4
    assert sorted(Path(f["path"]).name for f in report["failed"]) == [
        "broken.epub", "broken.ipynb", "broken.png", "broken.pptx", "broken.xlsx",
    ]  # fmt: skip


def test_pictures_in_pdf_and_docx_are_read(tmp_path: Path) -> None:
    import io

    import docx

    from documents import new_pdf

    picture = text_image(["图中文字：召回率 0.93"])
    pdf = new_pdf()
    pdf.add_page()
    pdf.set_font("cjk", size=11)
    pdf.set_xy(40, 60)
    pdf.cell(400, 14, "The figure below shows the recall measured on the test split.")
    pdf.image(io.BytesIO(picture), x=40, y=100, w=400)
    path = tmp_path / "figure.pdf"
    pdf.output(str(path))
    doc = convert(path, path.read_bytes())
    assert "召回率0.93" in doc.text.replace(" ", "")
    assert doc.text.index("The figure below") < doc.text.index("召回率")

    word = docx.Document()
    word.add_paragraph("见下图。")
    word.add_picture(io.BytesIO(picture))
    buffer = io.BytesIO()
    word.save(buffer)
    doc = convert(Path("figure.docx"), buffer.getvalue())
    assert "召回率0.93" in doc.text.replace(" ", "")

    use_engine("none")
    doc = convert(path, path.read_bytes())
    assert "召回率" not in doc.text
    assert doc.warnings == [
        "1 picture(s) not read: install 'sourcebook[ocr]' to read the text in them"
    ]


def test_a_file_over_the_time_limit_is_reported_and_the_batch_goes_on(tmp_path: Path) -> None:
    from documents import two_column_report
    from sourcebook import KnowledgeBase, Settings

    notes = tmp_path / "notes"
    notes.mkdir()
    two_column_report(notes / "slow.pdf")
    (notes / "fast.md").write_text("# 笔记\n\n温度通常取二到四。\n", encoding="utf-8")
    settings = Settings(kb=tmp_path / "kb", file_timeout_s=0.01)
    with KnowledgeBase.create(tmp_path / "kb", settings) as kb:
        report = kb.add([notes])
        assert report.added == 1
        [failed] = report.failed
        assert failed.path.endswith("slow.pdf")
        assert "took longer than 0.01 s" in failed.reason
        # a generous limit: the same file converts in a fresh worker
        kb.settings.file_timeout_s = 300
        assert kb.sync().added == 1
