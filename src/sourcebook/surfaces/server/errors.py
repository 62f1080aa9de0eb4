"""Errors as HTTP responses: the facade's errors mapped to status codes, OpenAI's error
format under /v1, and the error responses each route declares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import (
    HTTPException,
)

from sourcebook.answer.llm import LLMError
from sourcebook.store.embedded import StoreError
from sourcebook.surfaces.server.schemas import ErrorResponse, OpenAIErrorResponse


class OpenAIError(Exception):
    """An error answered in OpenAI's format, which OpenAI clients show to their user."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


Responses = dict[int | str, dict[str, Any]]
BAD_INPUT: Responses = {
    400: {"model": ErrorResponse, "description": "bad input (an empty question, …)"}
}
NO_MODEL: Responses = {
    503: {"model": ErrorResponse, "description": "the language model is unavailable"}
}
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "no document with this id"}}
WRITE_ERRORS: Responses = {
    403: {"model": ErrorResponse, "description": "the caller may not change the knowledge base"},
    409: {"model": ErrorResponse, "description": "another process is writing"},
}
OPENAI_ERRORS: Responses = {
    code: {"model": OpenAIErrorResponse, "description": description}
    for code, description in (
        (400, "bad input (no user message, an empty question)"),
        (404, "unknown model"),
        (503, "the language model is unavailable"),
    )
}
EVENT_STREAM = "text/event-stream"


def as_json(responses: Responses) -> Responses:
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


def status_of(exc: Exception) -> int:
    if isinstance(exc, LLMError):
        return 503
    if isinstance(exc, StoreError):
        return 409
    return 400


@contextmanager
def kb_errors(openai: bool = False) -> Iterator[None]:
    """The facade's errors as HTTP errors: their messages say what to do."""
    try:
        yield
    except (ValueError, StoreError, LLMError) as exc:
        if openai:
            raise OpenAIError(status_of(exc), str(exc)) from exc
        raise HTTPException(status_of(exc), str(exc)) from exc
