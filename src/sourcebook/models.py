"""Typed records that flow between the pipeline stages and out of the facade.

Public results (hits, answers, reports) are pydantic models so every surface (CLI `--json`,
HTTP, MCP) serialises them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class Heading:
    """A heading found by a converter: where it starts in the text, its level and title."""

    offset: int
    level: int
    title: str


@dataclass
class ParsedDocument:
    """What a converter produces from one file.

    `text` is what Sourcebook shows and cites; `source_lines[i]` is the line of the source
    file that line i+1 of `text` came from (None when they coincide, as for Markdown).
    """

    text: str
    title: str
    headings: list[Heading] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    source_lines: list[int] | None = None
    pages: list[int] | None = None  # per line of `text`, for PDFs
    body_start: int = 0  # offset after front matter; nothing before it is chunked


@dataclass
class ChunkDraft:
    """A chunk before it is stored: its place in the document and its text."""

    ordinal: int
    text: str
    heading_path: list[str]
    char_start: int
    char_end: int
    line_start: int
    line_end: int


class DocumentInfo(BaseModel):
    id: int
    path: str
    title: str
    kind: str
    tags: list[str] = Field(default_factory=list)
    modified: datetime
    content_hash: str
    size: int
    chunks: int


class SearchHit(BaseModel):
    """One retrieved chunk with where it comes from and why it was ranked here."""

    chunk_id: int
    doc_id: int
    path: str
    title: str
    kind: str
    heading_path: list[str]
    line_start: int
    line_end: int
    page_start: int | None = None
    page_end: int | None = None
    text: str
    score: float
    ranks: dict[str, int] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line_start}-{self.line_end}"


class Citation(BaseModel):
    """A numbered source of an answer; `n` is the number shown as [n].

    `quotes` are the sentences the answer took from this source and `quote_lines` the
    1-based line range of each in the source file.
    """

    n: int
    hit: SearchHit
    quotes: list[str] = Field(default_factory=list)
    quote_lines: list[tuple[int, int]] = Field(default_factory=list)


Language = Literal["zh", "en"]


class Answer(BaseModel):
    question: str
    text: str
    mode: Literal["extractive"] = "extractive"
    found: bool
    language: Language
    citations: list[Citation]
    confidence: float


class FileIssue(BaseModel):
    path: str
    reason: str


class SyncReport(BaseModel):
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[FileIssue] = Field(default_factory=list)
    skipped: list[FileIssue] = Field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0


class Status(BaseModel):
    path: str
    embedder: str
    documents: int
    chunks: int
    sources: list[str]
    store_bytes: int
    index_consistent: bool
