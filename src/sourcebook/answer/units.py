"""Answer units: the pieces of a note an extractive answer may quote.

Notes are not only prose. A fact sits in a table row (meaningful only with its header), a
list item (often meaningful only with the line that introduces the list, which may be a
run of `key: value` lines under a sentence ending in "：", or the arguments of a call that
spans several lines), a code line (with the comment that explains it), a `key: value` or
`term — definition` line, or the line right under a heading. `answer_units` reads a
chunk's text line by line and returns every quotable unit with the context that makes it
readable: each unit is a list of spans of the chunk text, context first, so that every
quote is an exact substring of the note.

Units with no content (a bare label such as "SD3.5:", a heading alone, a line that is only
a link, a closing bracket) are never returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sourcebook.text import sentence_spans

UnitKind = Literal[
    "sentence", "heading_line", "key_value", "list_item", "list", "table_row", "code"
]

_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_TABLE = re.compile(r"^[ \t]*\|")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$")
_ITEM = re.compile(r"^([ \t]*)(?:[-*+•]|\d{1,3}[.)、])[ \t]+")
# "lr: 3e-4", "默认值：0.9", "- batch size: 32" — a short key without sentence punctuation
_KEY_VALUE = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?[^\s:：。！？!?；;，,、|#`>][^:：。！？!?；;，,、|]{0,23}[:：][ \t]*\S"
)
# "HNSW — a layered proximity graph", "KV cache -- 缓存注意力的 K 和 V"
_TERM_DEFINITION = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?[^\s—–]{1}[^—–。！？]{0,38}?[ \t]*(?:——|—|–|--)[ \t]*\S"
)
# a code line that leaves a call or literal open ("LoraConfig(", "cfg = {  # …"), and one
# that closes it
_OPENS = re.compile(r"[(\[{][ \t]*(?:(?:#|//).*)?$")
_CLOSES = re.compile(r"^[ \t]*[)\]}]")
_COMMENT_LINE = re.compile(r"^[ \t]*(?:#|//|--(?!-)|/\*|\*[ \t]|;)")
_LINK_ONLY = re.compile(r"^[ \t]*(?:[-*+][ \t]+)?(?:!?\[[^\]]*\]\([^)]*\)|<?https?://\S+>?)[ \t]*$")
_CONCLUSION = re.compile(
    r"^(?:[-*+][ \t]+)?(?:所以|因此|因而|于是|故而|这样一来|由此|可见|"
    r"(?:so|therefore|thus|hence|as a result|consequently|(?:that|this)(?:'s| is) why)\b)",
    re.IGNORECASE,
)
_MARKER = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)、])[ \t]+")
# "- [ ] Mamba 和 attention 的对比": a to-do is what the notes do not cover yet
_OPEN_TASK = re.compile(r"^[ \t]*(?:[-*+•][ \t]+)?\[[ \t]\][ \t]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[._\-'][A-Za-z0-9]+)*")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

_SENTENCE_END = ("。", "！", "？", ".", "!", "?")

# A list longer than this is not quoted whole: its items are quoted one by one.
MAX_LIST_ITEMS = 8


@dataclass(frozen=True)
class AnswerUnit:
    """A quotable piece of a chunk: `spans` (offsets into the chunk text, in text order)
    are quoted; `main` is the span that carries the answer, the others give its context
    (table header, list lead-in, code comment). `block` numbers the paragraph, list,
    table or code block the unit belongs to, `position` orders units in the text.
    `heading` is the heading right above a unit that is the first line under it;
    `section` the heading of the section the unit is in, as far as the chunk shows it;
    `caption` the comment lines that open the code block the unit is in, which say what
    the whole block is ("# 最简单的 top-2 MoE 层" above the line that calls softmax)."""

    kind: UnitKind
    spans: tuple[tuple[int, int], ...]
    main: tuple[int, int]
    block: int
    position: int
    heading: str = ""
    section: str = ""
    caption: str = ""
    conclusion: bool = False  # starts with 所以/因此/so: its reason is worth quoting too
    open_clause: bool = False  # ends with "；"/";": the next clause continues the point
    introduces: bool = False  # ends with "：/:": what follows (a list, a formula) is the point
    items: int = field(default=0)  # for a whole list: how many items it quotes

    def text(self, source: str) -> str:
        return "\n".join(source[a:b] for a, b in self.spans)


@dataclass
class _Line:
    start: int
    end: int
    kind: Literal["blank", "heading", "fence", "code", "table", "rule", "item", "prose"]
    indent: int = 0


def answer_units(text: str) -> list[AnswerUnit]:
    """Every quotable unit of `text` (a chunk), in text order."""
    builder = _UnitBuilder(text)
    lines = _classify(text)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.kind == "heading":
            builder.heading = builder.section = _heading_title(text[line.start : line.end])
            builder.last_sentence = None
            i += 1
        elif line.kind == "blank":
            i += 1
        elif line.kind in ("fence", "code"):
            i = builder.code_block(lines, i)
        elif line.kind in ("table", "rule"):
            i = builder.table(lines, i)
        elif line.kind == "item":
            i = builder.list_block(lines, i)
        else:
            i = builder.paragraph(lines, i)
    return sorted(builder.units, key=lambda u: (u.position, len(u.spans)))


def _classify(text: str) -> list[_Line]:
    lines: list[_Line] = []
    offset = 0
    in_fence = False
    for raw in text.split("\n"):
        start, end = offset, offset + len(raw)
        offset = end + 1
        if _FENCE.match(raw):
            in_fence = not in_fence
            lines.append(_Line(start, end, "fence"))
        elif in_fence:
            lines.append(_Line(start, end, "code"))
        elif not raw.strip():
            lines.append(_Line(start, end, "blank"))
        elif _HEADING.match(raw):
            lines.append(_Line(start, end, "heading"))
        elif _TABLE_RULE.match(raw) and "|" in raw:
            lines.append(_Line(start, end, "rule"))
        elif re.fullmatch(r"[ \t]*(?:-{3,}|={3,}|\*{3,})[ \t]*", raw):
            lines.append(_Line(start, end, "blank"))  # a rule or a setext underline
        elif _TABLE.match(raw):
            lines.append(_Line(start, end, "table"))
        elif match := _ITEM.match(raw):
            lines.append(_Line(start, end, "item", len(match.group(1).expandtabs(4))))
        else:
            lines.append(_Line(start, end, "prose", len(raw) - len(raw.lstrip())))
    return lines


def _heading_title(line: str) -> str:
    return line.strip().lstrip("#").strip()


class _UnitBuilder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.units: list[AnswerUnit] = []
        self.heading = ""  # heading whose first line has not been seen yet
        self.section = ""  # heading of the section being read
        self.caption = ""  # the opening comment of the code block being read
        self.blocks = 0
        # the last sentence of the paragraph just before a list: the list's lead-in
        self.last_sentence: tuple[int, int] | None = None
        self.last_sentence_block = -1

    def add(self, kind: UnitKind, spans: list[tuple[int, int]], main: tuple[int, int]) -> None:
        if not _has_content(self.text[main[0] : main[1]]):
            return
        main_text = self.text[main[0] : main[1]].rstrip()
        self.units.append(
            AnswerUnit(
                kind=kind,
                spans=tuple(spans),
                main=main,
                block=self.blocks,
                position=main[0],
                heading=self.heading,
                section=self.section,
                caption=self.caption,
                conclusion=bool(_CONCLUSION.match(main_text.lstrip())),
                open_clause=main_text.endswith(("；", ";")),
                introduces=_ends_lead_in(main_text) and kind in ("sentence", "heading_line"),
            )
        )
        self.heading = ""

    def paragraph(self, lines: list[_Line], i: int) -> int:
        """Prose lines up to a blank or structural line. A `key: value` or
        `term — definition` line is a unit of its own; other lines are wrapped prose,
        split into sentences. Definition lines right under a sentence ending in "：/:"
        are a list without markers ("实测：" above "fp32: 每条约 38 ms" and
        "int8: 每条约 15 ms"): each is quoted with that lead-in, and the whole of it is a
        list unit as well."""
        self.blocks += 1
        run_start: int | None = None
        run_end = 0
        last: tuple[int, int] | None = None
        lead_in: tuple[int, int] | None = None  # the sentence the definition lines follow
        items: list[tuple[int, int, int]] = []
        while i < len(lines) and lines[i].kind == "prose":
            line = lines[i]
            raw = self.text[line.start : line.end]
            if _is_definition_line(raw):
                sentence = self._sentences(run_start, run_end)
                if sentence is not None:  # prose came between: a new lead-in, or none
                    self._whole_list(lead_in, items)
                    lead_in = sentence if _ends_lead_in(self.text[slice(*sentence)]) else None
                    items = []
                last = sentence or last
                run_start = None
                span = _strip(self.text, line.start, line.end)
                if lead_in:
                    self.add("list_item", [lead_in, span], span)
                    items.append((*span, 0))
                else:
                    self.add("key_value", [span], span)
                last = span
            else:
                run_start = line.start if run_start is None else run_start
                run_end = line.end
            i += 1
        self._whole_list(lead_in, items)
        last = self._sentences(run_start, run_end) or last
        self.last_sentence, self.last_sentence_block = last, self.blocks
        return i

    def _sentences(self, start: int | None, end: int) -> tuple[int, int] | None:
        if start is None:
            return None
        last = None
        for span in sentence_spans(self.text, start, end):
            kind: UnitKind = "heading_line" if self.heading else "sentence"
            self.add(kind, [span], span)
            last = span
        return last

    def list_block(self, lines: list[_Line], i: int) -> int:
        """Items (with their continuation lines) up to a structural line or a blank line
        not followed by another item. Each item is quoted with its lead-in (the sentence
        ending in "：/:" just before the list, or an unfinished sentence the list follows
        on the next line: "例子：LLaMA-2-7B，fp16" above "- 每个 token：0.5 MB"; or the
        parent item of a nested one); an item that is only a label ("优点：") introduces
        its sub-items and is not quoted alone."""
        lead_in = self.last_sentence if self.last_sentence_block == self.blocks else None
        if lead_in and not (
            _ends_lead_in(self.text[lead_in[0] : lead_in[1]])
            or (
                self.text[lead_in[1] : lines[i].start].count("\n") <= 1
                and not self.text[lead_in[0] : lead_in[1]].rstrip().endswith(_SENTENCE_END)
            )
        ):
            lead_in = None
        self.blocks += 1
        items: list[tuple[int, int, int]] = []  # (start, end, indent)
        while i < len(lines):
            line = lines[i]
            if line.kind == "item":
                items.append((line.start, line.end, line.indent))
            elif line.kind == "prose" and items and line.indent > items[-1][2]:
                items[-1] = (items[-1][0], line.end, items[-1][2])  # continuation line
            elif not (line.kind == "blank" and i + 1 < len(lines) and lines[i + 1].kind == "item"):
                break
            i += 1
        parents: list[tuple[int, int, int]] = []
        for start, end, indent in items:
            while parents and parents[-1][2] >= indent:
                parents.pop()
            span = _strip(self.text, start, end)
            context = parents[-1][:2] if parents else lead_in
            if not _ends_lead_in(self.text[span[0] : span[1]]):
                self.add("list_item", [context, span] if context else [span], span)
            parents.append((span[0], span[1], indent))
        if lead_in and _ends_lead_in(self.text[lead_in[0] : lead_in[1]]):
            self._whole_list(lead_in, items)
        self.last_sentence = None
        return i

    def _whole_list(
        self, lead_in: tuple[int, int] | None, items: list[tuple[int, int, int]]
    ) -> None:
        if lead_in is None or not 2 <= len(items) <= MAX_LIST_ITEMS:
            return
        # an empty bullet ("SD3.5:") is left out: it would make the list look like it
        # answers a question about it
        spans = [_strip(self.text, a, b) for a, b, _ in items]
        contentful = [s for s in spans if _has_content(self.text[s[0] : s[1]])]
        if len(contentful) < 2:
            return
        self.units.append(
            AnswerUnit(
                kind="list",
                spans=(lead_in, *contentful),
                main=lead_in,
                block=self.blocks,
                position=lead_in[0],
                items=len(contentful),
            )
        )

    def table(self, lines: list[_Line], i: int) -> int:
        """Rows, each quoted with the header row when the table has one."""
        self.blocks += 1
        rows: list[_Line] = []
        while i < len(lines) and lines[i].kind in ("table", "rule"):
            rows.append(lines[i])
            i += 1
        header = None
        if len(rows) >= 2 and rows[1].kind == "rule" and rows[0].kind == "table":
            header = _strip(self.text, rows[0].start, rows[0].end)
            rows = rows[2:]
        for row in rows:
            if row.kind != "table":
                continue
            span = _strip(self.text, row.start, row.end)
            cells = [c for c in self.text[span[0] : span[1]].strip().strip("|").split("|")]
            if not any(_has_content(c) for c in cells):
                continue
            self.add("table_row", [header, span] if header else [span], span)
        self.last_sentence = None
        return i

    def code_block(self, lines: list[_Line], i: int) -> int:
        """Code lines, each with the comment lines right above it (a comment at the end of
        the line is part of the line). The lines of a call or literal that spans several
        lines ("LoraConfig(" above "r=16," and "lora_alpha=32,") are a list its first line
        introduces: each is quoted with that line, and the whole of it is a unit too."""
        self.blocks += 1
        if lines[i].kind == "fence":
            i += 1
        comments: list[tuple[int, int]] = []
        opening = _strip(self.text, lines[i].start, lines[i].end)[0] if i < len(lines) else -1
        opener: tuple[int, int] | None = None  # the first line of an open call or literal
        items: list[tuple[int, int, int]] = []
        while i < len(lines) and lines[i].kind == "code":
            line = lines[i]
            raw = self.text[line.start : line.end]
            span = _strip(self.text, line.start, line.end)
            above = [(comments[0][0], comments[-1][1])] if comments else []
            if not raw.strip():
                comments = []
            elif _COMMENT_LINE.match(raw):
                comments.append(span)
                if comments[0][0] == opening:  # still the comment the block opens with
                    self.caption = self.text[opening : span[1]]
            elif opener and _CLOSES.match(raw):
                self._whole_list(opener, items)
                self.add("code", [*above, span], span)  # "])" alone is no unit
                opener, items, comments = None, [], []
            elif opener:
                self.add("list_item", [opener, *above, span], span)
                items.append((*span, 0))
                comments = []
            else:
                self.add("code", [*above, span], span)
                if _OPENS.search(raw):
                    opener, items = span, []
                comments = []
            i += 1
        if comments:  # a trailing comment explains the block: quotable alone
            block = (comments[0][0], comments[-1][1])
            self.add("code", [block], block)
        if i < len(lines) and lines[i].kind == "fence":
            i += 1
        self.last_sentence = None
        self.caption = ""
        return i


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in " \t":
        start += 1
    while end > start and text[end - 1] in " \t\r":
        end -= 1
    return start, end


def _is_definition_line(line: str) -> bool:
    """A `key: value` or `term — definition` line: a short key, then at most one sentence
    (a prose line that merely contains a colon stays prose)."""
    if len(line) > 240 or len(re.findall(r"[。！？]|[.!?](?=\s)", line.rstrip(" 。.!?！？"))) > 0:
        return False
    return bool(_KEY_VALUE.match(line) or _TERM_DEFINITION.match(line))


def _ends_lead_in(sentence: str) -> bool:
    return sentence.rstrip().endswith(("：", ":"))


def _after_colon(text: str) -> str:
    return re.split(r"[:：]", text, maxsplit=1)[-1] if re.search(r"[:：]", text) else text


def _has_content(text: str) -> bool:
    """Whether quoting `text` could tell anyone anything: not a bare label ("SD3.5:"), a
    link alone, a closing bracket or a lone marker."""
    if _LINK_ONLY.match(text) or _OPEN_TASK.match(text):
        return False
    body = _MARKER.sub("", text).strip()
    if (
        _ends_lead_in(body)
        and len(body) < 48
        and not re.search(r"[。！？；;，,]|[.!?](?=\s)", body[:-1])
    ):
        body = ""  # a label waiting for content that never came
    letters = sum(1 for c in body if c.isalnum())
    return letters >= 2


def display_length(text: str) -> int:
    """Length for the answer budget: a Chinese character counts one, a latin word two
    (120 Chinese characters read about as long as 60 English words)."""
    return len(_CJK_CHAR.findall(text)) + 2 * len(_WORD.findall(text))


def quote_text(text: str) -> str:
    """A span as it is shown inside an answer: without its list marker or indentation
    (what remains is still an exact substring of the note)."""
    return _MARKER.sub("", text, count=1).strip()
