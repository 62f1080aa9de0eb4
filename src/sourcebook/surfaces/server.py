"""`sourcebook serve`: the HTTP API (REST under /api) and an OpenAI-compatible endpoint
(/v1), both working only through `KnowledgeBase`.

Concurrency. FastAPI runs these (synchronous) routes on a thread pool, so one
`KnowledgeBase` is used from several threads. Reads share it: the store's SQLite
connection is opened with `check_same_thread=False` in serialised mode, and 180
concurrent search + ask calls from 2, 4 and 8 threads gave the same results as
sequential ones, without errors. Writes (upload, delete, re-sync) are exclusive, also
against reads: while a document is written, the shared connection is inside the
writer's transaction (a reader on it would see half a document) and the vector index
is swapped and modified in place. `ReadWriteLock` does both; a streamed answer holds
the read lock until its last event.

Every request has a `Caller` (`current_caller`). Without users it is the local user, who
may do everything, and the server only listens on a loopback address. Once a user exists
(`sourcebook user add`), every /api and /v1 request needs `Authorization: Bearer <key>`;
admins read everything and may write, other users read only the documents of their groups
and those without groups (`Filters.groups`, applied inside retrieval), and may not write.
Each search, answer, document read and change is recorded in the audit log.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import uvicorn
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sourcebook import __version__
from sourcebook.answer.chat import ChatSession
from sourcebook.answer.llm import LLMError
from sourcebook.ingest.converters import kind_of
from sourcebook.kb import KnowledgeBase, SyncState
from sourcebook.models import (
    Answer,
    AnswerEvent,
    AnswerMode,
    Citation,
    DocumentInfo,
    SearchHit,
    Status,
    Surface,
    SyncReport,
    User,
)
from sourcebook.settings import Settings
from sourcebook.store.access import AccessControl, AccessError, audited, check_name
from sourcebook.store.embedded import Filters, StoreError, restricted
from sourcebook.surfaces.mcp_server import mount_http
from sourcebook.surfaces.web import router as web_router

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
UPLOADS = "uploads"  # folder inside the knowledge base folder that receives uploads
MODEL = "sourcebook"  # the extractive answers
GENERATE_MODEL = "sourcebook-generate"  # generated, verified answers (when an LLM is set)
# earlier user turns of an OpenAI chat replayed to understand a follow-up; the condenser
# looks no further back than the last few turns anyway
HISTORY_TURNS = 3
# what an upload request may carry beyond SOURCEBOOK_MAX_FILE_MB: the multipart framing
# (boundaries, each part's headers) and the `groups` field
UPLOAD_OVERHEAD = 64 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, authenticated: bool = False) -> None:
    """Refuse an address other machines could reach unless requests are authenticated
    (`authenticated`: the knowledge base has users, so every request needs a key)."""
    if authenticated or is_loopback(host):
        return
    raise ValueError(
        f"refusing to listen on {host}: the knowledge base has no users, so the API has "
        "no authentication yet and only listens on a loopback address (127.0.0.1, ::1, "
        "localhost). To serve other machines, add an admin (`sourcebook user add NAME "
        "--admin`) and give each person a key (`sourcebook key create NAME`); or reach "
        "it through an SSH tunnel"
    )


# --- who is asking ---------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the local user when the knowledge base has no users, else
    the holder of the request's API key. `groups` None means every document may be read
    (the local user, an admin); otherwise only documents without groups or in one of
    these."""

    name: str
    can_write: bool
    groups: frozenset[str] | None = None

    def restrict(self, filters: Filters | None) -> Filters | None:
        """`filters` narrowed to what this caller may read."""
        return restricted(filters, self.groups)

    @classmethod
    def of(cls, user: User) -> Caller:
        """The holder of one of `user`'s API keys."""
        if user.admin:
            return cls(name=user.name, can_write=True)
        return cls(name=user.name, can_write=False, groups=frozenset(user.groups))


LOCAL_USER = Caller(name="local", can_write=True)


def current_caller(request: Request) -> Caller:
    """The caller of this request, resolved once per request. Without users, the local
    user (a server bound to a public address refuses everyone instead: it was started
    with users, and they have all been removed since). With users, the holder of the
    `Authorization: Bearer` key, or 401."""
    state = request.app.state
    access: AccessControl = state.access
    if not access.has_users():
        if state.require_auth:
            _unauthorized(request, "the knowledge base has no users any more; add one")
        return LOCAL_USER
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        _unauthorized(
            request,
            "this knowledge base has users: send an API key as `Authorization: Bearer "
            "<key>` (an admin creates one with `sourcebook key create NAME`)",
        )
    user = access.authenticate(key.strip())
    if user is None:
        _unauthorized(request, "the API key is not valid (unknown or revoked)")
    return Caller.of(user)


