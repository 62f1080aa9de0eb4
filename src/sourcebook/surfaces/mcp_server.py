"""The knowledge base as Model Context Protocol tools, for LLM clients (Claude Desktop,
IDE assistants, agents): `sourcebook mcp` over stdio, and /mcp on `sourcebook serve`
(streamable HTTP).

The tools only call `KnowledgeBase`, like every other surface. Each call reads as one
caller (a `Reader`): over stdio the local user or the holder of `--key`; over HTTP the
holder of the request's `Authorization: Bearer` key, resolved by the server's own
`current_caller` before the request reaches the MCP transport. The caller's groups narrow
retrieval itself (`Filters.groups`), so a document outside them never enters a ranking,
and every call is recorded in the audit log with surface "mcp".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import FastAPI, Request
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sourcebook import __version__
from sourcebook.answer.llm import LLMError
from sourcebook.deadline import DeadlineExceeded
from sourcebook.kb import KnowledgeBase
from sourcebook.models import Answer, DocumentLink, Language, SearchHit
from sourcebook.settings import MAX_FILTER_CHARS, MAX_QUESTION_CHARS
from sourcebook.store.embedded import Filters, StoreError, restricted

HTTP_PATH = "/mcp"
# where the HTTP endpoint leaves the resolved caller for the tools: the request's scope
# state, which the transport hands on with each message (`Context.request_context.request`)
_CALLER = "sourcebook_caller"

INSTRUCTIONS = (
    "Sourcebook is the user's own knowledge base of notes and documents, in Chinese and "
    "English. Use `search` to find passages, `ask` for an answer that cites its sources "
    "as [n] (or says the knowledge base has no answer: then do not invent one), "
    "`get_document` to read a cited line range in full, `get_links` to follow a note's "
    "[[wiki-links]], and `list_collections` to see what has been indexed. Quote paths and "
    "line numbers when you cite."
)


class Reader(Protocol):
    """Who a tool call reads as: `groups` None reads every document (the local user, an
    admin), otherwise only documents without groups or in one of these."""

    @property
    def name(self) -> str: ...

    @property
    def groups(self) -> frozenset[str] | None: ...


ReaderOf = Callable[[Context[Any, Any]], Reader]
Reading = Callable[[], AbstractContextManager[object]]


# --- what the tools return ---------------------------------------------------------------


class Passage(BaseModel):
    path: str = Field(description="the document's path as added (pass it to get_document)")
    absolute_path: str = Field("", description="where the file is")
    title: str
    heading_path: list[str] = Field(description="the headings above the passage")
    line_start: int = Field(description="first line of the passage in the document (1-based)")
    line_end: int = Field(description="last line (inclusive)")
    page_start: int | None = Field(None, description="first page, for PDF")
    page_end: int | None = None
    text: str
    score: float = Field(description="relevance; only comparable within one search")


class Passages(BaseModel):
    query: str
    results: list[Passage] = Field(description="best first; empty when nothing matched")


class Source(BaseModel):
    n: int = Field(description="the number shown as [n] in the answer")
    path: str
    absolute_path: str = ""
    title: str
    line_start: int = Field(description="first line of the cited passage (1-based)")
    line_end: int
    quotes: list[str] = Field(description="the sentences the answer took from this source")
    quote_lines: list[tuple[int, int]] = Field(description="the line range of each quote")


class CitedAnswer(BaseModel):
    question: str
    text: str = Field(description="the answer, each sentence followed by its [n] marker(s)")
    found: bool = Field(description="False: the knowledge base has no answer to this question")
    language: Language = Field(description="the answer's language: that of the question")
    confidence: float
    citations: list[Source]


class DocumentLines(BaseModel):
    path: str
    absolute_path: str = ""
    title: str
    line_start: int
    line_end: int
    text: str
    truncated: bool = Field(
        False,
        description="the text stops before the lines asked for do (at most 20,000 lines "
        "are sent at once): call again with start = line_end + 1",
    )


class Links(BaseModel):
    path: str
    links: list[DocumentLink] = Field(description="in the order of the note's lines")


class Collection(BaseModel):
    path: str = Field(description="a folder or file added to the knowledge base")
    documents: int = Field(description="how many of its documents the caller may read")


class Collections(BaseModel):
    documents: int = Field(description="documents the caller may read in all")
    collections: list[Collection]


# --- the tools ---------------------------------------------------------------------------

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def create_mcp_server(
    kb: KnowledgeBase, reader_of: ReaderOf, reading: Reading = nullcontext
) -> MCPServer:
    """The five tools over `kb`. `reader_of` names the caller of each call; `reading`
    guards each use of `kb` (the HTTP server's read lock: an upload may be writing)."""
    server: MCPServer = MCPServer(
        name="sourcebook", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    @contextmanager
    def facade_errors() -> Iterator[None]:
        # the facade's messages say what to do; the client's model should read them
        try:
            yield
        except (ValueError, StoreError, LLMError, DeadlineExceeded) as exc:
            raise ToolError(str(exc)) from exc

    @server.tool(annotations=_READ_ONLY)
    def search(
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUESTION_CHARS,
                description="what to look for, any language",
            ),
        ],
        ctx: Context[Any, Any],
        limit: Annotated[int, Field(ge=1, le=50, description="how many passages")] = 5,
        path: Annotated[
            str | None,
            Field(
                max_length=MAX_FILTER_CHARS,
                description="only documents whose path matches this glob",
            ),
        ] = None,
        tag: Annotated[
            str | None,
            Field(max_length=MAX_FILTER_CHARS, description="only documents with this tag"),
        ] = None,
    ) -> Passages:
        """Search the user's notes (Chinese and English; a query in one language also finds
        passages in the other). Returns the best-matching passages, best first, each with
        its document path, title, heading path, 1-based line range and text. Use it to
        explore; use `ask` for a direct, cited answer."""
        reader = reader_of(ctx)
        filters = Filters(path_glob=path, tags=(tag,) if tag else ())
        with reading(), facade_errors():
            hits = kb.search(query, limit, restricted(filters, reader.groups))
        kb.access.record(reader.name, "mcp", "search", query, [h.absolute_path for h in hits])
        return Passages(query=query, results=[_passage(h) for h in hits])

    @server.tool(annotations=_READ_ONLY)
    def ask(
        question: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUESTION_CHARS,
                description="a question, Chinese or English",
            ),
        ],
        ctx: Context[Any, Any],
    ) -> Annotated[CallToolResult, CitedAnswer]:
        """Answer a question from the user's notes only. The answer is in the question's
        language (Chinese or English); every sentence is followed by [n], the number of
        a source listed under it (path, line range, title and the quoted sentences are
        also given as structured citations). When the notes hold no answer, `found` is
        false and the text says so ("知识库中没有找到相关内容。" / "Not found in the knowledge
        base."): report that instead of answering from your own knowledge."""
        reader = reader_of(ctx)
        with reading(), facade_errors():
            answer = kb.ask(question, restricted(None, reader.groups))
        cited = [c.hit.absolute_path for c in answer.citations]
        detail = f"{answer.mode}, {'found' if answer.found else 'not found'}"
        kb.access.record(reader.name, "mcp", "ask", question, cited, detail)
        result = _cited_answer(answer)
        return CallToolResult(
            content=[TextContent(type="text", text=_answer_text(result))],
            structured_content=result.model_dump(mode="json"),
        )

    @server.tool(annotations=_READ_ONLY)
    def get_document(
        path: Annotated[str, Field(description="a document path from search, ask or a citation")],
        ctx: Context[Any, Any],
        start: Annotated[int | None, Field(ge=1, description="first line (1-based)")] = None,
        end: Annotated[int | None, Field(ge=1, description="last line (inclusive)")] = None,
    ) -> DocumentLines:
        """Read a document of the knowledge base as indexed (the text citations' line
        numbers refer to), whole or lines start..end, at most 20,000 lines a call
        (`truncated` then says more follow). Use it to read around a cited passage."""
        reader = reader_of(ctx)
        if start is not None and end is not None and end < start:
            raise ToolError(f"end ({end}) is before start ({start})")
        with reading(), facade_errors():
            try:
                text, truncated = kb.document_lines(path, start, end, reader.groups)
            except KeyError as exc:
                # the same message whether it does not exist or may not be read
                raise ToolError(f"{path} is not in the knowledge base") from exc
            key = kb.resolve_path(path)  # as the facade keys documents
            document = next(
                (d for d in kb.documents(reader.groups) if d.absolute_path == key), None
            )
        lines = f"lines {start or 1}-{end}" if start or end else None
        kb.access.record(reader.name, "mcp", "document", None, [key], lines)
        first = start or 1
        return DocumentLines(
            path=document.path if document is not None else path,
            absolute_path=key,
            # listed, as document_text found it (unless another process just removed it)
            title=document.title if document is not None else key,
            line_start=first,
            line_end=first + text.count("\n"),
            text=text,
            truncated=truncated,
        )

    @server.tool(annotations=_READ_ONLY)
    def get_links(
        path: Annotated[str, Field(description="a document path from search, ask or a citation")],
        ctx: Context[Any, Any],
    ) -> Links:
        """The wiki-links (`[[note]]`) of a note, each with the line it is on and the
        document it names (null when no note you may read has that name). Use it to follow
        a note to the notes it refers to, then read them with get_document."""
        reader = reader_of(ctx)
        with reading(), facade_errors():
            try:
                links = kb.links(path, reader.groups)
            except KeyError as exc:
                raise ToolError(f"{path} is not in the knowledge base") from exc
        key = kb.resolve_path(path)
        kb.access.record(reader.name, "mcp", "links", None, [key], f"{len(links)} links")
        return Links(path=path, links=links)

    @server.tool(annotations=_READ_ONLY)
    def list_collections(ctx: Context[Any, Any]) -> Collections:
        """What the knowledge base holds: each folder or file added (a collection) and how
        many of its documents you may read. Paths under a collection can be used as the
        `path` glob of `search` (e.g. "/notes/llm/*")."""
        reader = reader_of(ctx)
        with reading():
            sources = kb.sources(reader.groups)
            paths = [d.path for d in kb.documents(reader.groups)]
        kb.access.record(reader.name, "mcp", "collections", detail=f"{len(paths)} documents")
        return Collections(
            documents=len(paths),
            collections=[
                Collection(
                    path=source,
                    documents=sum(
                        p == source or p.startswith(source.rstrip("/") + "/") for p in paths
                    ),
                )
                for source in sources
            ],
        )

    return server


