"""PDF: the text of each page in reading order (columns one after the other), tables as
tables, headings from the outline or from font size and weight, running headers, footers
and page numbers removed, and each extracted line's page and box kept for citations.

Pages are read one at a time and released (`page.close()`), and only the small `_Item`s of
each page are kept until the document is assembled, so memory stays bounded by one page's
objects plus the extracted text, whatever the number of pages.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sourcebook.ingest.converters.base import ConversionError, TextBuilder, join_lines
from sourcebook.ingest.converters.ocr import OcrUnavailable, ocr_engine
from sourcebook.models import Box, ParsedDocument
from sourcebook.text import normalize

logging.getLogger("pdfminer").setLevel(logging.ERROR)

_MARGIN = 0.08  # running headers and footers live in the top and bottom 8% of a page
_PAGE_NUMBER = re.compile(
    r"^(?:(?:page|p\.)\s*)?[-–—]?\s*(?:\d+|[ivxlc]+)\s*[-–—]?(?:\s*(?:/|of)\s*\d+)?$"
    r"|^第\s*\d+\s*页(?:\s*/?\s*共\s*\d+\s*页)?$",
    re.I,
)
_OCR_DPI = 200
_BULLET = re.compile(r"^(?:[-–•·*▪◦●]|\d{1,2}[.)、]|[（(]\d{1,2}[)）])$|^[•·▪◦●]")
_SENTENCE_END = re.compile(r"[.!?。！？：:;；)）\]」』\"”]$")


@dataclass
class _Item:
    """A paragraph, a heading candidate or a table of one page, in reading order."""

    page: int
    box: Box
    lines: list[str] = field(default_factory=list)
    size: float = 0.0
    bold: bool = False
    rows: list[list[str]] | None = None  # a table
    row_boxes: list[Box] = field(default_factory=list)
    margin: bool = False  # in the top or bottom margin: maybe a running header or footer
    gap: float | None = None  # space between the lines of a paragraph

    @property
    def text(self) -> str:
        return join_lines(self.lines)


def pdf(path: Path, data: bytes) -> ParsedDocument:
    import pdfplumber
    import pypdfium2 as pdfium
    from pdfplumber.utils.exceptions import PdfminerException

    try:
        document = pdfplumber.open(io.BytesIO(data))
    except PdfminerException as exc:
        raise _read_error(exc) from exc
    except Exception as exc:  # pdfminer raises many kinds on damaged files
        raise ConversionError(f"corrupt PDF: {exc}") from exc
    with document:
        try:
            items, reading = _read_pages(document, data)
        except PdfminerException as exc:
            raise _read_error(exc) from exc
        except pdfium.PdfiumError as exc:  # PDFium refuses what pdfminer let through
            raise ConversionError(f"corrupt PDF: {exc}") from exc
        metadata_title = document.metadata.get("Title")
    toc = _outline(data)
    parsed = _assemble(items, reading.sizes, toc, path.stem)
    textless = reading.textless
    if isinstance(metadata_title, bytes):
        metadata_title = metadata_title.decode("utf-8", "replace")
    if isinstance(metadata_title, str) and normalize(metadata_title).strip():
        parsed.title = normalize(metadata_title).strip()
    if textless and not parsed.text.strip():
        raise ConversionError(_no_text_layer())
    if textless:
        parsed.warnings.append(
            f"{len(textless)} page(s) without a text layer not read "
            f"(pages {_page_list(textless)}): {_no_text_layer()}"
        )
    if reading.unread_figures:
        parsed.warnings.append(
            f"{reading.unread_figures} picture(s) not read: "
            "install 'sourcebook[ocr]' to read the text in them"
        )
    return parsed


def _read_error(exc: Exception) -> ConversionError:
    cause = exc.args[0] if exc.args else exc
    if "Password" in type(cause).__name__ or "password" in str(cause).lower():
        return ConversionError("encrypted PDF (a password is required)")
    return ConversionError(f"corrupt PDF: {cause}")


def _no_text_layer() -> str:
    return "no text layer (install 'sourcebook[ocr]' to read scanned pages)"


def _page_list(pages: list[int]) -> str:
    shown = ", ".join(str(p) for p in pages[:10])
    return shown + (", ..." if len(pages) > 10 else "")


@dataclass
class _Reading:
    """What reading the pages found besides their items."""

    sizes: Counter[float] = field(default_factory=Counter)  # characters per font size
    textless: list[int] = field(default_factory=list)  # pages not read: no text, no OCR
    unread_figures: int = 0  # pictures not read: no OCR


def _read_pages(document: Any, data: bytes) -> tuple[list[_Item], _Reading]:
    """Every page's items, in reading order, and what could not be read.

    Characters, their boxes and type come from PDFium (fast, C++); pdfminer (through
    pdfplumber) parses only the pages with ruled lines, to find their tables."""
    import pypdfium2 as pdfium

    items: list[_Item] = []
    reading = _Reading()
    drawn = pdfium.PdfDocument(data)
    try:
        for number, page in enumerate(document.pages, start=1):
            drawn_page = drawn[number - 1]
            try:
                page_items = _page_items(page, drawn_page, number, reading)
                if not page_items and _pictures(drawn_page, 0, 0):
                    page_items = _ocr_page(drawn_page, number)
            except OcrUnavailable:
                reading.textless.append(number)
                page_items = []
            finally:
                page.close()  # drop the page's parsed objects: memory is one page at a time
                drawn_page.close()
            items.extend(page_items)
    finally:
        drawn.close()
    return items, reading


def _words(page: Any) -> list[dict[str, Any]]:
    """The words of a page from PDFium's characters, as pdfplumber would give them: text,
    x0/x1, top/bottom (from the top of the page), type size, and "Bold" as the font name
    for a weight of 600 or more or a bold font. A word ends at a space (printed or
    inferred by PDFium), at a gap wider than a third of the type size, or where the next
    character is elsewhere."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    height = page.get_height()
    font = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    words: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i in range(textpage.count_chars()):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i))
        if char in "\x02\xad":  # PDFium's mark for a hyphen at a line end, a soft hyphen
            char = "-"
        if not char.strip() or char == "\ufffe":
            current = None
            continue
        left, bottom, right, top = textpage.get_charbox(i, loose=True)
        size = round(pdfium_c.FPDFText_GetFontSize(textpage.raw, i), 2)
        pdfium_c.FPDFText_GetFontInfo(textpage.raw, i, font, 128, ctypes.byref(flags))
        bold = (
            pdfium_c.FPDFText_GetFontWeight(textpage.raw, i) >= 600
            or b"bold" in font.value.lower()
            or bool(flags.value & 0x40000)  # FXFONT_FORCE_BOLD
        )
        y_top, y_bottom = height - top, height - bottom
        if (
            current is not None
            and abs(current["top"] - y_top) <= 2
            # kerned pairs overlap (loose boxes), a space is about a quarter of the size
            and -size / 2 <= left - current["x1"] <= size / 3
        ):
            current["text"] += char
            current["x1"] = max(current["x1"], right)
            current["bottom"] = max(current["bottom"], y_bottom)
            continue
        current = {
            "text": char,
            "x0": left,
            "x1": right,
            "top": y_top,
            "bottom": y_bottom,
            "size": size,
            "fontname": "Bold" if bold else "",
        }
        words.append(current)
    textpage.close()
    return words