# a route parameter of this type receives the request's caller (resolved once per request,
# however many dependencies ask for it)
CallerDep = Annotated[Caller, Depends(current_caller)]


def _unauthorized(request: Request, message: str) -> NoReturn:
    """401, in OpenAI's error format under /v1 (its clients show that message)."""
    if request.url.path.startswith("/v1"):
        raise OpenAIError(401, message, "invalid_api_key")
    raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def writer(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.can_write:
        raise HTTPException(403, f"{caller.name} may not change the knowledge base")
    return caller


# --- concurrency -----------------------------------------------------------------------


class ReadWriteLock:
    """Many readers or one writer. A waiting writer holds back new readers, so a steady
    stream of searches cannot starve an upload. Not bound to a thread: a streamed answer
    takes the read lock in one worker thread and may release it in another."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._condition:
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._condition:
            self._readers -= 1
            if self._readers == 0:
                self._condition.notify_all()

    @contextmanager
    def reading(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


# --- request and response models -------------------------------------------------------


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

    path: str | None = Field(None, description="only documents whose path matches this glob")
    exclude: str | None = Field(None, description="leave out documents matching this glob")
    tags: list[str] = Field(default_factory=list, description="only documents with all tags")
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

    question: str = Field(min_length=1, description="a question, in Chinese or English")
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
    line_start: int
    line_end: int
    text: str


class Collection(BaseModel):
    path: str
    documents: int
    uploads: bool


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request; fields Sourcebook has no use for (temperature, …) are
    accepted and ignored. `filters` is an extension (the openai client's `extra_body`)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
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


class OpenAIError(Exception):
    """An error answered in OpenAI's format, which OpenAI clients show to their user."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


# --- errors ----------------------------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]
_BAD_INPUT: Responses = {
    400: {"model": ErrorResponse, "description": "bad input (an empty question, …)"}
}
_NO_MODEL: Responses = {
    503: {"model": ErrorResponse, "description": "the language model is unavailable"}
}
_NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "no document with this id"}}
_WRITE_ERRORS: Responses = {
    403: {"model": ErrorResponse, "description": "the caller may not change the knowledge base"},
    409: {"model": ErrorResponse, "description": "another process is writing"},
}
_OPENAI_ERRORS: Responses = {
    code: {"model": OpenAIErrorResponse, "description": description}
    for code, description in (
        (400, "bad input (no user message, an empty question)"),
        (404, "unknown model"),
        (503, "the language model is unavailable"),
    )
}
_EVENT_STREAM = "text/event-stream"


def _as_json(responses: Responses) -> Responses:
    """Error responses of an event-stream route: these are JSON (FastAPI would otherwise
    describe them with the route's media type; the models are registered by other routes)."""
    return {
        code: {
            "description": response["description"],
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{response['model'].__name__}"}
                }
            },
        }
        for code, response in responses.items()
    }


def _status_of(exc: Exception) -> int:
    if isinstance(exc, LLMError):
        return 503
    if isinstance(exc, StoreError):
        return 409
    return 400


@contextmanager
def _kb_errors(openai: bool = False) -> Iterator[None]:
    """The facade's errors as HTTP errors: their messages say what to do."""
    try:
        yield
    except (ValueError, StoreError, LLMError) as exc:
        if openai:
            raise OpenAIError(_status_of(exc), str(exc)) from exc
        raise HTTPException(_status_of(exc), str(exc)) from exc


# --- upload size ------------------------------------------------------------------------