def _passage(hit: SearchHit) -> Passage:
    return Passage(
        path=hit.path,
        absolute_path=hit.absolute_path,
        title=hit.title,
        heading_path=hit.heading_path,
        line_start=hit.line_start,
        line_end=hit.line_end,
        page_start=hit.page_start,
        page_end=hit.page_end,
        text=hit.text,
        score=hit.score,
    )


def _cited_answer(answer: Answer) -> CitedAnswer:
    return CitedAnswer(
        question=answer.question,
        text=answer.text,
        found=answer.found,
        language=answer.language,
        confidence=answer.confidence,
        citations=[
            Source(
                n=c.n,
                path=c.hit.path,
                absolute_path=c.hit.absolute_path,
                title=c.hit.title,
                line_start=c.hit.line_start,
                line_end=c.hit.line_end,
                quotes=c.quotes,
                quote_lines=c.quote_lines,
            )
            for c in answer.citations
        ],
    )


def _answer_text(answer: CitedAnswer) -> str:
    """What a client's model reads: the answer, then its numbered sources."""
    heading = "来源" if answer.language == "zh" else "Sources"
    sources = [
        f"[{s.n}] {s.path}:{s.line_start}-{s.line_end} ({s.title})" for s in answer.citations
    ]
    return "\n".join([answer.text, "", f"{heading}:", *sources]) if sources else answer.text


