"""A deadline on the work of one request, without passing it through every call.

The server sets it per request (`within`); it is a context variable, so it follows the
request into the worker thread its route runs in. The stages of a search or an answer
`check` it between their steps: work already started cannot be interrupted, but every
step is bounded (questions are bounded in length, embedded text is truncated), so a
request past its deadline ends within one step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("sourcebook_deadline", default=None)


class DeadlineExceeded(Exception):
    """The request's deadline passed; the message says how long it was allowed."""


@contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Run the body (and what it starts in worker threads) with a deadline."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left (None: no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def check(stage: str) -> None:
    """Raise `DeadlineExceeded` if the deadline has passed (before `stage` starts)."""
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded(
            f"the request took too long and was stopped before {stage} "
            "(SOURCEBOOK_REQUEST_TIMEOUT); try a shorter question or a narrower filter"
        )
