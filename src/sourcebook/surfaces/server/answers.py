"""/api/search, /api/ask and /api/ask/stream, and the status routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    Query,
)

from sourcebook import __version__
from sourcebook.kb import KnowledgeBase
from sourcebook.models import (
    Answer,
    AnswerEvent,
    SearchHit,
    Status,
)
from sourcebook.settings import MAX_FILTER_CHARS, MAX_FILTER_TAGS, MAX_QUESTION_CHARS
from sourcebook.store.access import audited
from sourcebook.store.embedded import Filters
from sourcebook.surfaces.server.auth import CallerDep, answer_detail, audit, cited, current_caller
from sourcebook.surfaces.server.errors import BAD_INPUT, EVENT_STREAM, NO_MODEL, as_json, kb_errors
from sourcebook.surfaces.server.locking import ReadWriteLock
from sourcebook.surfaces.server.schemas import AskRequest, Health
from sourcebook.surfaces.server.streaming import EventStream, answer_stream, sse


def routes(kb: KnowledgeBase, lock: ReadWriteLock) -> APIRouter:
    api = APIRouter(prefix="/api", dependencies=[Depends(current_caller)])

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

    @api.get("/search", response_model=list[SearchHit], tags=["answers"], responses=BAD_INPUT)
    def search(
        caller: CallerDep,
        q: Annotated[
            str, Query(min_length=1, max_length=MAX_QUESTION_CHARS, description="what to look for")
        ],
        limit: Annotated[int, Query(ge=1, le=1000)] = 10,
        path: Annotated[
            str | None,
            Query(max_length=MAX_FILTER_CHARS, description="only paths matching this glob"),
        ] = None,
        tag: Annotated[
            list[str] | None,
            Query(max_length=MAX_FILTER_TAGS, description="only with this tag (repeatable)"),
        ] = None,
        after: Annotated[datetime | None, Query(description="modified on or after")] = None,
        before: Annotated[datetime | None, Query(description="modified on or before")] = None,
    ) -> list[SearchHit]:
        """Hybrid (BM25 + dense) search over the chunks, best first."""
        # the facade checks each glob's and tag's length (422)
        filters = Filters(
            path_glob=path, tags=tuple(tag or ()), modified_after=after, modified_before=before
        )
        with lock.reading(), kb_errors():
            hits = kb.search(q, limit, caller.restrict(filters))
        audit(kb, caller, "http", "search", q, [h.absolute_path for h in hits])
        return hits

    @api.post("/ask", response_model=Answer, tags=["answers"], responses={**BAD_INPUT, **NO_MODEL})
    def ask(body: AskRequest, caller: CallerDep) -> Answer:
        """An answer citing a source after every sentence, or an explicit "not found"."""
        filters = caller.restrict(body.filters.to_filters() if body.filters else None)
        with lock.reading(), kb_errors():
            answer = kb.ask(body.question, filters, body.mode)
        audit(kb, caller, "http", "ask", body.question, cited(answer), answer_detail(answer))
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
                "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
            },
            **as_json({**BAD_INPUT, **NO_MODEL}),
        },
    )
    def ask_stream(body: AskRequest, caller: CallerDep) -> EventStream:
        """The answer as server-sent events, for showing a generated answer as it is
        written. The final `answer` event carries the verified answer."""
        filters = caller.restrict(body.filters.to_filters() if body.filters else None)

        def record(answer: Answer) -> None:
            detail = answer_detail(answer)
            audit(kb, caller, "http", "ask", body.question, cited(answer), detail)

        def encode(event: AnswerEvent) -> Iterator[str]:
            if event.answer is not None:
                yield sse(event.answer.model_dump_json(), "answer")
            else:
                yield sse(json.dumps({"text": event.text}, ensure_ascii=False), "token")

        return answer_stream(
            lock,
            lambda: audited(kb.ask_stream(body.question, filters, body.mode), record),
            encode,
            lambda exc: sse(json.dumps({"detail": str(exc)}, ensure_ascii=False), "error"),
        )

    return api