def _pictures(page: Any, width: float, height: float) -> list[tuple[float, float, float, float]]:
    """Boxes (x0, top, x1, bottom from the top of the page) of the page's pictures at least
    `width` x `height` points."""
    import pypdfium2.raw as pdfium_c

    page_height = page.get_height()
    boxes = []
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = obj.get_bounds()
        if right - left >= width and top - bottom >= height:
            boxes.append((left, page_height - top, right, page_height - bottom))
    return boxes


def _has_rules(page: Any) -> bool:
    """Whether a page draws lines or rectangles (where a table may be ruled)."""
    import pypdfium2.raw as pdfium_c

    return any(True for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=2))


def _page_items(page: Any, drawn: Any, number: int, reading: _Reading) -> list[_Item]:
    width, height = float(drawn.get_width()), float(drawn.get_height())

    def box(x0: float, top: float, x1: float, bottom: float) -> Box:
        return (
            round(max(0.0, x0 / width), 4),
            round(max(0.0, top / height), 4),
            round(min(1.0, x1 / width), 4),
            round(min(1.0, bottom / height), 4),
        )

    tables = _find_tables(page) if _has_rules(drawn) else []
    table_boxes = [t.bbox for t in tables]

    def outside_tables(word: dict[str, Any]) -> bool:
        cx, cy = (word["x0"] + word["x1"]) / 2, (word["top"] + word["bottom"]) / 2
        return not any(
            x0 <= cx <= x1 and top <= cy <= bottom for x0, top, x1, bottom in table_boxes
        )

    words = [w for w in _words(drawn) if outside_tables(w)]
    for word in words:
        reading.sizes[round(float(word["size"]), 1)] += len(word["text"])
    gutter = _gutter(words, width)
    blocks: list[tuple[str, float, _Item]] = []  # (side, top, item)
    for side, lines in _lines_by_side(words, gutter).items():
        for item in _paragraphs(lines, number, box):
            blocks.append((side, item.box[1], item))
    for table in tables:
        # a gap of 1.5 pt is a space: the default 3 pt ran words together ("SystemV")
        rows = [[cell or "" for cell in row] for row in table.extract(x_tolerance=1.5)]
        if not any(any(c.strip() for c in row) for row in rows):
            continue
        x0, top, x1, bottom = table.bbox
        side = "S" if gutter is None else "L" if x1 <= gutter else "R" if x0 >= gutter else "S"
        item = _Item(number, box(x0, top, x1, bottom), rows=rows)
        item.row_boxes = [box(*row.bbox) for row in table.rows]
        blocks.append((side, item.box[1], item))
    if words:  # pictures on a page of text: read what they say (a scan is read whole)
        for figure in [box(*f) for f in _figures(drawn, words)]:
            try:
                found = _ocr_region(drawn, number, figure)
            except OcrUnavailable:
                reading.unread_figures += 1
                continue
            for item in found:
                side = "S" if gutter is None else "L" if figure[2] * width <= gutter else "R"
                blocks.append((side, item.box[1], item))
    return _reading_order(blocks)


