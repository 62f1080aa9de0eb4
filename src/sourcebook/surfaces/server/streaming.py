"""Server-sent events over an answer's events, computed under the read lock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sourcebook.answer.llm import LLMError
from sourcebook.models import (
    AnswerEvent,
)
from sourcebook.store.embedded import StoreError
from sourcebook.surfaces.server.errors import EVENT_STREAM, kb_errors
from sourcebook.surfaces.server.locking import ReadWriteLock


class EventStream(StreamingResponse):
    """Server-sent events computed under the read lock. `close` (release the lock, stop
    the answer) runs however the response ends: finished, client gone, or cancelled."""

    media_type = EVENT_STREAM

    def __init__(self, chunks: Iterator[str], close: Callable[[], None]) -> None:
        super().__init__(chunks, headers={"Cache-Control": "no-cache"})
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()


def sse(data: str, event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


def answer_stream(
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
        with kb_errors(openai):
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