class UploadLimit:
    """Refuses an upload (POST to `path`) larger than SOURCEBOOK_MAX_FILE_MB (plus
    `UPLOAD_OVERHEAD`) with 413 before its body is taken in: the route only sees the files
    after Starlette's multipart parser has spooled all of them to temporary files, so it
    cannot stop a huge upload itself.

    A declared Content-Length over the limit is refused without reading any of the body
    (and without `100 Continue`: a client that waits for it never sends the body). A body
    without a length (chunked) is read only until it passes the limit. The 413 closes the
    connection, so the rest of the body is not read either. The setting is read per
    request, so a changed `kb.settings.max_file_mb` applies at once."""

    def __init__(self, app: ASGIApp, path: str, settings: Settings) -> None:
        self.app = app
        self.path = path
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != scope.get("root_path", "") + self.path
        ):
            await self.app(scope, receive, send)
            return
        megabytes = self.settings.max_file_mb
        limit = int(megabytes * 1024 * 1024) + UPLOAD_OVERHEAD
        detail = (
            f"the upload is larger than the {megabytes:g} MB limit of one request "
            "(SOURCEBOOK_MAX_FILE_MB): upload large files one per request, or raise the limit"
        )
        close = {"Connection": "close"}
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            refusal = JSONResponse(ErrorResponse(detail=detail).model_dump(), 413, close)
            await refusal(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # raised inside the route's body parsing, which passes an HTTPException
                # on to the app's handlers (any other error would become a 400)
                raise HTTPException(413, detail, headers=close)
            return message

        await self.app(scope, counting_receive, send)


# --- streaming -------------------------------------------------------------------------


class EventStream(StreamingResponse):
    """Server-sent events computed under the read lock. `close` (release the lock, stop
    the answer) runs however the response ends: finished, client gone, or cancelled."""

    media_type = _EVENT_STREAM

    def __init__(self, chunks: Iterator[str], close: Callable[[], None]) -> None:
        super().__init__(chunks, headers={"Cache-Control": "no-cache"})
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()


def _sse(data: str, event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


def _stream(
    lock: ReadWriteLock,
    start: Callable[[], Iterator[AnswerEvent]],
    encode: Callable[[AnswerEvent], Iterator[str]],
    error: Callable[[Exception], str],
    openai: bool = False,
) -> EventStream:
    """An event stream over `start()`'s answer events. The first event is computed before
    the response begins, so bad input gets an error status rather than a broken stream;
    a later failure (the model endpoint going away) is sent as an `error` chunk."""
    lock.acquire_read()
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            lock.release_read()

    try:
        with _kb_errors(openai):
            events = _closable(start())
            first = next(events)
    except BaseException:
        release()
        raise

    def chunks() -> Iterator[str]:
        try:
            yield from encode(first)
            for event in events:
                yield from encode(event)
        except (ValueError, StoreError, LLMError) as exc:
            yield error(exc)
        release()  # the answer is complete; only sending the last chunks remains

    def close() -> None:
        events.close()
        release()

    return EventStream(chunks(), close)


def _closable(events: Iterator[AnswerEvent]) -> Generator[AnswerEvent, None, None]:
    """`events` as a generator, whose close() reaches them (`yield from` forwards it)."""
    yield from events


# --- the application -------------------------------------------------------------------


def create_app(kb: KnowledgeBase, require_auth: bool = False) -> FastAPI:
    """The API over one open knowledge base (which the caller closes after serving).

    `require_auth`: the server listens on a public address, so a request is refused
    when the knowledge base has no users (rather than served as the local user)."""
    lock = ReadWriteLock()
    uploads = (kb.path / UPLOADS).resolve()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # load the models now rather than in the first request (a first search would take
        # seconds, and two of them at once would load the models twice)
        await run_in_threadpool(kb.warm_up)
        async with mcp.session_manager.run():  # the MCP endpoint's sessions
            yield

    app = FastAPI(
        title="Sourcebook",
        version=__version__,
        description="Search your own notes and get answers that cite a source after every "
        "sentence (or say that the knowledge base has no answer). REST under /api, an "
        "OpenAI-compatible chat endpoint under /v1, MCP tools (streamable HTTP) at /mcp.",
        lifespan=lifespan,
    )
    # read by current_caller: users and keys are looked up per request, so users added
    # or keys revoked from the command line take effect without a restart
    app.state.access = kb.access
    app.state.require_auth = require_auth

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        body = OpenAIErrorResponse(
            error=OpenAIErrorBody(message=exc.message, type=kind, code=exc.code)
        )
        return JSONResponse(body.model_dump(), status_code=exc.status)

    app.include_router(_api_routes(kb, lock, uploads))
    app.add_middleware(UploadLimit, path="/api/documents", settings=kb.settings)
    app.include_router(_openai_routes(kb, lock))
    app.include_router(web_router)  # the web UI: pages that call the routes above
    # the MCP tools (streamable HTTP), for the caller `current_caller` names
    mcp = mount_http(app, kb, lock.reading, current_caller, public=require_auth)
    return app


def _api_routes(kb: KnowledgeBase, lock: ReadWriteLock, uploads: Path) -> APIRouter:
    api = APIRouter(prefix="/api", dependencies=[Depends(current_caller)])

    def find(doc_id: int, caller: Caller) -> DocumentInfo:
        # a document the caller may not read is as absent as one that does not exist
        document = kb.document_by_id(doc_id, caller.groups)
        if document is None:
            raise HTTPException(404, f"no document with id {doc_id}")
        return document

    @api.get("/health", response_model=Health, tags=["status"])
    def health() -> Health:
        """Whether the server is up; answers without waiting for a write to finish."""
        return Health(
            version=__version__,
            knowledge_base=str(kb.path.resolve()),
            embedder=kb.store.embedder_name,
            generate=kb.can_generate,
        )

    @api.get("/status", response_model=Status, tags=["status"])
    def status(caller: CallerDep) -> Status:
        """Documents, chunks, model, size and sources of the knowledge base. Only the
        documents the caller may read, and their chunks, are counted (the size is the
        whole knowledge base's)."""
        with lock.reading():
            return kb.status(caller.groups)

    @api.get("/documents", response_model=list[DocumentStatus], tags=["documents"])
    def documents(caller: CallerDep) -> list[DocumentStatus]:
        """Every indexed document the caller may read, whether its file still holds what
        was indexed, and the groups that may read it."""
        with lock.reading():
            groups = kb.document_groups()
            listed = [
                DocumentStatus(
                    **d.model_dump(),
                    state=kb.sync_state(d),
                    uploaded=Path(d.path).parent == uploads,
                    groups=groups.get(d.path, []),
                )
                for d in kb.documents(caller.groups)
            ]
        # the count, not every path: a listing must not make the audit write expensive
        _audit(kb, caller, "http", "documents", detail=f"{len(listed)} documents")
        return listed

    @api.post(
        "/documents",
        response_model=UploadReport,
        tags=["documents"],
        responses={
            400: {"model": ErrorResponse, "description": "a file name with a folder in it"},
            **_WRITE_ERRORS,
            413: {
                "model": ErrorResponse,
                "description": "a file, or the whole request, over the size limit "
                "(SOURCEBOOK_MAX_FILE_MB); a request over it is refused before its body "
                "is read, and the connection is closed",
            },
        },
    )
    def upload(
        files: Annotated[list[UploadFile], File(description="one or more files to index")],
        caller: Annotated[Caller, Depends(writer)],
        groups: Annotated[
            list[str] | None,
            Form(
                description="only members of these groups (and admins) may read the files "
                "(repeat the field, or separate names by commas); without it the access "
                "rules (`sourcebook access set`) decide, and with no matching rule "
                "everyone may read them"
            ),
        ] = None,
    ) -> UploadReport:
        """Save files into the knowledge base's uploads folder and index them. A file of
        an unsupported type, or one that cannot be parsed, is reported and not kept; the
        others are indexed. An upload replaces an earlier one of the same name (and its
        groups)."""
        try:
            readers = sorted(
                {check_name("group", g.strip()) for f in groups or [] for g in f.split(",")}
            )
        except AccessError as exc:
            raise HTTPException(400, str(exc)) from exc
        limit_mb = kb.settings.max_file_mb
        names = [_upload_name(f.filename) for f in files]
        if len(set(names)) < len(names):
            raise HTTPException(400, "the same file name appears twice in one upload")
        for name, file in zip(names, files, strict=True):
            if (file.size or 0) > limit_mb * 1024 * 1024:
                raise HTTPException(
                    413, f"{name} is larger than the {limit_mb:g} MB limit (SOURCEBOOK_MAX_FILE_MB)"
                )
        results = {
            name: UploadedFile(name=name, status="unsupported", reason="unsupported file type")
            for name in names
            if kind_of(Path(name)) is None
        }
        wanted = [(n, f) for n, f in zip(names, files, strict=True) if n not in results]
        if not wanted:
            return UploadReport(files=[results[name] for name in names])
        with lock.writing(), _kb_errors():
            before = {d.path: d.content_hash for d in kb.documents()}
            backups: dict[str, Path | None] = {}
            # set before indexing, so that each document is written with its groups
            earlier = {name: kb.store.document_grants(str(uploads / name)) for name, _ in wanted}
            try:
                for name, file in wanted:
                    kb.set_document_groups(uploads / name, readers)
                    backups[name] = _save(uploads, name, file)
                report = kb.add([uploads])
            except BaseException:
                for name, backup in backups.items():
                    _restore(uploads / name, backup)
                for name, grants in earlier.items():
                    kb.set_document_groups(uploads / name, grants)
                raise
            failed = {issue.path: issue.reason for issue in report.failed}
            indexed = {d.path: d for d in kb.documents()}
            for name, _file in wanted:
                path = str(uploads / name)
                backup = backups[name]
                if path in failed:
                    # keep the earlier upload of this name, which is still indexed
                    _restore(uploads / name, backup)
                    kb.set_document_groups(path, earlier[name])
                    results[name] = UploadedFile(name=name, status="failed", reason=failed[path])
                    continue
                if backup is not None:
                    backup.unlink()
                document = indexed[path]
                same = before.get(path) == document.content_hash
                results[name] = UploadedFile(
                    name=name, status="unchanged" if same else "indexed", document=document
                )
        stored = [r.document.path for r in results.values() if r.document is not None]
        _audit(kb, caller, "http", "upload", documents=stored, detail=_groups_detail(readers))
        return UploadReport(files=[results[name] for name in names], report=report)

    @api.delete(
        "/documents/{doc_id}",
        response_model=Removal,
        tags=["documents"],
        responses={**_NOT_FOUND, **_WRITE_ERRORS},
    )
    def delete(doc_id: int, caller: Annotated[Caller, Depends(writer)]) -> Removal:
        """Remove a document from every index (and, if it was uploaded, its file)."""
        with lock.writing(), _kb_errors():
            document = find(doc_id, caller)
            path = Path(document.path)
            uploaded = path.parent == uploads
            if uploaded:
                path.unlink(missing_ok=True)
            kb.remove([path])
        _audit(kb, caller, "http", "remove", documents=[document.path])
        return Removal(document=document, file_deleted=uploaded)

    @api.post(
        "/documents/{doc_id}/sync",
        response_model=Resync,
        tags=["documents"],
        responses={**_NOT_FOUND, **_WRITE_ERRORS},
    )
    def resync(doc_id: int, caller: Annotated[Caller, Depends(writer)]) -> Resync:
        """Re-read one document's file: re-indexed if it changed (it keeps its id),
        removed if it is gone."""
        with lock.writing(), _kb_errors():
            document = find(doc_id, caller)
            report = kb.resync(document.path)
            current = next((d for d in kb.documents() if d.path == document.path), None)
        _audit(kb, caller, "http", "sync", documents=[document.path])
        return Resync(report=report, document=current)

    @api.get(
        "/documents/{doc_id}/text",
        response_model=DocumentText,
        tags=["documents"],
        responses={**_NOT_FOUND, **_BAD_INPUT},
    )
    def document_text(
        doc_id: int,
        caller: CallerDep,
        start: Annotated[int | None, Query(ge=1, description="first line (1-based)")] = None,
        end: Annotated[int | None, Query(ge=1, description="last line (inclusive)")] = None,
    ) -> DocumentText:
        """The document's indexed text (what citations' line numbers refer to), or a
        line range of it."""
        if start is not None and end is not None and end < start:
            raise HTTPException(400, f"end ({end}) is before start ({start})")
        with lock.reading():
            document = find(doc_id, caller)
            text = kb.document_text(document.path, start, end, caller.groups)
        lines = f"lines {start or 1}-{end}" if start or end else None
        _audit(kb, caller, "http", "document", documents=[document.path], detail=lines)
        first = start or 1
        return DocumentText(
            id=doc_id,
            path=document.path,
            line_start=first,
            line_end=first + text.count("\n"),
            text=text,
        )

    @api.get("/search", response_model=list[SearchHit], tags=["answers"], responses=_BAD_INPUT)
    def search(
        caller: CallerDep,
        q: Annotated[str, Query(min_length=1, description="what to look for")],
        limit: Annotated[int, Query(ge=1, le=1000)] = 10,
        path: Annotated[str | None, Query(description="only paths matching this glob")] = None,
        tag: Annotated[list[str] | None, Query(description="only with this tag")] = None,
        after: Annotated[datetime | None, Query(description="modified on or after")] = None,
        before: Annotated[datetime | None, Query(description="modified on or before")] = None,
    ) -> list[SearchHit]:
        """Hybrid (BM25 + dense) search over the chunks, best first."""
        filters = FilterSpec(path=path, tags=tag or [], after=after, before=before)
        with lock.reading(), _kb_errors():
            hits = kb.search(q, limit, caller.restrict(filters.to_filters()))
        _audit(kb, caller, "http", "search", q, [h.path for h in hits])
        return hits

    @api.post(
        "/ask", response_model=Answer, tags=["answers"], responses={**_BAD_INPUT, **_NO_MODEL}
    )
    def ask(body: AskRequest, caller: CallerDep) -> Answer:
        """An answer citing a source after every sentence, or an explicit "not found"."""
        filters = caller.restrict(body.filters.to_filters() if body.filters else None)
        with lock.reading(), _kb_errors():
            answer = kb.ask(body.question, filters, body.mode)
        _audit(kb, caller, "http", "ask", body.question, _cited(answer), _answer_detail(answer))
        return answer

    @api.post(
        "/ask/stream",
        response_class=EventStream,
        status_code=200,
        tags=["answers"],
        responses={
            200: {
                "description": 'server-sent events: `token` events ({"text": …}) while a '
                "language model writes (generate mode only), then one `answer` event whose "
                'data is the Answer (see POST /api/ask); `error` ({"detail": …}) if '
                "answering fails midway",
                "content": {_EVENT_STREAM: {"schema": {"type": "string"}}},
            },
            **_as_json({**_BAD_INPUT, **_NO_MODEL}),
        },
    )
    def ask_stream(body: AskRequest, caller: CallerDep) -> EventStream:
        """The answer as server-sent events, for showing a generated answer as it is
        written. The final `answer` event carries the verified answer."""
        filters = caller.restrict(body.filters.to_filters() if body.filters else None)

        def record(answer: Answer) -> None:
            detail = _answer_detail(answer)
            _audit(kb, caller, "http", "ask", body.question, _cited(answer), detail)

        def encode(event: AnswerEvent) -> Iterator[str]:
            if event.answer is not None:
                yield _sse(event.answer.model_dump_json(), "answer")
            else:
                yield _sse(json.dumps({"text": event.text}, ensure_ascii=False), "token")

        return _stream(
            lock,
            lambda: audited(kb.ask_stream(body.question, filters, body.mode), record),
            encode,
            lambda exc: _sse(json.dumps({"detail": str(exc)}, ensure_ascii=False), "error"),
        )

    @api.get("/collections", response_model=list[Collection], tags=["documents"])
    def collections(caller: CallerDep) -> list[Collection]:
        """The knowledge base's sources (folders and files added, and the uploads), with
        the number of documents in each that the caller may read."""
        with lock.reading():
            sources = kb.status().sources
            paths = [d.path for d in kb.documents(caller.groups)]
        return [
            Collection(
                path=source,
                documents=sum(p == source or p.startswith(source.rstrip("/") + "/") for p in paths),
                uploads=Path(source) == uploads,
            )
            for source in sources
        ]

    return api


def _upload_name(raw: str | None) -> str:
    """The file name an upload is saved under; anything that could leave the uploads
    folder (a path, '..') or be skipped as hidden is refused, not cleaned up."""
    name = raw or ""
    if (
        not name.strip()
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or len(name.encode("utf-8")) > 255
    ):
        raise HTTPException(
            400,
            f"invalid file name {raw!r}: give a plain file name, without folders and "
            "not starting with '.'",
        )
    return name


def _save(folder: Path, name: str, upload: UploadFile) -> Path | None:
    """Write an upload to `folder/name` (the file appears whole or not at all). An
    earlier file of that name is moved aside and returned, to restore if the new one
    cannot be indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = folder / f".{name}.partial"  # hidden: never picked up as a document
    with partial.open("wb") as out:
        upload.file.seek(0)
        while block := upload.file.read(1 << 20):
            out.write(block)
    backup = None
    if target.exists():
        backup = folder / f".{name}.previous"
        os.replace(target, backup)
    os.replace(partial, target)
    return backup


def _restore(target: Path, backup: Path | None) -> None:
    if backup is None:
        target.unlink(missing_ok=True)
    else:
        os.replace(backup, target)


# --- OpenAI-compatible -----------------------------------------------------------------


def _openai_routes(kb: KnowledgeBase, lock: ReadWriteLock) -> APIRouter:
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(current_caller)], tags=["openai"])
    started = int(time.time())

    def models() -> list[str]:
        return [MODEL, GENERATE_MODEL] if kb.can_generate else [MODEL]

    @v1.get("/models", response_model=ModelList)
    def list_models() -> ModelList:
        """`sourcebook` answers extractively; `sourcebook-generate` (listed when a
        language model is configured) writes the answer and verifies every sentence."""
        return ModelList(data=[ModelCard(id=m, created=started) for m in models()])

    @v1.post(
        "/chat/completions",
        response_model=ChatCompletion,
        responses={
            200: {
                "description": "the completion, or with `stream` server-sent "
                "`chat.completion.chunk`s ending in `data: [DONE]`; the last chunk's delta "
                "carries `citations`",
                "content": {_EVENT_STREAM: {"schema": {"type": "string"}}},
            },
            **_OPENAI_ERRORS,
        },
    )
    def chat_completions(
        body: ChatCompletionRequest, caller: CallerDep
    ) -> ChatCompletion | EventStream:
        """The last user message is the question; earlier user messages let a follow-up
        ("那它的缺点呢？") be understood. System messages are ignored: answers come only
        from the knowledge base. The content is the answer with its [n] markers, and
        `citations` lists the sources. A streamed answer is sent once verified."""
        if body.model not in models():
            raise OpenAIError(
                404,
                f"the model {body.model!r} does not exist; use one of: {', '.join(models())}",
                "model_not_found",
            )
        mode: AnswerMode = "generate" if body.model == GENERATE_MODEL else "extractive"
        if body.messages[-1].role != "user":
            raise OpenAIError(400, "the last message must be the user's question")
        question = body.messages[-1].text()
        if not question.strip():
            raise OpenAIError(400, "the question is empty")
        earlier = [m.text() for m in body.messages[:-1] if m.role == "user" and m.text().strip()]
        filters = caller.restrict(body.filters.to_filters() if body.filters else None)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def record(answer: Answer) -> None:
            detail = _answer_detail(answer)
            _audit(kb, caller, "openai", "ask", question, _cited(answer), detail)

        def start() -> Iterator[AnswerEvent]:
            session = ChatSession(kb, mode, filters)
            for turn in earlier[-HISTORY_TURNS:]:
                session.ask(turn)
            # only the verified answer is sent: the draft a model streams may lose sentences
            answers = (e for e in session.ask_stream(question) if e.answer is not None)
            return audited(answers, record)

        if not body.stream:
            with lock.reading(), _kb_errors(openai=True):
                answer = next(start()).answer
            assert answer is not None  # start() yields only answer events
            message = AssistantMessage(
                content=answer.text, citations=answer.citations, found=answer.found
            )
            return ChatCompletion(
                id=completion_id,
                created=created,
                model=body.model,
                choices=[ChatChoice(message=message)],
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return _sse(json.dumps(data, ensure_ascii=False))

        def encode(event: AnswerEvent) -> Iterator[str]:
            answer = event.answer
            assert answer is not None
            yield chunk({"role": "assistant", "content": ""})
            yield chunk({"content": answer.text})
            citations = [c.model_dump(mode="json") for c in answer.citations]
            yield chunk({"citations": citations, "found": answer.found}, "stop")
            yield _sse("[DONE]")

        def error(exc: Exception) -> str:
            body = OpenAIErrorBody(message=str(exc), type="server_error")
            return _sse(json.dumps({"error": body.model_dump()}, ensure_ascii=False))

        return _stream(lock, start, encode, error, openai=True)

    return v1


def run_server(kb: KnowledgeBase, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve until interrupted (Ctrl-C)."""
    check_host(host, kb.access.has_users())
    app = create_app(kb, require_auth=not is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level="info")


def _audit(
    kb: KnowledgeBase,
    caller: Caller,
    surface: Surface,
    action: str,
    query: str | None = None,
    documents: Sequence[str] = (),
    detail: str | None = None,
) -> None:
    kb.access.record(caller.name, surface, action, query, documents, detail)


def _groups_detail(groups: Sequence[str]) -> str | None:
    return "groups: " + ", ".join(groups) if groups else None


def _cited(answer: Answer) -> list[str]:
    return [c.hit.path for c in answer.citations]


def _answer_detail(answer: Answer) -> str:
    return f"{answer.mode}, {'found' if answer.found else 'not found'}"
