"""What every request passes before any route (the API, the web pages, /mcp): the Host
header, the origin of a state-changing request, the JSON body, and the deadline.

- **Host** (DNS rebinding): a server on a loopback address answers only requests whose
  Host is a loopback name (or the address it is bound to); a page on `evil.example` that
  makes its name resolve to 127.0.0.1 sends `Host: evil.example` and gets 421.
  A server on a public address needs an API key on every request instead.
- **Origin** (cross-site writes): a browser sends `Sec-Fetch-Site` and/or `Origin` with
  every POST, PUT, PATCH and DELETE; one from another origin (a `no-cors` form post from
  any web page) is refused with 403 before its body is read. Clients that are not
  browsers send neither and are not affected.
- **JSON**: a body over `max_json_mb` is refused (413); one holding a lone surrogate
  (`"\\ud800"`, which no database or response can encode) or a non-finite number (`1e400`,
  `NaN`) gets 422, instead of failing deep inside a route.
- **Deadline**: the search and answer stages check `deadline` between their steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sourcebook import deadline
from sourcebook.settings import MAX_QUESTION_CHARS, Settings

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# Routes whose body is one question (and filters): no valid body is larger than this, so
# a larger one is refused as too long a question (422) without being parsed: parsing
# 1 MB bodies on the event loop, 36 a second, slowed every search.
QUESTION_ROUTES = frozenset({"/api/ask", "/api/ask/stream"})
QUESTION_BODY_BYTES = MAX_QUESTION_CHARS * 6 + 16 * 1024  # every character \uXXXX-escaped
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values of a request the page itself made, or the user typed
SAME_ORIGIN = frozenset({"same-origin", "none"})


class _Refused(Exception):
    """`read_all`: the whole body was read (the connection can serve the next request)."""

    def __init__(self, status: int, message: str, read_all: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.read_all = read_all


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8321" -> "::1")."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """ASGI middleware; see the module docstring. `allowed_hosts` None: any Host (a
    server on a public address, where every request needs a key)."""

    def __init__(
        self, app: ASGIApp, settings: Settings, allowed_hosts: Collection[str] | None
    ) -> None:
        self.app = app
        self.settings = settings
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self._check_host(headers)
            if scope["method"] not in SAFE_METHODS:
                _check_origin(headers)
            if _is_json(headers) and scope["method"] not in SAFE_METHODS:
                receive = await self._checked_json(receive, headers, scope["path"])
        except _Refused as refusal:
            await _refuse(scope, receive, send, refusal)
            return
        with deadline.within(self.settings.request_timeout):
            await self.app(scope, receive, send)

    def _check_host(self, headers: Headers) -> None:
        if self.allowed_hosts is None:
            return
        name = host_name(headers.get("host", ""))
        if name not in self.allowed_hosts:
            raise _Refused(
                421,
                f"this server answers requests for {', '.join(sorted(self.allowed_hosts))} "
                f"only, not for the host {name!r}",
            )

    async def _checked_json(self, receive: Receive, headers: Headers, path: str) -> Receive:
        """Read the whole body (bounded), check it, and hand it on to the route."""
        most = int(self.settings.max_json_mb * 1024 * 1024)
        too_large = _Refused(
            413,
            f"the request body is larger than {self.settings.max_json_mb:g} MB "
            "(SOURCEBOOK_MAX_JSON_MB)",
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > most:
            raise too_large
        # a question route keeps only what a valid question can fill; the rest of a
        # larger body (up to `most`) is read and dropped unparsed, so that the client
        # gets its 422 on a connection that stays usable
        keep = QUESTION_BODY_BYTES if path in QUESTION_ROUTES else most
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message], receive)  # the client left; the route sees it
            body = message.get("body", b"")
            size += len(body)
            if size > most:
                raise too_large
            if size <= keep:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        if size > keep:
            raise _Refused(
                422,
                f"the question is too long: at most {MAX_QUESTION_CHARS:,} characters "
                "(SOURCEBOOK_MAX_QUESTION_CHARS); ask about one thing at a time",
                read_all=True,
            )
        body = b"".join(chunks)
        _check_json(body)
        return _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _check_origin(headers: Headers) -> None:
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    cross = site is not None and site not in SAME_ORIGIN
    if origin is not None and not cross:
        parts = urlsplit(origin)
        cross = origin == "null" or parts.netloc.lower() != headers.get("host", "").lower()
    if cross:
        raise _Refused(
            403,
            "a request that changes the knowledge base must come from this server's own "
            f"pages, not from {origin or site!r}",
        )


def _is_json(headers: Headers) -> bool:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _reject_constant(name: str) -> Any:
    raise _Refused(422, f"{name} is not a number JSON allows here: send a finite number", True)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(422, f"the number {text[:40]} is too large: send a finite number", True)
    return value


def _check_json(body: bytes) -> None:
    """422 for a lone surrogate or a non-finite number; other malformed JSON is left to
    the route (which reports it in its own format)."""
    try:
        parsed = json.loads(body, parse_float=_finite, parse_constant=_reject_constant)
    except ValueError:
        return  # not JSON (or not UTF-8): the route's own validation answers
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Refused(
            422, "the request holds text that is not valid Unicode (a lone surrogate)", True
        ) from exc


def _replay(messages: list[Message], then: Receive) -> Receive:
    """`messages` first, then the connection's own (a streamed response waits on it to
    learn that the client has gone)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: _Refused) -> None:
    if scope["path"].startswith("/v1"):  # OpenAI's error format, which its clients show
        kind = "invalid_request_error"
        body: dict[str, Any] = {"error": {"message": refusal.message, "type": kind}}
    else:
        body = {"detail": refusal.message}
    # refused before all of its body was read (421, 403, 413, a question too long): the
    # connection is closed after the answer rather than kept behind an unread body
    close = {} if refusal.read_all else {"Connection": "close"}
    response = JSONResponse(body, refusal.status, headers=close)
    await response(scope, receive, send)
