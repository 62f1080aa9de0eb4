"""Text utilities shared by every stage: normalisation, language, sentences, token counts."""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator

# Keep \t and \n: line numbers in citations are counted on them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
# What is stored and shown drops only characters no one can see or search for (C0/C1
# controls), so that every quote is the file's own text
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# One "token" per CJK character, per latin word/number, per other symbol: close to what
# multilingual subword tokenizers produce, and cheap to compute.
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+|[^\s\w]", re.UNICODE)

# A sentence ends at Chinese 。！？；… (plus closing quotes/brackets), or at English .!?;
# followed by whitespace. Decimal points ("0.9") and abbreviations without a following
# space are not sentence ends.
_SENTENCE_END = re.compile(
    r"(?:[。！？；!?]+|(?<=[\u3400-\u9fff]);|…+|\.{3}|(?<=[^\d\s])\.(?=\s)|(?<=\d)\.(?=\s+[A-Z]))[\"'”’」』）)]*"
)


def display_text(text: str) -> str:
    """A file's text as Sourcebook stores, shows and quotes it: its own characters
    (full-width punctuation, ligatures, zero-width spaces kept), line endings unified to
    "\n", C0/C1 control characters dropped. Matching goes through `normalize`.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE.sub("", text)


def normalize(text: str) -> str:
    """NFKC-normalise, unify line endings and drop control and zero-width characters:
    the form every comparison (keyword tokens, embeddings, fact checks) is made on, never
    what is shown (`display_text`).

    Line structure is preserved exactly, so line numbers stay those of the source file.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFKC", text)
    return _CONTROL.sub("", text)


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among the letters of `text`."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if _CJK.match(c)) / len(letters)


def is_chinese(text: str) -> bool:
    """Whether a question is (mostly) Chinese: decides the language of fixed phrases."""
    return cjk_ratio(text) >= 0.2


def count_tokens(text: str) -> int:
    """Approximate model tokens: CJK characters, words and symbols each count one."""
    return len(_TOKEN.findall(text))


def token_spans(text: str) -> Iterator[tuple[int, int]]:
    """Character spans of the tokens counted by `count_tokens`."""
    for match in _TOKEN.finditer(text):
        yield match.start(), match.end()


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split text[start:end] into sentences; returns spans without surrounding whitespace.

    Newlines inside a paragraph are not sentence ends (Markdown wraps lines), but a blank
    line, a list item or a heading line is.
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for block_start, block_end in _line_blocks(text, start, end):
        cursor = block_start
        for match in _SENTENCE_END.finditer(text, block_start, block_end):
            spans.append((cursor, match.end()))
            cursor = match.end()
        spans.append((cursor, block_end))
    return [s for s in (_strip_span(text, a, b) for a, b in spans) if s[1] > s[0]]


_BLOCK_BREAK = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:[-*+]\s|\d+[.)]\s|#|\||>))")


def _line_blocks(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    cursor = start
    for match in _BLOCK_BREAK.finditer(text, start, end):
        yield cursor, match.start()
        cursor = match.end()
    yield cursor, end


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class LineIndex:
    """Offset → 1-based line number in O(log n), for many lookups in one document."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)


def printable(text: str) -> str:
    """`text` safe to print on one line of a report: every character that is not
    printable (newlines, escape sequences, line separators, lone surrogates) written as
    its Python escape, so a file name cannot forge a line or move the cursor; Chinese and
    other printable characters are kept as they are."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}(\s|$)")
_MARKUP = [  # (pattern, replacement) for prose lines, in this order
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: their alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"), r"\1"),
    (re.compile(r"^\s{0,3}>\s?"), ""),  # block quotes
]


def markdown_as_text(text: str) -> str:
    """Markdown as a reader sees it rendered: headings (shown beside a hit anyway) and code
    fences dropped, emphasis, links and quote marks stripped from prose; code lines (inside
    fences) and inline `code` kept exactly as written."""
    lines: list[str] = []
    in_code = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            lines.append(line)
            continue
        if _HEADING.match(line):
            continue
        parts = re.split(r"(`[^`\n]+`)", line)  # inline code is kept as written
        for i in range(0, len(parts), 2):
            for pattern, replacement in _MARKUP:
                parts[i] = pattern.sub(replacement, parts[i])
        lines.append("".join(parts))
    return "\n".join(lines).strip("\n")


_RST_ADORNMENT = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_RST_LITERAL = re.compile(r"``([^`\n]+)``")
# kinds whose stored text is not Markdown-shaped; every other converter writes headings,
# fences or table pipes into the text
_PLAIN_KINDS = frozenset({"text", "code"})


def as_read(text: str, kind: str) -> str:
    """A chunk's text as a reader sees its document rendered: Markdown-like text through
    `markdown_as_text`; reStructuredText without section underlines, ``literals`` as
    `code`; plain text and source code unchanged."""
    if kind in _PLAIN_KINDS:
        return text
    if kind == "rst":  # section titles (a line over an underline) are shown beside a hit
        lines = text.split("\n")
        adorned = {i for i, line in enumerate(lines) if _RST_ADORNMENT.match(line)}
        titles = {i - 1 for i in adorned if i > 0 and lines[i - 1].strip()}
        kept = [line for i, line in enumerate(lines) if i not in adorned | titles]
        return _RST_LITERAL.sub(r"`\1`", "\n".join(kept)).strip("\n")
    return markdown_as_text(text)
