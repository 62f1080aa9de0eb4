"""HTML: the text of the page without its navigation, each line mapped to its source line."""

from __future__ import annotations

import re
from pathlib import Path

from sourcebook.ingest.converters.base import ConversionError, TextBuilder, decode, markdown_table
from sourcebook.models import ParsedDocument
from sourcebook.text import display_text

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
_DECLARED_CHARSET = re.compile(rb"<meta[^>]+charset|<\?xml[^>]+encoding", re.IGNORECASE)
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def html(path: Path, data: bytes) -> ParsedDocument:
    return html_text(data, path.stem)


def html_text(data: bytes, fallback_title: str) -> ParsedDocument:
    """The text of an HTML page (also a chapter of an EPUB)."""
    import lxml.html
    from lxml import etree

    declared = data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"))
    declared = declared or _DECLARED_CHARSET.search(data[:4096]) is not None
    # without a declared charset lxml reads the bytes as Latin-1: a UTF-8 page written by
    # hand or exported without <meta charset> would come out as mojibake
    source: bytes | str = data if declared else decode(data)
    try:
        root = lxml.html.document_fromstring(source)
    except (etree.ParserError, ValueError) as exc:
        raise ConversionError(f"malformed HTML: {exc}") from exc
    title_el = root.find(".//title")
    page_title = display_text(title_el.text_content()).strip() if title_el is not None else ""
    body = root.find("body")
    builder = TextBuilder()
    _walk_html(body if body is not None else root, builder)
    document = builder.build(page_title or fallback_title)
    if page_title:
        document.title = page_title
    return document


def _walk_html(element: object, out: TextBuilder) -> None:
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
        rows = [r for r in element.iter("tr") if any(c.tag in ("td", "th") for c in r)]
        cells = [[c.text_content() for c in r if c.tag in ("td", "th")] for r in rows]
        # each line keeps the source line of the row it shows (a repeated header, the
        # header's); the blank line between blocks, the table's
        for text, row in markdown_table(cells):
            out.add(text, line if row is None else rows[row].sourceline or line)
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


def _flush_inline(parts: list[str], out: TextBuilder, line: int, tag: str) -> None:
    text = " ".join("".join(parts).split())
    if not text:
        return
    if tag == "li":
        text = "- " + text
    else:
        out.blank(line)
    out.add(text, line)
