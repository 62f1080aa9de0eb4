"""The OpenAI-compatible endpoint under /v1: models and chat completions with citations."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import (
    APIRouter,
    Depends,
)

from sourcebook.answer.chat import ChatSession
from sourcebook.kb import KnowledgeBase
from sourcebook.models import (
    Answer,
    AnswerEvent,
    AnswerMode,
)
from sourcebook.store.access import audited
from sourcebook.surfaces.server.auth import CallerDep, answer_detail, audit, cited, current_caller
from sourcebook.surfaces.server.errors import EVENT_STREAM, OPENAI_ERRORS, OpenAIError, kb_errors
from sourcebook.surfaces.server.locking import ReadWriteLock
from sourcebook.surfaces.server.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    OpenAIErrorBody,
)
from sourcebook.surfaces.server.streaming import EventStream, answer_stream, sse

DEFAULT_PORT = 8321
UPLOADS = "uploads"  # folder inside the knowledge base folder that receives uploads
MODEL = "sourcebook"  # the extractive answers
GENERATE_MODEL = "sourcebook-generate"  # generated, verified answers (when an LLM is set)
# earlier user turns of an OpenAI chat replayed to understand a follow-up; the condenser
# earlier user turns of an OpenAI chat replayed to understand a follow-up; the condenser
# looks no further back than the last few turns anyway
HISTORY_TURNS = 3


def routes(kb: KnowledgeBase, lock: ReadWriteLock) -> APIRouter:
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
                "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
            },
            **OPENAI_ERRORS,
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
            detail = answer_detail(answer)
            audit(kb, caller, "openai", "ask", question, cited(answer), detail)

        def start() -> Iterator[AnswerEvent]:
            session = ChatSession(kb, mode, filters)
            for turn in earlier[-HISTORY_TURNS:]:
                session.ask(turn)
            # only the verified answer is sent: the draft a model streams may lose sentences
            answers = (e for e in session.ask_stream(question) if e.answer is not None)
            return audited(answers, record)

        if not body.stream:
            with lock.reading(), kb_errors(openai=True):
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
            return sse(json.dumps(data, ensure_ascii=False))

        def encode(event: AnswerEvent) -> Iterator[str]:
            answer = event.answer
            assert answer is not None
            yield chunk({"role": "assistant", "content": ""})
            yield chunk({"content": answer.text})
            citations = [c.model_dump(mode="json") for c in answer.citations]
            yield chunk({"citations": citations, "found": answer.found}, "stop")
            yield sse("[DONE]")

        def error(exc: Exception) -> str:
            body = OpenAIErrorBody(message=str(exc), type="server_error")
            return sse(json.dumps({"error": body.model_dump()}, ensure_ascii=False))

        return answer_stream(lock, start, encode, error, openai=True)

    return v1