def _find_tables(page: Any) -> list[Any]:
    """The ruled tables of a pdfplumber page (two rows or more). A table whose rows are
    ruled across but that has no outer vertical border, only lines between its columns
    (as DocBook and LaTeX draw them: the Debian Reference's package tables), is found
    without its first and last columns, whose cells are not closed; it is looked for
    again with those borders drawn at the ends of its row rules."""
    tables = [t for t in page.find_tables() if len(t.rows) >= 2]
    borders: list[dict[str, Any]] = []
    for table in tables:
        x0, top, x1, bottom = table.bbox
        rules = [
            e
            for e in page.horizontal_edges
            if top - 1 <= e["top"] <= bottom + 1 and e["x0"] < x1 and e["x1"] > x0
        ]
        left = min((float(e["x0"]) for e in rules), default=x0)
        right = max((float(e["x1"]) for e in rules), default=x1)
        if left < x0 - 2 or right > x1 + 2:
            borders.extend(
                {"x0": x, "x1": x, "top": top, "bottom": bottom, "width": 0,
                 "height": bottom - top, "object_type": "line"}
                for x in (left, right)
            )  # fmt: skip
    if borders:
        found = page.find_tables({"explicit_vertical_lines": borders})
        tables = [t for t in found if len(t.rows) >= 2]
    return tables


