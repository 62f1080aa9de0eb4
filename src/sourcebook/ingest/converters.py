"""Converters: one file in, one `ParsedDocument` out, or a `ConversionError` with a reason.

Each format keeps the document's line structure where it can, so that a chunk's line range
points at the right place in the file the user opens.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

import yaml

from sourcebook.models import Heading, ParsedDocument
from sourcebook.text import display_text, normalize

# pypdf logs every oddity it recovers from; failures reach the user as ConversionError.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class ConversionError(Exception):
    """The file cannot be indexed; the message says why, in words a user can act on."""


MARKDOWN = {".md", ".markdown", ".mdx"}
TEXT = {".txt", ".text", ".log"}
RST = {".rst"}
HTML = {".html", ".htm", ".xhtml"}
PDF = {".pdf"}
DOCX = {".docx"}
CODE = {
    ".py",
    ".js",
    ".ts",
    ".tsx",
    ".jsx",
    ".go",
    ".rs",
    ".java",
    ".kt",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".cs",
    ".rb",
    ".php",
    ".swift",
    ".scala",
    ".sh",
    ".bash",
    ".sql",
    ".r",
    ".lua",
    ".pl",
    ".yaml",
    ".yml",
    ".toml",
    ".ini",
    ".cfg",
    ".json",
    ".css",
    ".tex",
}
SUPPORTED_SUFFIXES = MARKDOWN | TEXT | RST | HTML | PDF | DOCX | CODE


def kind_of(path: Path) -> str | None:
    """The converter family for a path, or None when the suffix is not supported."""
    suffix = path.suffix.lower()
    for kind, suffixes in (
        ("markdown", MARKDOWN),
        ("text", TEXT),
        ("rst", RST),
        ("html", HTML),
        ("pdf", PDF),
        ("docx", DOCX),
        ("code", CODE),
    ):
        if suffix in suffixes:
            return kind
    return None


def convert(path: Path, data: bytes) -> ParsedDocument:
    """Parse `data` (the bytes of `path`) according to the file's suffix."""
    kind = kind_of(path)
    if kind is None:
        raise ConversionError(f"unsupported file type {path.suffix or '(no suffix)'}")
    if not data.strip():
        raise ConversionError("empty file")
    document = _CONVERTERS[kind](path, data)
    if not document.text[document.body_start :].strip():
        raise ConversionError("no text could be extracted")
    return document


# --- plain text formats ------------------------------------------------------------------


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


def _read_text(data: bytes) -> str:
    return display_text(decode(data))


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.S)
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")


def _markdown(path: Path, data: bytes) -> ParsedDocument:
    text = _read_text(data)
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
    title = str(meta.get("title") or _first_h1(headings) or path.stem)
    return ParsedDocument(
        text=text,
        title=title,
        headings=headings,
        tags=_tags(meta.get("tags")),
        body_start=body_start,
    )


def _markdown_headings(text: str, start: int) -> list[Heading]:
    headings: list[Heading] = []
    in_fence = False
    offset = start
    for line in text[start:].splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            match = _ATX.match(line.rstrip("\n"))
            if match:
                headings.append(Heading(offset, len(match.group(1)), match.group(2).strip()))
        offset += len(line)
    return headings


def _first_h1(headings: list[Heading]) -> str | None:
    return next((h.title for h in headings if h.level == 1), None)


def _tags(value: object) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in re.split(r"[,，\s]+", value) if t.strip()]
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    return []


def _plain(path: Path, data: bytes) -> ParsedDocument:
    return ParsedDocument(text=_read_text(data), title=path.name)


_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}[ \t]*$")


def _rst(path: Path, data: bytes) -> ParsedDocument:
    """reStructuredText: section titles are lines underlined (optionally overlined) by a
    repeated punctuation character; levels follow the order styles first appear in."""
    text = _read_text(data)
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


# --- HTML --------------------------------------------------------------------------------

_SKIP_TAGS = {
    "script",
    "style",
    "noscript",
    "nav",
    "footer",
    "header",
    "aside",
    "form",
    "template",
    "svg",
    "iframe",
    "button",
}
_BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "blockquote",
    "li",
    "dt",
    "dd",
    "figcaption",
    "caption",
    "address",
    "summary",
    "details",
}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _html(path: Path, data: bytes) -> ParsedDocument:
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(data)
    except (etree.ParserError, ValueError) as exc:
        raise ConversionError(f"malformed HTML: {exc}") from exc
    title_el = root.find(".//title")
    page_title = display_text(title_el.text_content()).strip() if title_el is not None else ""
    body = root.find("body")
    builder = _TextBuilder()
    _walk_html(body if body is not None else root, builder)
    document = builder.build(page_title or path.stem)
    if page_title:
        document.title = page_title
    return document


