"""Typed records that flow between the pipeline stages and out of the facade.

Public results (hits, answers, reports) are pydantic models so every surface (CLI `--json`,
HTTP, MCP) serialises them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from sourcebook.literals import AnswerMode as AnswerMode
from sourcebook.literals import Language as Language


class InvalidInput(ValueError):
    """Input that is well formed but not acceptable (too long, not valid Unicode): every
    surface refuses it with this message (HTTP: 422)."""


# A region of a page: (left, top, right, bottom) as fractions of the page's width and height,
# so that it applies to the page drawn at any size.
Box = tuple[float, float, float, float]


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
    boxes: list[Box | None] | None = None  # per line: where on its page it was read
    body_start: int = 0  # offset after front matter; nothing before it is chunked
    images: list[str] = field(default_factory=list)  # images the document refers to
    # what was indexed only in part (pages without a text layer and no OCR installed, ...)
    warnings: list[str] = field(default_factory=list)


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
    """An indexed document. `path` is as the user added it (see `SearchHit`)."""

    id: int
    path: str
    absolute_path: str = ""
    title: str
    kind: str
    tags: list[str] = Field(default_factory=list)
    modified: datetime
    content_hash: str
    size: int
    chunks: int


class DocumentLink(BaseModel):
    """A wiki-link (`[[note]]`) in a note, and the document it names if one is indexed
    (and readable): `path` as added, `absolute_path`, `doc_id`; None when none is."""

    line: int
    target: str
    text: str  # what the link shows: its alias, else the target
    written: str  # the link as written in the note, "[[note|alias]]"
    doc_id: int | None = None
    path: str | None = None
    absolute_path: str | None = None


class SearchHit(BaseModel):
    """One retrieved chunk with where it comes from and why it was ranked here.

    `path` is the document's path as the user added it: the source as given to `add`
    (relative or absolute) joined with the file's place under it, the same from any
    folder; `absolute_path` is where the file is. `show` and `document_text` take either.
    """

    chunk_id: int
    doc_id: int
    path: str
    absolute_path: str = ""
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
    # the keyword tokens of the chunk as indexed (context line first, see
    # chunker.contextual_text); internal, so that the reranker need not re-analyse the text
    index_tokens: list[str] = Field(default_factory=list, exclude=True, repr=False)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line_start}-{self.line_end}"


class PageRegion(BaseModel):
    """Where a line of a document is on its page: (left, top, right, bottom) as fractions
    of the page, for drawing the cited region over the page image."""

    page: int
    box: tuple[float, float, float, float]


class Citation(BaseModel):
    """A numbered source of an answer; `n` is the number shown as [n].

    `quotes` are the sentences the answer took from this source and `quote_lines` the
    1-based line range of each in the source file.
    """

    n: int
    hit: SearchHit
    quotes: list[str] = Field(default_factory=list)
    quote_lines: list[tuple[int, int]] = Field(default_factory=list)


# (defined in literals.py, which the command line imports before anything heavy)


class SentenceSupport(BaseModel):
    """How one sentence of a generated answer was checked against the sources it cites.

    `citations` are the numbers as the model wrote them. `lexical` is the idf-weighted
    share of the sentence's terms found in the cited evidence, `embedding` the best cosine
    between the sentence and a cited chunk. `reason` says why an unsupported sentence
    was removed.
    """

    text: str
    citations: list[int] = Field(default_factory=list)
    lexical: float = 0.0
    embedding: float = 0.0
    supported: bool
    reason: str | None = None


class Verification(BaseModel):
    """What checking a generated answer found and did.

    `fell_back`: nothing the model wrote could be verified, so the answer's text is the
    extractive answer; `notice` explains this (or the removals) in the question's language.
    """

    model: str
    draft: str  # the model's reply before verification
    sentences: list[SentenceSupport] = Field(default_factory=list)
    invalid_citations: list[int] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    fell_back: bool = False
    notice: str | None = None


class Answer(BaseModel):
    """An answer with numbered sources; every [n] in `text` is one of `citations`.

    `mode` is the answer mode asked for. In "generate" mode `verification` records how the
    model's reply was checked; it is None when the model was not asked because retrieval
    found no sufficient evidence (the answer is then "not found"). `cached` is True when
    the answer came from the answer cache.
    """

    question: str
    text: str
    mode: AnswerMode = "extractive"
    found: bool
    language: Language
    citations: list[Citation]
    confidence: float
    verification: Verification | None = None
    cached: bool = False
    # the evidence measurements behind `confidence` (see calibration.SIGNALS)
    signals: dict[str, float] = Field(default_factory=dict)


class AnswerEvent(BaseModel):
    """One event of a streamed answer: a piece of the model's reply as it is produced
    ("token"), then exactly one final "answer" carrying the verified `Answer`."""

    type: Literal["token", "answer"]
    text: str = ""
    answer: Answer | None = None


class ChatTurn(BaseModel):
    """One exchange of a chat: the question as typed, the standalone question that was
    searched for (follow-ups are rewritten), and the answer."""

    question: str
    standalone: str
    answer: Answer


class FileIssue(BaseModel):
    path: str
    reason: str


class SyncReport(BaseModel):
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    renamed: int = 0  # moved or renamed with the same content: the document kept its id
    failed: list[FileIssue] = Field(default_factory=list)
    skipped: list[FileIssue] = Field(default_factory=list)
    # indexed, but not all of it (pages without a text layer and no OCR installed, ...)
    partial: list[FileIssue] = Field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_embedded: int = 0  # chunk texts embedded by this run (the rest: from the cache)
    chunks_waiting: int = 0  # chunks still without a vector at the end (keyword search only)
    cached_answers_purged: int = 0  # generated answers built from changed or removed files
    seconds: float = 0.0


class Status(BaseModel):
    path: str
    embedder: str
    documents: int
    chunks: int
    sources: list[str]
    store_bytes: int
    index_consistent: bool
    reembedding: str | None = Field(
        None, description="a re-embedding in progress (`sourcebook reindex`) and how far it is"
    )
    chunks_waiting: int = Field(
        0, description="chunks stored but not embedded yet (found by keyword search only)"
    )
    embedding: str | None = Field(
        None, description="embedding in progress: how many chunks have their vector"
    )
    indexed_in_part: list[str] = Field(
        default_factory=list,
        description="documents stored in parts whose last part is missing (the process "
        "was stopped while adding a large CSV): the next `sync` reads them again",
    )


# --- teams and the audit log -------------------------------------------------------------

Surface = Literal["cli", "http", "openai", "mcp"]


class User(BaseModel):
    """A user of a shared knowledge base. An admin reads every document and may change
    the knowledge base; other users read the documents of their groups and those with
    no groups."""

    name: str
    admin: bool
    groups: list[str] = Field(default_factory=list)
    created: datetime
    active_keys: int = 0


class ApiKeyInfo(BaseModel):
    """What is kept of an API key: never the key, only its first characters."""

    id: int
    user: str
    prefix: str = Field(description="the key's first characters, to recognise it")
    created: datetime
    revoked: datetime | None = None


class AuditEntry(BaseModel):
    """One call recorded in the audit log. `documents` are the paths of the documents
    returned, cited, read or changed (paths: a document removed and indexed again
    gets a new id)."""

    id: int
    at: datetime
    user: str
    surface: Surface
    action: str
    query: str | None = None
    documents: list[str] = Field(default_factory=list)
    detail: str | None = None
