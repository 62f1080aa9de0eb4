"""Property-based input testing (hypothesis) of the converters and the chunker: random
bytes, random Unicode (surrogates, combining marks, control characters, Chinese), huge
lines. Nothing raises except a `ConversionError` with a reason, and every chunk's offsets
and line range point at its own text. Example counts are bounded so this stays fast."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sourcebook.ingest.chunker import ChunkingOptions, chunk_document
from sourcebook.ingest.converters import ConversionError, convert
from sourcebook.models import ParsedDocument
from sourcebook.text import LineIndex, printable

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUFFIXES = [".md", ".txt", ".rst", ".html", ".py", ".json", ".csv"]

# text with what breaks naive code: lone surrogates, combining marks, control and
# format characters, CJK, markup characters, and long runs without a break
unicode_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=()),  # any code point, lone surrogates included
        st.sampled_from([*"#*`|-=>\n\r\t 。！？；，", "\u0301", "\u200b", "\u2028", "\ud800"]),
        st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),
    ),
    max_size=400,
)
huge_lines = st.builds(
    lambda word, count, head: head + word * count,
    st.sampled_from(["长", "word ", "x", "a\u0301", "🙂"]),
    st.integers(1000, 20000),
    st.sampled_from(["", "# 标题\n\n", "```\n", "| a | b |\n"]),
)


def check_chunks(document: ParsedDocument, options: ChunkingOptions) -> None:
    chunks = chunk_document(document, options)
    text = document.text
    lines = LineIndex(text)
    total_lines = text.count("\n") + 1
    for i, chunk in enumerate(chunks):
        assert chunk.ordinal == i
        assert 0 <= chunk.char_start < chunk.char_end <= len(text)
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text.strip()
        if document.source_lines is None:
            assert chunk.line_start == lines.line(chunk.char_start)
            assert 1 <= chunk.line_start <= chunk.line_end <= total_lines
        else:
            assert 1 <= chunk.line_start <= chunk.line_end
    if text[document.body_start :].strip():
        assert chunks, "a document with text must have a chunk"


def converted(name: str, data: bytes) -> ParsedDocument | None:
    try:
        return convert(Path(name), data)
    except ConversionError as exc:
        assert str(exc)  # a reason a user can read
        return None


@FAST
@given(data=st.binary(max_size=3000), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_convert_or_fail_with_a_reason(data: bytes, suffix: str) -> None:
    document = converted("note" + suffix, data)
    if document is not None:
        check_chunks(document, ChunkingOptions(64, 8))


@FAST
@given(text=unicode_text, suffix=st.sampled_from(SUFFIXES))
def test_random_unicode_converts_and_chunks_within_bounds(text: str, suffix: str) -> None:
    data = text.encode("utf-8", "surrogatepass")  # lone surrogates as a file holds them
    document = converted("note" + suffix, data)
    if document is not None:
        check_chunks(document, ChunkingOptions(48, 12))


@settings(max_examples=15, deadline=None)
@given(text=huge_lines, suffix=st.sampled_from([".md", ".txt", ".html"]))
def test_huge_lines_are_cut_within_the_budget(text: str, suffix: str) -> None:
    document = converted("note" + suffix, text.encode("utf-8"))
    if document is not None:
        check_chunks(document, ChunkingOptions(300, 45))


@FAST
@given(text=unicode_text)
def test_chunking_any_normalised_text_keeps_offsets_valid(text: str) -> None:
    clean = text.encode("utf-8", "replace").decode("utf-8")
    check_chunks(ParsedDocument(text=clean, title="t"), ChunkingOptions(32, 8))


@FAST
@given(text=unicode_text)
def test_printable_names_are_one_line_and_keep_printable_text(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    if text.isprintable():
        assert shown == text
