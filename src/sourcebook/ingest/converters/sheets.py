"""Spreadsheets (.csv, .tsv, .xlsx): rows as Markdown table rows under their header, so an
answer quotes a row with its header and a cell can be asked for.

Rows are read one at a time and written in blocks of `BLOCK_ROWS`, each block a table
of its own that repeats the header: a chunk never holds rows without the header that
names their columns. Each extracted line maps to the row it came from (the line of the
CSV file, the row number of the sheet).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sourcebook.ingest.converters.base import ConversionError, TextBuilder, decode, markdown_table
from sourcebook.models import ParsedDocument

BLOCK_ROWS = 20


def _add_rows(builder: TextBuilder, rows: Iterable[tuple[int, list[str]]]) -> int:
    """Write (source line, cells) rows as tables of BLOCK_ROWS under the first row; the
    number of data rows written."""
    header: tuple[int, list[str]] | None = None
    block: list[tuple[int, list[str]]] = []
    written = 0

    def flush() -> None:
        if header is None or not block:
            return
        lines = markdown_table([header[1]] + [cells for _, cells in block])
        sources = [header[0], header[0]] + [line for line, _ in block]
        builder.blank(header[0])
        for text, source in zip(lines, sources, strict=True):
            builder.add(text, source)
        builder.blank(header[0])
        block.clear()

    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = (line, [c.strip() or f"column {i + 1}" for i, c in enumerate(cells)])
            continue
        block.append((line, cells))
        written += 1
        if len(block) == BLOCK_ROWS:
            flush()
    flush()
    if header is not None and not written:  # a header alone: still a table
        builder.table([header[1]], header[0])
    return written


def csv_file(path: Path, data: bytes) -> ParsedDocument:
    text = decode(data)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff(text)
    builder = TextBuilder()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        _add_rows(builder, _numbered(reader))
    except csv.Error as exc:
        raise ConversionError(f"malformed CSV at line {reader.line_num}: {exc}") from exc
    document = builder.build(path.stem)
    document.title = path.stem
    return document


def _numbered(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Rows with the file line each starts on (a quoted cell may span lines)."""
    line = 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1  # type: ignore[attr-defined]


def _sniff(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def xlsx(path: Path, data: bytes) -> ParsedDocument:
    """Every sheet a section (its name the heading), read row by row (read-only mode)."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ConversionError(f"corrupt or unreadable XLSX: {exc}") from exc
    builder = TextBuilder()
    try:
        for sheet in book.worksheets:
            builder.heading(1, str(sheet.title), 1)
            rows = (
                (number, ["" if v is None else _cell(v) for v in values])
                for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)
            )
            _add_rows(builder, rows)
    finally:
        book.close()
    document = builder.build(path.stem, with_sources=False)
    document.title = str(book.properties.title or path.stem)
    return document


def _cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