# --- transports --------------------------------------------------------------------------


def run_stdio(kb: KnowledgeBase, reader: Reader) -> None:
    """Serve the tools on stdin/stdout until the client closes them."""
    create_mcp_server(kb, lambda _: reader).run("stdio")


def mount_http(
    app: FastAPI,
    kb: KnowledgeBase,
    reading: Reading,
    resolve: Callable[[Request], Reader],
    public: bool,
) -> MCPServer:
    """Serve the tools at /mcp of `app` (streamable HTTP). `resolve` names the caller of
    a request or raises the HTTP error (401) that refuses it. The returned server's
    `session_manager.run()` must be running while `app` serves (its lifespan).

    `public`: the server listens on a public address, where the Host header is the
    server's own name; requests there need a key, so the SDK's DNS-rebinding check (which
    only admits loopback host names) is left off."""
    server = create_mcp_server(kb, _http_reader, reading)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False) if public else None
    transport = server.streamable_http_app(
        streamable_http_path=HTTP_PATH, transport_security=security
    )
    # a route (not a mount), so that /mcp itself is the endpoint, without a redirect
    app.router.routes.append(
        Route(HTTP_PATH, endpoint=_Authenticated(transport, resolve), include_in_schema=False)
    )
    return server


class _Authenticated:
    """ASGI: resolve the caller of each HTTP request to /mcp (refusing it as the rest of
    the API would) and leave it in the request's state for the tools."""

    def __init__(self, app: ASGIApp, resolve: Callable[[Request], Reader]) -> None:
        self._app = app
        self._resolve = resolve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # scope["app"] is still the FastAPI app here, whose state `resolve` reads;
            # the key lookup touches SQLite, so it runs off the event loop
            caller = await anyio.to_thread.run_sync(self._resolve, Request(scope, receive))
            scope.setdefault("state", {})[_CALLER] = caller
        await self._app(scope, receive, send)


def _http_reader(ctx: Context[Any, Any]) -> Reader:
    request = ctx.request_context.request
    caller: Reader | None = request.scope.get("state", {}).get(_CALLER) if request else None
    if caller is None:  # every request passes _Authenticated first
        raise ToolError("this request was not authenticated")
    return caller
