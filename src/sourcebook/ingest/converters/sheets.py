"""Spreadsheets (.csv, .tsv, .xlsx): rows as Markdown table rows under their header, so an
answer quotes a row with its header and a cell can be asked for.

Rows are read one at a time and written in blocks of `BLOCK_ROWS` (fewer when they are
long: `markdown_table`), each block a table of its own that repeats the header: a chunk
never holds rows without the header that names their columns. Each extracted line maps to
the row it came from (the line of the CSV file, the row number of the sheet). A CSV file
is read as a stream, in parts that ingestion stores one transaction each (`csv_parts`): a
file of any size is converted in bounded memory.
"""

from __future__ import annotations

import csv
import io
import itertools
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from sourcebook.ingest.converters.base import ConversionError, TextBuilder, markdown_table
from sourcebook.models import ParsedDocument

BLOCK_ROWS = 20
SNIFF_BYTES = 1 << 20  # what the encoding and the delimiter are detected from

Header = tuple[int, list[str]]  # (source line, cells)


def _add_rows(
    builder: TextBuilder, rows: Iterable[tuple[int, list[str]]], header: Header | None = None
) -> tuple[Header | None, int]:
    """Write (source line, cells) rows as tables of BLOCK_ROWS under `header`, or under the
    first non-empty row when there is none yet; the header and the number of data rows
    written."""
    block: list[tuple[int, list[str]]] = []
    written = 0

    def flush() -> None:
        if header is None or not block:
            return
        sources = [header[0]] + [line for line, _ in block]
        builder.blank(header[0])
        for text, row in markdown_table([header[1]] + [cells for _, cells in block]):
            builder.add(text, header[0] if row is None else sources[row])
        builder.blank(header[0])
        block.clear()

    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = _header(line, cells)
            continue
        block.append((line, cells))
        written += 1
        if len(block) == BLOCK_ROWS:
            flush()
    flush()
    return header, written


def _header(line: int, cells: list[str]) -> Header:
    return line, [c.strip() or f"column {i + 1}" for i, c in enumerate(cells)]


def csv_file(path: Path, data: bytes) -> ParsedDocument:
    """A CSV or TSV file in memory, as one document."""
    return next(csv_parts(io.BytesIO(data), path, part_rows=None))


def csv_parts(stream: BinaryIO, path: Path, part_rows: int | None) -> Iterator[ParsedDocument]:
    """The CSV or TSV file read from `stream` as it goes, in parts of about `part_rows`
    data rows (None: one part), so that a file of any size is held one part at a time.
    Parts are whole blocks of BLOCK_ROWS, so each part's tables repeat the header and the
    parts' texts joined by newlines are the text of the file read as one part. At least
    one part, the first holding the header. Raises ConversionError for a malformed file
    (at the part where it is found)."""
    if part_rows is not None:
        part_rows = max(BLOCK_ROWS, part_rows - part_rows % BLOCK_ROWS)
    numbered, encoding = _reader(stream, path)
    rows = ((line, cells) for line, cells in numbered if any(c.strip() for c in cells))
    with _csv_errors(numbered, encoding):
        first = next(rows, None)
    header = None if first is None else _header(*first)
    part = 0
    while True:
        builder = TextBuilder()
        with _csv_errors(numbered, encoding):
            _, written = _add_rows(builder, itertools.islice(rows, part_rows), header)
        if not part and header is not None and not written:  # a header alone: still a table
            builder.table([header[1]], header[0])
        if part and not written:
            return
        document = builder.build(path.stem)
        document.title = path.stem
        yield document
        part += 1
        if part_rows is None:
            return


@contextmanager
def _csv_errors(rows: _NumberedRows, encoding: str) -> Iterator[None]:
    """The csv module's and the decoder's errors as ConversionError, naming the line
    where the row being read starts (an unclosed quote is found only at the file's end)."""
    try:
        yield
    except csv.Error as exc:
        raise ConversionError(
            f"malformed CSV in the row starting on line {rows.line}: {exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConversionError(
            f"not {encoding} text in the row starting on line {rows.line} (the encoding "
            "detected from the file's start); save it as UTF-8"
        ) from exc


def check_csv(stream: BinaryIO, path: Path) -> None:
    """Read the whole CSV or TSV file from `stream` without keeping it, raising the
    ConversionError `csv_parts` would raise (before anything of it is stored)."""
    rows, encoding = _reader(stream, path)
    with _csv_errors(rows, encoding):
        for _ in rows:
            pass


def _reader(stream: BinaryIO, path: Path) -> tuple[_NumberedRows, str]:
    """The rows of `stream` (from its start), and the encoding it is decoded as."""
    sample = stream.read(SNIFF_BYTES)
    encoding = _encoding(sample)
    stream.seek(0)
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    else:
        delimiter = _sniff(sample[:8192].decode(encoding, errors="ignore"))
    return _NumberedRows(csv.reader(text, delimiter=delimiter, strict=True)), encoding


def _encoding(sample: bytes) -> str:
    """The encoding of a file from its first bytes: UTF-8 when they decode as such (a
    character cut at the sample's end allowed), else detected."""
    if b"\x00" in sample[:8192] and not sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConversionError("binary file (contains NUL bytes)")
    try:
        sample.decode("utf-8-sig")
        return "utf-8-sig"
    except UnicodeDecodeError as exc:
        if len(sample) == SNIFF_BYTES and exc.start >= len(sample) - 3:
            return "utf-8-sig"
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None or best.encoding is None:
        raise ConversionError("cannot detect the text encoding (not UTF-8, GBK, Big5, ...)")
    return str(best.encoding)


class _NumberedRows:
    """A csv reader's rows with the file line each starts on (a quoted cell may span
    lines); `line` is where the row being read starts."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.line = 1

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        for row in self._reader:
            yield self.line, row
            self.line = self._reader.line_num + 1


def _sniff(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text, delimiters=",;\t|").delimiter
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
            header, written = _add_rows(builder, rows)
            if header is not None and not written:  # a header alone: still a table
                builder.table([header[1]], header[0])
    finally:
        book.close()
    document = builder.build(path.stem, with_sources=False)
    document.title = str(book.properties.title or path.stem)
    return document


def _cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
