"""What every converter shares: the error it raises, decoding, and the line builder that
records where each extracted line came from (source line, page, position on the page)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sourcebook.models import Box, Heading, ParsedDocument
from sourcebook.text import count_tokens, display_text


class ConversionError(Exception):
    """The file cannot be indexed; the message says why, in words a user can act on."""


Converter = Callable[[Path, bytes], ParsedDocument]


def decode(data: bytes) -> str:
    """Decode bytes of unknown encoding (UTF-8 first, then detection)."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConversionError("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise ConversionError("cannot detect the text encoding (not UTF-8, GBK, Big5, ...)")
    return str(best)


def read_text(data: bytes) -> str:
    return display_text(decode(data))


def first_h1(headings: list[Heading]) -> str | None:
    return next((h.title for h in headings if h.level == 1), None)


_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
_HYPHENATED = re.compile(r"[A-Za-z]-$")


def join_lines(lines: list[str]) -> str:
    """Lines of one paragraph (or words of one line) as one line: a word hyphenated at a
    line end is joined, a break between two Chinese (or Japanese, Korean) characters or
    punctuation marks disappears instead of becoming a space, any other becomes one space."""
    out = ""
    for line in (part.strip() for part in lines):
        if not line:
            continue
        if not out:
            out = line
        elif _HYPHENATED.search(out) and line[:1].islower():
            out = out[:-1] + line
        elif _CJK.match(out[-1]) and _CJK.match(line[0]):
            out += line
        else:
            out += " " + line
    return out


# A table longer than this is written in blocks under copies of its header: the chunker
# cuts a table that exceeds its budget (300 tokens by default) between rows, and a row
# cut off from its header can no longer be quoted with the names of its columns.
TABLE_BLOCK_TOKENS = 240


def markdown_table(rows: list[list[str]]) -> list[tuple[str, int | None]]:
    """Rows (the first one the header) as Markdown table lines, so that the answer units
    quote a row together with its header: each line with the index of the row it shows
    (the header's for the rule under it), None for the blank line between two blocks.
    Rows go into blocks of at most TABLE_BLOCK_TOKENS tokens, each under a copy of the
    header (a row longer than that is a block of its own)."""
    width = max((len(r) for r in rows), default=0)
    if not width:
        return []

    def cell(value: str) -> str:
        return join_lines(value.replace("|", "/").split("\n"))

    def line(row: list[str]) -> str:
        return "| " + " | ".join([cell(c) for c in row] + [""] * (width - len(row))) + " |"

    header = [(line(rows[0]), 0), ("|" + " --- |" * width, 0)]
    lines: list[tuple[str, int | None]] = list(header)
    header_tokens = count_tokens(header[0][0]) + width
    tokens = header_tokens
    for index, row in enumerate(rows[1:], start=1):
        text = line(row)
        size = count_tokens(text)
        if tokens + size > TABLE_BLOCK_TOKENS and tokens > header_tokens:
            lines.append(("", None))
            lines.extend(header)
            tokens = header_tokens
        lines.append((text, index))
        tokens += size
    return lines


class TextBuilder:
    """Accumulates extracted lines with the source line, page and box each came from."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.source: list[int] = []
        self.headings: list[tuple[int, int, str]] = []  # (line index, level, title)
        self.pages: list[int] = []
        self.boxes: list[Box | None] = []

    def add(self, text: str, source_line: int, page: int = 0, box: Box | None = None) -> None:
        for line in display_text(text).split("\n"):
            line = line.rstrip()
            if not line.strip() and (not self.lines or not self.lines[-1]):
                continue  # collapse runs of blank lines
            self.lines.append(line)
            self.source.append(source_line)
            self.pages.append(page)
            self.boxes.append(box)

    def blank(self, source_line: int, page: int = 0) -> None:
        if self.lines and self.lines[-1]:
            self.add("", source_line, page)

    def heading(
        self, level: int, title: str, source_line: int, page: int = 0, box: Box | None = None
    ) -> None:
        self.blank(source_line, page)
        self.headings.append((len(self.lines), level, title))
        self.add(f"{'#' * level} {title}", source_line, page, box)
        self.blank(source_line, page)

    def table(self, rows: list[list[str]], source_line: int, page: int = 0) -> None:
        lines = markdown_table(rows)
        if lines:
            self.blank(source_line, page)
            for line, _row in lines:
                self.add(line, source_line, page)
            self.blank(source_line, page)

    def build(
        self, fallback_title: str, with_pages: bool = False, with_sources: bool = True
    ) -> ParsedDocument:
        text = "\n".join(self.lines)
        starts = [0]
        for line in self.lines:
            starts.append(starts[-1] + len(line) + 1)
        headings = [Heading(starts[i], level, title) for i, level, title in self.headings]
        title = first_h1(headings) or (headings[0].title if headings else fallback_title)
        return ParsedDocument(
            text=text,
            title=title,
            headings=headings,
            source_lines=self.source if with_sources else None,
            pages=self.pages if with_pages else None,
            boxes=self.boxes if with_pages and any(self.boxes) else None,
        )