class _TextBuilder:
    """Accumulates extracted lines with the source line each came from."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.source: list[int] = []
        self.headings: list[tuple[int, int, str]] = []  # (line index, level, title)
        self.pages: list[int] = []

    def add(self, text: str, source_line: int, page: int = 0) -> None:
        for line in display_text(text).split("\n"):
            line = line.rstrip()
            if not line.strip() and (not self.lines or not self.lines[-1]):
                continue  # collapse runs of blank lines
            self.lines.append(line)
            self.source.append(source_line)
            self.pages.append(page)

    def blank(self, source_line: int) -> None:
        if self.lines and self.lines[-1]:
            self.add("", source_line)

    def heading(self, level: int, title: str, source_line: int) -> None:
        self.blank(source_line)
        self.headings.append((len(self.lines), level, title))
        self.add(f"{'#' * level} {title}", source_line)
        self.blank(source_line)

    def build(self, fallback_title: str, with_pages: bool = False) -> ParsedDocument:
        text = "\n".join(self.lines)
        starts = [0]
        for line in self.lines:
            starts.append(starts[-1] + len(line) + 1)
        headings = [Heading(starts[i], level, title) for i, level, title in self.headings]
        title = _first_h1(headings) or (headings[0].title if headings else fallback_title)
        return ParsedDocument(
            text=text,
            title=title,
            headings=headings,
            source_lines=self.source,
            pages=self.pages if with_pages else None,
        )


def _walk_html(element: object, out: _TextBuilder) -> None:
    from lxml.html import HtmlElement

    assert isinstance(element, HtmlElement)
    line = element.sourceline or 1
    tag = element.tag if isinstance(element.tag, str) else ""
    if tag in _SKIP_TAGS:
        return
    if tag in _HEADING_TAGS:
        title = " ".join(element.text_content().split())
        if title:
            out.heading(_HEADING_TAGS[tag], title, line)
        return
    if tag == "pre":
        # each code line keeps its own source line, so a citation points at it
        content = element.text_content()
        first = line + len(content) - len(content.lstrip("\n"))
        code = content.strip("\n").split("\n")
        out.blank(line)
        out.add("```", line)
        for offset, code_line in enumerate(code):
            out.add(code_line, first + offset)
        out.add("```", first + len(code) - 1)
        out.blank(line)
        return
    if tag == "table":
        out.blank(line)
        for row in element.iter("tr"):
            cells = [" ".join(c.text_content().split()) for c in row if c.tag in ("td", "th")]
            out.add("| " + " | ".join(cells) + " |", row.sourceline or line)
        out.blank(line)
        return
    inline: list[str] = [element.text or ""]
    for child in element:
        child_tag = child.tag if isinstance(child.tag, str) else ""
        if child_tag in _SKIP_TAGS or not child_tag:
            inline.append(child.tail or "")
        elif (
            child_tag in _BLOCK_TAGS
            or child_tag in _HEADING_TAGS
            or child_tag
            in (
                "pre",
                "table",
                "ul",
                "ol",
                "dl",
                "br",
                "hr",
                "body",
                "tr",
            )
        ):
            _flush_inline(inline, out, line, tag)
            inline = []
            if child_tag != "br":
                _walk_html(child, out)
            inline.append(child.tail or "")
        else:
            inline.append(child.text_content() + (child.tail or ""))
    _flush_inline(inline, out, line, tag)


def _flush_inline(parts: list[str], out: _TextBuilder, line: int, tag: str) -> None:
    text = " ".join("".join(parts).split())
    if not text:
        return
    if tag == "li":
        text = "- " + text
    else:
        out.blank(line)
    out.add(text, line)


# --- PDF and DOCX ------------------------------------------------------------------------


def _pdf(path: Path, data: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                reader.decrypt("")  # many "encrypted" PDFs only restrict printing
            except Exception as exc:
                raise ConversionError("encrypted PDF (a password is required)") from exc
        builder = _TextBuilder()
        for page_number, page in enumerate(reader.pages, start=1):
            builder.add(page.extract_text() or "", page_number, page_number)
            builder.blank(page_number)
    except ConversionError:
        raise
    except FileNotDecryptedError as exc:
        raise ConversionError("encrypted PDF (a password is required)") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConversionError(f"corrupt PDF: {exc}") from exc
    document = builder.build(path.stem, with_pages=True)
    document.source_lines = None  # lines are those of the extracted text; pages locate them
    metadata_title = reader.metadata.title if reader.metadata else None
    document.title = normalize(str(metadata_title)).strip() if metadata_title else path.stem
    return document


def _docx(path: Path, data: bytes) -> ParsedDocument:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        word = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ConversionError(f"corrupt or unreadable DOCX: {exc}") from exc
    builder = _TextBuilder()
    for block in word.iter_inner_content():
        if isinstance(block, Table):
            builder.blank(0)
            for row in block.rows:
                builder.add("| " + " | ".join(c.text.strip() for c in row.cells) + " |", 0)
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None else ""
        level = _docx_heading_level(style or "")
        if text and level:
            builder.heading(level, text, 0)
        elif text:
            builder.blank(0)
            builder.add(text, 0)
    document = builder.build(path.stem)
    document.source_lines = None  # DOCX has no lines: cite lines of the extracted text
    core_title = word.core_properties.title
    if core_title:
        document.title = normalize(core_title).strip()
    return document


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


_CONVERTERS: dict[str, Callable[[Path, bytes], ParsedDocument]] = {
    "markdown": _markdown,
    "text": _plain,
    "rst": _rst,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "code": _plain,
}
