"""Plain-text formats whose characters are the document: Markdown (front matter, Obsidian
tags, footnotes; wiki-links are resolved when a note is read, `retrieve/links.py`), plain
text and code, reStructuredText."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sourcebook.ingest.converters.base import first_h1, read_text
from sourcebook.models import Heading, ParsedDocument

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.S)
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
# Obsidian inline tags: #tag or #nested/tag, not a heading ("# x"), not a colour (#fff in
# code is skipped with the fences), not inside a word (C#)
_INLINE_TAG = re.compile(r"(?<![\w#&/])#([A-Za-z_\u4e00-\u9fff][\w/\-\u4e00-\u9fff]*)")
_IMAGE = re.compile(
    r"!\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)"  # ![alt](path "title")
    r"|!\[\[([^\]|]+\.(?:png|jpe?g|webp|bmp|tiff?))(?:\|[^\]]*)?\]\]",  # ![[path.png]]
    re.I,
)


def markdown(path: Path, data: bytes) -> ParsedDocument:
    text = read_text(data)
    meta: dict[str, object] = {}
    body_start = 0
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            loaded = None  # not front matter after all; index it as text
        if isinstance(loaded, dict):
            meta = loaded
            body_start = match.end()
    headings = _markdown_headings(text, body_start)
    title = str(meta.get("title") or first_h1(headings) or path.stem)
    headings += _footnotes_section(text, body_start, headings)
    tags = _tags(meta.get("tags")) + _tags(meta.get("tag"))
    for tag in _inline_tags(text, body_start):
        if tag not in tags:
            tags.append(tag)
    return ParsedDocument(
        text=text,
        title=title,
        headings=headings,
        tags=tags,
        body_start=body_start,
        images=[m.group(1) or m.group(2) for m in _IMAGE.finditer(text, body_start)],
    )


def _outside_fences(text: str, start: int) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    in_fence = False
    offset = start
    for line in text[start:].splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append((offset, line))
        offset += len(line)
    return lines


def _markdown_headings(text: str, start: int) -> list[Heading]:
    headings: list[Heading] = []
    for offset, line in _outside_fences(text, start):
        match = _ATX.match(line.rstrip("\n"))
        if match:
            headings.append(Heading(offset, len(match.group(1)), match.group(2).strip()))
    return headings


_FOOTNOTE_DEFINITION = re.compile(r"^\[\^[^\]]+\]:[ \t]", re.M)


def _footnotes_section(text: str, start: int, headings: list[Heading]) -> list[Heading]:
    """Footnote definitions (`[^1]: ...`) gathered at the end of a note are a section of
    their own ("Footnotes"), not a part of whatever section happens to come last."""
    definitions = [
        offset for offset, line in _outside_fences(text, start) if _FOOTNOTE_DEFINITION.match(line)
    ]
    if not definitions:
        return []
    first = definitions[0]
    if any(h.offset > first for h in headings):
        return []  # definitions placed inside the text: they belong where they are
    return [Heading(first, 1, "Footnotes")]


def _inline_tags(text: str, start: int) -> list[str]:
    tags: list[str] = []
    for _, line in _outside_fences(text, start):
        if _ATX.match(line.rstrip("\n")):
            continue
        line = re.sub(r"`[^`]*`|\]\([^)]*\)", "", line)  # inline code, link targets (#anchor)
        for match in _INLINE_TAG.finditer(line):
            if match.group(1) not in tags:
                tags.append(match.group(1))
    return tags


def _tags(value: object) -> list[str]:
    if isinstance(value, str):
        return [t.strip().lstrip("#") for t in re.split(r"[,，\s]+", value) if t.strip()]
    if isinstance(value, list):
        return [str(t).strip().lstrip("#") for t in value if str(t).strip()]
    return []


def plain(path: Path, data: bytes) -> ParsedDocument:
    return ParsedDocument(text=read_text(data), title=path.name)


_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}[ \t]*$")


def rst(path: Path, data: bytes) -> ParsedDocument:
    """reStructuredText: section titles are lines underlined (optionally overlined) by a
    repeated punctuation character; levels follow the order styles first appear in."""
    text = read_text(data)
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    styles: list[str] = []
    headings: list[Heading] = []
    for i in range(1, len(lines)):
        under = _RST_ADORNMENT.match(lines[i])
        title = lines[i - 1].strip()
        if not under or not title or _RST_ADORNMENT.match(lines[i - 1]):
            continue
        if len(lines[i].rstrip()) < len(title.encode("utf-8")) // 3:
            continue  # too short to be an underline: a transition or a table border
        overlined = i >= 2 and lines[i - 2].rstrip() == lines[i].rstrip()
        style = ("o" if overlined else "") + under.group(1)
        if style not in styles:
            styles.append(style)
        start = offsets[i - 2] if overlined else offsets[i - 1]
        headings.append(Heading(start, styles.index(style) + 1, title))
    title = headings[0].title if headings else path.stem
    return ParsedDocument(text=text, title=title, headings=headings)
