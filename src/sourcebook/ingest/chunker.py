"""Structure-aware chunking: headings, then blocks, then sentences, merged to a token budget.

A chunk is always a contiguous slice of the document text, so its character offsets and
line range point exactly at what it contains. Fenced code blocks and tables are atomic
units: they are only cut (at line boundaries) when they alone exceed the budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sourcebook.models import ChunkDraft, Heading, ParsedDocument
from sourcebook.text import LineIndex, count_tokens, normalize, sentence_spans, token_spans


@dataclass(frozen=True)
class ChunkingOptions:
    max_tokens: int = 300
    overlap_tokens: int = 45


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    path: list[str]
    body_start: int  # first offset after the heading line


def chunk_document(document: ParsedDocument, options: ChunkingOptions) -> list[ChunkDraft]:
    text = document.text
    lines = LineIndex(text)
    drafts: list[ChunkDraft] = []
    sections = [
        s
        for s in _sections(text, document.headings, document.body_start)
        # a heading directly followed by a sub-heading: its path lives on in the next one
        if text[s.body_start : s.end].strip()
    ]
    if not sections and text[document.body_start :].strip():
        # headings and nothing else (an outline): the headings are the content
        sections = [_Section(document.body_start, len(text), [], document.body_start)]
    for section in sections:
        units = _units(text, section.start, section.end, options.max_tokens)
        for start, end in _merge(units, options):
            line_start = lines.line(start)
            line_end = lines.line(max(start, end - 1))
            if document.source_lines:
                line_start = document.source_lines[line_start - 1]
                line_end = document.source_lines[line_end - 1]
            drafts.append(
                ChunkDraft(
                    ordinal=len(drafts),
                    text=text[start:end],
                    heading_path=section.path,
                    char_start=start,
                    char_end=end,
                    line_start=line_start,
                    line_end=line_end,
                )
            )
    return drafts


def contextual_text(title: str, heading_path: list[str], text: str) -> str:
    """What is embedded and keyword-indexed for a chunk: its context, then its text.

    The heading path (or the title) tells the models what a short passage is about. It is
    NFKC-normalised: what is matched, not what is shown.
    """
    context = chunk_context(title, heading_path, text)
    return normalize(f"{context}\n{text}" if context else text)


def chunk_context(title: str, heading_path: list[str], text: str) -> str:
    """The context line `contextual_text` puts before a chunk ("" when there is none:
    no headings and no title, or the chunk already starts with it)."""
    context = " > ".join(heading_path) or title
    if context and not text.lstrip("# ").startswith(context):
        return context
    return ""


def _sections(text: str, headings: list[Heading], body_start: int) -> list[_Section]:
    headings = sorted((h for h in headings if h.offset >= body_start), key=lambda h: h.offset)
    sections: list[_Section] = []
    if not headings or headings[0].offset > body_start:
        end = headings[0].offset if headings else len(text)
        sections.append(_Section(body_start, end, [], body_start))
    stack: list[Heading] = []
    for i, heading in enumerate(headings):
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        stack.append(heading)
        end = headings[i + 1].offset if i + 1 < len(headings) else len(text)
        newline = text.find("\n", heading.offset, end)
        body = end if newline < 0 else newline + 1
        sections.append(_Section(heading.offset, end, [h.title for h in stack], body))
    return sections


_FENCE_LINE = re.compile(r"^[ \t]*(```|~~~)")
_TABLE_LINE = re.compile(r"^[ \t]*\|")


def _units(text: str, start: int, end: int, max_tokens: int) -> list[_Unit]:
    """Split a section into units no larger than the budget, largest structure first."""
    units: list[_Unit] = []
    for block_start, block_end, atomic in _blocks(text, start, end):
        tokens = count_tokens(text[block_start:block_end])
        if tokens <= max_tokens:
            units.append(_Unit(block_start, block_end, tokens))
        elif atomic:
            units.extend(_split_lines(text, block_start, block_end, max_tokens))
        else:
            for s_start, s_end in sentence_spans(text, block_start, block_end):
                s_tokens = count_tokens(text[s_start:s_end])
                if s_tokens <= max_tokens:
                    units.append(_Unit(s_start, s_end, s_tokens))
                else:
                    units.extend(_split_tokens(text, s_start, s_end, max_tokens))
    return units


def _blocks(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """Paragraphs, fenced code blocks and tables of text[start:end] as (start, end, atomic)."""
    blocks: list[tuple[int, int, bool]] = []
    offset = start
    current: tuple[int, int] | None = None  # open paragraph
    fence_start: int | None = None
    table: tuple[int, int] | None = None

    def close_paragraph() -> None:
        nonlocal current
        if current:
            blocks.append((current[0], current[1], False))
        current = None

    def close_table() -> None:
        nonlocal table
        if table:
            blocks.append((table[0], table[1], True))
        table = None

    for line in text[start:end].splitlines(keepends=True):
        line_end = offset + len(line.rstrip("\n"))
        if fence_start is not None:
            if _FENCE_LINE.match(line):
                blocks.append((fence_start, line_end, True))
                fence_start = None
        elif _FENCE_LINE.match(line):
            close_paragraph()
            close_table()
            fence_start = offset
        elif _TABLE_LINE.match(line):
            close_paragraph()
            table = (table[0] if table else offset, line_end)
        elif not line.strip():
            close_paragraph()
            close_table()
        else:
            close_table()
            current = (current[0] if current else offset, line_end)
        offset += len(line)
    if fence_start is not None:  # unterminated fence: keep what is there
        blocks.append((fence_start, end, True))
    close_paragraph()
    close_table()
    return blocks


def _split_lines(text: str, start: int, end: int, max_tokens: int) -> list[_Unit]:
    units: list[_Unit] = []
    offset = start
    for line in text[start:end].splitlines(keepends=True):
        line_end = offset + len(line.rstrip("\n"))
        tokens = count_tokens(line)
        if tokens > max_tokens:
            units.extend(_split_tokens(text, offset, line_end, max_tokens))
        elif line.strip():
            units.append(_Unit(offset, line_end, tokens))
        offset += len(line)
    return units


def _split_tokens(text: str, start: int, end: int, max_tokens: int) -> list[_Unit]:
    """Last resort for a sentence longer than the budget: cut between tokens."""
    spans = [(start + a, start + b) for a, b in token_spans(text[start:end])]
    units = []
    for i in range(0, len(spans), max_tokens):
        group = spans[i : i + max_tokens]
        units.append(_Unit(group[0][0], group[-1][1], len(group)))
    return units


def _merge(units: list[_Unit], options: ChunkingOptions) -> list[tuple[int, int]]:
    """Greedily pack consecutive units up to the budget; each new chunk repeats the last
    units of the previous one, up to the overlap budget."""
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        total = units[i].tokens
        j = i + 1
        while j < len(units) and total + units[j].tokens <= options.max_tokens:
            total += units[j].tokens
            j += 1
        chunks.append((units[i].start, units[j - 1].end))
        if j >= len(units):
            break
        # step back over trailing units that fit in the overlap, but always advance
        k = j
        overlap = 0
        while k - 1 > i and overlap + units[k - 1].tokens <= options.overlap_tokens:
            k -= 1
            overlap += units[k].tokens
        i = k
    return chunks
