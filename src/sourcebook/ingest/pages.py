"""A page of a source file drawn as a PNG (a PDF page by PDFium, an image as it is), so a
citation can show the page with its quoted region marked. The file is read as it is on
disk now; drawn pages are cached by path, modification time, page and width."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_WIDTH = 2000


class PageError(Exception):
    """The page cannot be drawn (no such page, not a paged format, unreadable file)."""


def page_png(path: Path, kind: str, page: int, width: int) -> bytes:
    width = max(100, min(width, MAX_WIDTH))
    try:
        modified = path.stat().st_mtime_ns
    except OSError as exc:
        raise PageError(f"cannot read {path.name}: {exc.strerror}") from exc
    return _drawn(path, kind, page, width, modified)


@lru_cache(maxsize=32)
def _drawn(path: Path, kind: str, page: int, width: int, modified: int) -> bytes:
    del modified  # part of the cache key only
    if kind == "pdf":
        image = _pdf_page(path, page, width)
    elif kind == "image":
        if page != 1:
            raise PageError("an image has one page")
        image = _image(path, width)
    else:
        raise PageError(f"a {kind} document has no pages to show")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _pdf_page(path: Path, page: int, width: int) -> Image:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        raise PageError(f"cannot open the PDF: {exc}") from exc
    try:
        if not 1 <= page <= len(document):
            raise PageError(f"the PDF has {len(document)} pages, not {page}")
        pdf_page = document[page - 1]
        scale = width / pdf_page.get_width()
        image: Image = pdf_page.render(scale=scale).to_pil()
        return image
    finally:
        document.close()


def _image(path: Path, width: int) -> Image:
    from PIL import Image, UnidentifiedImageError

    try:
        opened = Image.open(path)
        opened.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise PageError(f"cannot open the image: {exc}") from exc
    image = opened.convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)))
    return image
