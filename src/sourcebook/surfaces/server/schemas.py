"""Request and response bodies of the HTTP API (and their OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sourcebook.kb import SyncState
from sourcebook.models import (
    AnswerMode,
    Citation,
    DocumentInfo,
    SyncReport,
)
from sourcebook.settings import MAX_FILTER_CHARS, MAX_FILTER_TAGS, MAX_QUESTION_CHARS
from sourcebook.store.embedded import Filters


class ErrorResponse(BaseModel):
    detail: str


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    knowledge_base: str
    embedder: str
    generate: bool = Field(description="whether a language model is configured")


class FilterSpec(BaseModel):
    """Metadata filters, applied before ranking is cut off."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, max_length=MAX_FILTER_CHARS, description="only documents whose path matches this glob"
    )
    exclude: str | None = Field(
        None, max_length=MAX_FILTER_CHARS, description="leave out documents matching this glob"
    )
    tags: list[Annotated[str, Field(max_length=MAX_FILTER_CHARS)]] = Field(
        default_factory=list, max_length=MAX_FILTER_TAGS, description="only documents with all tags"
    )
    after: datetime | None = Field(None, description="modified on or after")
    before: datetime | None = Field(None, description="modified on or before")

    def to_filters(self) -> Filters:
        return Filters(
            path_glob=self.path,
            exclude_glob=self.exclude,
            tags=tuple(self.tags),
            modified_after=self.after,
            modified_before=self.before,
        )


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, description="a question, in Chinese or English"
    )
    mode: AnswerMode | None = Field(None, description="default: the server's answer mode")
    filters: FilterSpec | None = None


class DocumentStatus(DocumentInfo):
    state: SyncState = Field(
        description="indexed: the file holds what was indexed; changed: a sync would "
        "re-index it; missing: the file is gone"
    )
    uploaded: bool = Field(description="whether it came in through POST /api/documents")
    groups: list[str] = Field(
        default_factory=list,
        description="the groups that may read it (and admins); empty: everyone",
    )


class UploadedFile(BaseModel):
    name: str
    status: Literal["indexed", "unchanged", "failed", "unsupported"]
    reason: str | None = None
    document: DocumentInfo | None = None


class UploadReport(BaseModel):
    files: list[UploadedFile]
    report: SyncReport | None = Field(None, description="None when no file could be indexed")


class Removal(BaseModel):
    document: DocumentInfo
    file_deleted: bool = Field(
        description="an uploaded document's file is deleted; a file from an added folder is "
        "kept, and the next sync of that folder indexes it again"
    )


class Resync(BaseModel):
    report: SyncReport
    document: DocumentInfo | None = Field(description="None when the file was gone")


class DocumentText(BaseModel):
    id: int
    path: str
    absolute_path: str = ""
    line_start: int
    line_end: int
    text: str
    truncated: bool = Field(
        False,
        description="the text stops before the lines asked for do (at most 20,000 lines "
        "are sent at once): ask again from line_end + 1",
    )


class Collection(BaseModel):
    path: str
    documents: int
    uploads: bool


# a conversation replayed to the server: its last turns are read, so more is only cost
MAX_MESSAGES = 100
# a message's content as parts (text, images): a handful in practice; 100,000 one-letter
# parts in a 4 MB body took seconds to validate
MAX_CONTENT_PARTS = 16
Question = Annotated[str, Field(max_length=MAX_QUESTION_CHARS)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: Question | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: Question | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = (
        None
    )

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request; fields Sourcebook has no use for (temperature, …) are
    accepted and ignored. `filters` is an extension (the openai client's `extra_body`)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    filters: FilterSpec | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    citations: list[Citation] = Field(description="the sources behind the [n] markers")
    found: bool = Field(description="False when the knowledge base has no answer")


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sourcebook"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
