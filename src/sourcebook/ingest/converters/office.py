"""Office documents: Word (.docx, with the text of its images read by OCR) and PowerPoint
(.pptx, one slide a section, its number as the page)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

from sourcebook.ingest.converters.base import ConversionError, TextBuilder
from sourcebook.ingest.converters.ocr import OcrUnavailable
from sourcebook.models import ParsedDocument
from sourcebook.text import normalize

_MIN_IMAGE_BYTES = 4096  # smaller pictures are icons and rules, not text


def docx(path: Path, data: bytes) -> ParsedDocument:
    import docx as python_docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        word = python_docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ConversionError(f"corrupt or unreadable DOCX: {exc}") from exc
    builder = TextBuilder()
    images = _ImageReader()
    for block in word.iter_inner_content():
        if isinstance(block, Table):
            builder.table([[c.text.strip() for c in row.cells] for row in block.rows], 0)
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None else ""
        level = _docx_heading_level(style or "")
        if text and level:
            builder.heading(level, text, 0)
        elif text:
            builder.blank(0)
            builder.add(text, 0)
        for rel_id in block._element.xpath(".//a:blip/@r:embed"):
            part = word.part.related_parts.get(rel_id)
            if part is not None:
                images.read(part.blob, builder)
    document = builder.build(path.stem, with_sources=False)
    document.warnings.extend(images.warnings())
    core_title = word.core_properties.title
    if core_title:
        document.title = normalize(core_title).strip()
    return document


class _ImageReader:
    """OCR of the pictures of a document, counted when no engine is installed."""

    def __init__(self) -> None:
        self.unread = 0

    def read(self, blob: bytes, builder: TextBuilder, page: int = 0) -> None:
        if len(blob) < _MIN_IMAGE_BYTES:
            return
        from sourcebook.ingest.converters.images import ocr_paragraphs

        try:
            paragraphs = ocr_paragraphs(blob)
        except OcrUnavailable:
            self.unread += 1
            return
        except ConversionError:
            return  # a picture in a format PIL cannot open (EMF, WMF): nothing to read
        for text, _ in paragraphs:
            builder.blank(0, page)
            builder.add(text, 0, page)

    def warnings(self) -> list[str]:
        if not self.unread:
            return []
        return [f"{self.unread} image(s) not read: install 'sourcebook[ocr]' to read them"]


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


def pptx(path: Path, data: bytes) -> ParsedDocument:
    """Each slide a section titled by the slide's title, its text boxes top to bottom, its
    tables as tables, its pictures read by OCR, and its speaker notes."""
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        deck = Presentation(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ConversionError(f"corrupt or unreadable PPTX: {exc}") from exc
    builder = TextBuilder()
    images = _ImageReader()
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text.split()) if title_shape is not None else ""
        builder.heading(1, title or f"Slide {number}", 0, number)
        shapes = sorted(
            (s for s in slide.shapes if s is not title_shape),
            key=lambda s: (s.top or 0, s.left or 0),
        )
        for shape in shapes:
            _add_shape(shape, builder, images, number)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                builder.blank(0, number)
                builder.add("Notes: " + notes.text.strip(), 0, number)
    document = builder.build(path.stem, with_pages=True, with_sources=False)
    document.warnings.extend(images.warnings())
    core_title = deck.core_properties.title
    document.title = normalize(core_title).strip() if core_title else path.stem
    return document


def _add_shape(shape: Any, builder: TextBuilder, images: _ImageReader, number: int) -> None:
    if shape.has_text_frame:
        for paragraph in shape.text_frame.paragraphs:
            text = "".join(run.text for run in paragraph.runs).strip()
            if text:
                if paragraph.level == 0:
                    builder.blank(0, number)
                prefix = "  " * paragraph.level + "- " if paragraph.level else ""
                builder.add(prefix + text, 0, number)
    elif getattr(shape, "has_table", False) and shape.has_table:
        rows = [[cell.text.strip() for cell in row.cells] for row in shape.table.rows]
        builder.table(rows, 0, number)
    elif shape.shape_type == 13:  # MSO_SHAPE_TYPE.PICTURE
        images.read(shape.image.blob, builder, number)
    elif shape.shape_type == 6:  # a group: its shapes in order
        for child in shape.shapes:
            _add_shape(child, builder, images, number)