def _figures(page: Any, words: list[dict[str, Any]]) -> list[tuple[float, float, float, float]]:
    """Pictures big enough to hold text (at least 100 x 40 points) and with no text layer
    over them (a scan with an OCR layer is read from the layer)."""
    figures = []
    for x0, top, x1, bottom in _pictures(page, 100, 40):
        inside = sum(
            1
            for w in words
            if x0 <= (w["x0"] + w["x1"]) / 2 <= x1 and top <= (w["top"] + w["bottom"]) / 2 <= bottom
        )
        if inside < 3:
            figures.append((x0, top, x1, bottom))
    return figures


def _gutter(words: list[dict[str, Any]], width: float) -> float | None:
    """The x of the space between two columns, or None for a page of one column: a vertical
    band in the middle of the page that almost no line crosses, with text on both sides of
    it on the same lines."""
    rows = _rows(words)
    if len(rows) < 6:
        return None
    best: tuple[int, float] | None = None
    x = width * 0.3
    while x <= width * 0.7:
        # a band wider than a space between words, narrower than a gutter
        crossing = sum(1 for row in rows if any(w["x0"] < x + 4 and w["x1"] > x - 4 for w in row))
        if best is None or crossing < best[0]:
            best = (crossing, x)
        x += 2.0
    assert best is not None
    crossing, gutter = best
    both = sum(
        1
        for row in rows
        if any(w["x1"] <= gutter for w in row) and any(w["x0"] >= gutter for w in row)
    )
    left = sum(1 for row in rows if any(w["x1"] <= gutter for w in row))
    right = sum(1 for row in rows if any(w["x0"] >= gutter for w in row))
    if crossing > 0.15 * len(rows) or min(left, right) < 0.3 * len(rows) or both < 0.2 * len(rows):
        return None
    return gutter


