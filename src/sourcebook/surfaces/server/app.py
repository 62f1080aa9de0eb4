"""The application: every router, the middleware and the lifespan over one knowledge base."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import uvicorn
from fastapi import (
    FastAPI,
    Request,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from sourcebook import __version__
from sourcebook.kb import KnowledgeBase
from sourcebook.paths import absolute_path
from sourcebook.surfaces.mcp_server import mount_http
from sourcebook.surfaces.server import answers, documents, openai
from sourcebook.surfaces.server.auth import check_host, current_caller, is_loopback
from sourcebook.surfaces.server.background import BackgroundWork
from sourcebook.surfaces.server.errors import OpenAIError
from sourcebook.surfaces.server.guard import LOOPBACK_NAMES, RequestGuard, host_name
from sourcebook.surfaces.server.locking import ReadWriteLock
from sourcebook.surfaces.server.schemas import OpenAIErrorBody, OpenAIErrorResponse
from sourcebook.surfaces.web import router as web_router

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
UPLOADS = "uploads"  # folder inside the knowledge base folder that receives uploads
SHUTDOWN_SECONDS = 5


def create_app(
    kb: KnowledgeBase,
    require_auth: bool = False,
    hosts: Collection[str] = (),
    watch: bool = False,
) -> FastAPI:
    """The API over one open knowledge base (which the caller closes after serving).

    `require_auth`: the server listens on a public address, so a request is refused
    when the knowledge base has no users (rather than served as the local user), and any
    Host header is accepted (every request needs a key). Otherwise only requests for a
    loopback name or one of `hosts` (the address it is bound to) are answered.

    In the background, chunks stored without a vector (by `add --no-wait`, a watcher, a
    killed run) are embedded; with `watch`, every source is watched for changes."""
    lock = ReadWriteLock()
    background = BackgroundWork(kb, lock, watch)
    uploads = absolute_path(kb.path / UPLOADS)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # load the models now rather than in the first request (a first search would take
        # seconds, and two of them at once would load the models twice)
        await run_in_threadpool(kb.warm_up)
        background.start()
        try:
            async with mcp.session_manager.run():  # the MCP endpoint's sessions
                yield
        finally:
            await run_in_threadpool(background.stop)

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

    app.include_router(answers.routes(kb, lock))
    app.include_router(documents.routes(kb, lock, uploads))
    app.add_middleware(documents.UploadLimit, path="/api/documents", settings=kb.settings)
    app.include_router(openai.routes(kb, lock))
    app.include_router(web_router)  # the web UI: pages that call the routes above
    # the MCP tools (streamable HTTP), for the caller `current_caller` names
    mcp = mount_http(app, kb, lock.reading, current_caller, public=require_auth)
    # outermost: before any route, the upload limit and the MCP transport
    allowed = None if require_auth else LOOPBACK_NAMES | {host_name(h) for h in hosts}
    app.add_middleware(RequestGuard, settings=kb.settings, allowed_hosts=allowed)
    return app


def run_server(
    kb: KnowledgeBase, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, watch: bool = False
) -> None:
    """Serve until interrupted (Ctrl-C); with `watch`, keep every source in sync."""
    check_host(host, kb.access.has_users())
    app = create_app(kb, require_auth=not is_loopback(host), hosts=[host], watch=watch)
    # on SIGTERM or Ctrl-C: stop accepting, let requests in flight finish (each is
    # bounded), then close what is still open after this many seconds
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )
