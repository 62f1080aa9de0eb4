"""EPUB e-books: the chapters in reading (spine) order, each read like an HTML page."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from sourcebook.ingest.converters.base import ConversionError, TextBuilder
from sourcebook.ingest.converters.html import html_text
from sourcebook.models import ParsedDocument
from sourcebook.text import normalize


def epub(path: Path, data: bytes) -> ParsedDocument:
    import ebooklib
    from ebooklib import epub as ebook

    try:
        book = ebook.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except (ebook.EpubException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ConversionError(f"corrupt or unreadable EPUB: {exc}") from exc
    builder = TextBuilder()
    for number, (item_id, _) in enumerate(book.spine, start=1):
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        chapter = html_text(item.get_content(), "")
        if not chapter.text.strip():
            continue
        heading_at = {h.offset: h for h in chapter.headings}
        offset = 0
        builder.blank(number)
        for line in chapter.text.split("\n"):
            heading = heading_at.get(offset)
            if heading is not None:
                builder.heading(heading.level, heading.title, number)
            else:
                builder.add(line, number)
            offset += len(line) + 1
    document = builder.build(path.stem, with_sources=False)
    titles = book.get_metadata("DC", "title")
    if titles and titles[0][0]:
        document.title = normalize(str(titles[0][0])).strip()
    return document