def _rows(words: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Words on the same baseline (within 3 points), top to bottom."""
    rows: list[list[dict[str, Any]]] = []
    for word in sorted(words, key=lambda w: (w["top"], w["x0"])):
        if rows and abs(rows[-1][0]["top"] - word["top"]) <= 3:
            rows[-1].append(word)
        else:
            rows.append([word])
    return rows


def _lines_by_side(
    words: list[dict[str, Any]], gutter: float | None
) -> dict[str, list[list[dict[str, Any]]]]:
    """Words grouped into lines, per side of the gutter ("L", "R"; "S" for a line spanning
    both columns, or every line of a one-column page)."""
    rows = _rows(words)
    sides: dict[str, list[list[dict[str, Any]]]] = {"S": [], "L": [], "R": []}
    for row in rows:
        if gutter is None or any(w["x0"] < gutter < w["x1"] for w in row):
            sides["S"].append(sorted(row, key=lambda w: w["x0"]))
            continue
        left = sorted((w for w in row if w["x1"] <= gutter), key=lambda w: w["x0"])
        right = sorted((w for w in row if w["x0"] >= gutter), key=lambda w: w["x0"])
        if left:
            sides["L"].append(left)
        if right:
            sides["R"].append(right)
    return sides


def _paragraphs(lines: list[list[dict[str, Any]]], number: int, box: Any) -> Iterator[_Item]:
    """Consecutive lines of one side, close together and in the same type, as paragraphs."""
    current: _Item | None = None
    previous_bottom = 0.0
    for words in lines:
        size = max(float(w["size"]) for w in words)
        bold = all("bold" in str(w["fontname"]).lower() for w in words)
        top, bottom = min(w["top"] for w in words), max(w["bottom"] for w in words)
        line_box = box(min(w["x0"] for w in words), top, max(w["x1"] for w in words), bottom)
        gap = top - previous_bottom
        if (
            current is not None
            and abs(size - current.size) < 0.6
            and bold == current.bold
            and -2 < gap < max(size * 1.5, 3.0)
            # a paragraph keeps its line spacing: a wider gap starts the next one
            and (current.gap is None or gap <= current.gap + 2)
            and not _BULLET.match(words[0]["text"])
        ):
            current.lines.append(_line_text(words))
            current.box = _union(current.box, line_box)
            current.gap = gap if current.gap is None else current.gap
        else:
            if current is not None:
                yield _marked(current)
            current = _Item(number, line_box, [_line_text(words)], size, bold)
        previous_bottom = bottom
    if current is not None:
        yield _marked(current)


def _marked(item: _Item) -> _Item:
    """An item wholly in the top or bottom margin may be a running header or footer."""
    item.margin = item.box[3] < _MARGIN or item.box[1] > 1 - _MARGIN
    return item


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _line_text(words: list[dict[str, Any]]) -> str:
    """Words of one line, joined by a space except between Chinese characters."""
    return join_lines([w["text"] for w in words])


def _reading_order(blocks: list[tuple[str, float, _Item]]) -> list[_Item]:
    """Spanning items in place; between two of them, the left column, then the right."""
    ordered: list[_Item] = []
    spanning = sorted((b for b in blocks if b[0] == "S"), key=lambda b: b[1])
    columns = sorted((b for b in blocks if b[0] != "S"), key=lambda b: b[1])
    upper = -1.0
    for top, item in [(b[1], b[2]) for b in spanning] + [(2.0, None)]:
        segment = [b for b in columns if upper <= b[1] < top]
        for side in ("L", "R"):
            ordered.extend(i for s, _, i in segment if s == side)
        if item is not None:
            ordered.append(item)
        upper = top
    return ordered


# --- the whole document ------------------------------------------------------------------------


def _assemble(
    items: list[_Item], sizes: Counter[float], toc: list[tuple[int, str, int]], fallback: str
) -> ParsedDocument:
    pages = {item.page for item in items}
    running = _running_lines(items, len(pages))
    body = max(sizes, key=lambda s: sizes[s]) if sizes else 0.0
    levels = _heading_levels(items, body)
    toc_titles = {(page, _key(title)): level for level, title, page in toc}
    kept = [item for item in items if item.rows is not None or _kept(item, running, body)]
    builder = TextBuilder()
    for item in _join_across_pages(kept, body):
        if item.rows is not None:
            _add_table(builder, item)
            continue
        if toc:
            level = toc_titles.get((item.page, _key(item.lines[0])), 0)
            if level and len(item.lines) > 1:  # a heading set like the text after it
                builder.heading(level, item.lines[0].strip(), item.page, item.page, item.box)
                item.lines = item.lines[1:]
                level = 0
            else:
                level = toc_titles.get((item.page, _key(item.text)), 0)
        else:
            level = levels.get(_size_key(item), 0) if _looks_like_heading(item, body) else 0
        if level:
            builder.heading(level, item.text, item.page, item.page, item.box)
        else:
            builder.blank(item.page, item.page)
            builder.add(item.text, item.page, item.page, item.box)
    parsed = builder.build(fallback, with_pages=True, with_sources=False)
    return parsed


def _kept(item: _Item, running: set[str], body: float) -> bool:
    """Not empty, not a page number, not a running header or footer. A margin line set
    larger than the body ("第 3 节 Section 3" atop each page) is a heading, even repeated."""
    text = item.text.strip()
    if not text:
        return False
    if not item.margin or item.size >= body * 1.15:
        return True
    return _key(text) not in running and not _PAGE_NUMBER.match(text)


def _join_across_pages(items: list[_Item], body: float) -> list[_Item]:
    """A paragraph cut by a page break (no sentence end before it, the next page going on
    in the same type) is one paragraph; it keeps the page and box of its start."""
    joined: list[_Item] = []
    for item in items:
        last = joined[-1] if joined else None
        if (
            last is not None
            and item.page == last.page + 1
            and last.rows is None
            and item.rows is None
            and not _looks_like_heading(last, body)
            and abs(item.size - last.size) < 0.6
            and not _SENTENCE_END.search(last.text)
            and not _BULLET.match(item.lines[0].split(" ")[0])
        ):
            last.lines.extend(item.lines)
            continue
        joined.append(item)
    return joined


def _add_table(builder: TextBuilder, item: _Item) -> None:
    from sourcebook.ingest.converters.base import markdown_table

    assert item.rows is not None
    row_boxes = item.row_boxes or [item.box] * len(item.rows)
    builder.blank(item.page, item.page)
    for line, row in markdown_table(item.rows):
        # the rule line sits on the header; a blank line between blocks has no box
        builder.add(line, item.page, item.page, None if row is None else row_boxes[row])
    builder.blank(item.page, item.page)


def _key(text: str) -> str:
    """What makes two running headers the same: the text without digits and spaces."""
    return re.sub(r"[\d\s]+", "", normalize(text)).lower()


def _running_lines(items: list[_Item], page_count: int) -> set[str]:
    """Margin texts repeated on at least half of the pages (and on two or more)."""
    seen: dict[str, set[int]] = {}
    for item in items:
        if item.margin and item.rows is None:
            seen.setdefault(_key(item.text), set()).add(item.page)
    return {key for key, on in seen.items() if key and len(on) >= max(2, (page_count + 1) // 2)}


def _size_key(item: _Item) -> tuple[float, bool]:
    return (round(item.size * 2) / 2, item.bold)


def _looks_like_heading(item: _Item, body: float) -> bool:
    text = item.text.strip()
    if not text or len(text) > 120 or len(item.lines) > 3:
        return False
    if not re.search(r"[A-Za-z\u4e00-\u9fff]", text) or text[-1] in "。，；：.,;:":
        return False
    return item.size >= body * 1.15 or (item.bold and item.size >= body - 0.1 and len(text) <= 80)


def _heading_levels(items: list[_Item], body: float) -> dict[tuple[float, bool], int]:
    """Heading styles ranked: the larger the type, the higher the level (bold before
    regular at the same size)."""
    styles = {_size_key(i) for i in items if i.rows is None and _looks_like_heading(i, body)}
    ranked = sorted(styles, key=lambda s: (-s[0], not s[1]))
    return {style: min(rank + 1, 6) for rank, style in enumerate(ranked)}


def _outline(data: bytes) -> list[tuple[int, str, int]]:
    """The bookmarks as (level 1.., title, page 1..); empty when the PDF has none."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return []
    try:
        entries = []
        for entry in document.get_toc(max_depth=6):
            title = entry.get_title() if hasattr(entry, "get_title") else entry.title
            dest = entry.get_dest() if hasattr(entry, "get_dest") else None
            page = dest.get_index() if dest is not None else getattr(entry, "page_index", None)
            if title and page is not None:
                entries.append((entry.level + 1, str(title), int(page) + 1))
        return entries
    finally:
        document.close()


# --- pages without a text layer ----------------------------------------------------------------


def _ocr_page(page: Any, number: int) -> list[_Item]:
    """A scanned page: drawn by PDFium and read by the OCR engine (raises OcrUnavailable
    when none is installed)."""
    return _ocr_region(page, number, (0.0, 0.0, 1.0, 1.0))


def _ocr_region(page: Any, number: int, region: Box) -> list[_Item]:
    """The text in a region of a page (fractions of the page), drawn at 200 dpi; lines close
    together become one paragraph; boxes are fractions of the whole page."""
    engine = ocr_engine()
    x0, y0, x1, y1 = region
    image = page.render(scale=_OCR_DPI / 72).to_pil()
    width, height = image.size
    crop = image.crop((int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)))
    items: list[_Item] = []
    for line in engine.read(crop):
        lx0, ly0, lx1, ly1 = line.box
        box = (
            round(x0 + lx0 * (x1 - x0), 4),
            round(y0 + ly0 * (y1 - y0), 4),
            round(x0 + lx1 * (x1 - x0), 4),
            round(y0 + ly1 * (y1 - y0), 4),
        )
        last = items[-1] if items else None
        if last is not None and 0 <= box[1] - last.box[3] < (box[3] - box[1]) * 0.8:
            last.lines.append(line.text)
            last.box = _union(last.box, box)
        else:
            items.append(_Item(number, box, [line.text]))
    return items
