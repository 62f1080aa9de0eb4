"""The web UI of `sourcebook serve`: chat with citations, documents and uploads, search,
and a document view with the cited lines highlighted.

The pages are server-rendered shells (Jinja2) and their one script fetches everything
from the JSON API under /api, exactly as any other client does. So the browser goes
through the same routes, locks and (once they exist) credentials: a page never reads the
knowledge base itself. Nothing is built or fetched from the network: the templates, the
script and the style sheet ship inside the package.

Document text only ever reaches the page through `textContent` (never as HTML), and the
pages are served with a Content-Security-Policy that allows only this server's own
script, so a note containing `<script>` is shown, not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from sourcebook import __version__

HERE = Path(__file__).parent
# the only files served from /static, with their types: a fixed list rather than a
# folder lookup, so no request path can reach another file
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html
router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, page: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"page": page, "version": __version__, **context},
        headers=SECURITY_HEADERS,
    )


@router.get("/", response_class=HTMLResponse)
def chat_page(request: Request) -> HTMLResponse:
    """Ask questions; answers stream in, citations open the cited lines."""
    return _page(request, "chat.html", "chat")


@router.get("/documents", response_class=HTMLResponse)
def documents_page(request: Request) -> HTMLResponse:
    """Every document with its sync state, and an upload form."""
    return _page(request, "documents.html", "documents")


@router.get("/documents/{doc_id}", response_class=HTMLResponse)
def document_page(request: Request, doc_id: int) -> HTMLResponse:
    """One document's text with line numbers. `?start=&end=` lines are highlighted, or
    only those listed in `&lines=11,17-18` (a citation's quoted sentences)."""
    return _page(request, "document.html", "document", doc_id=doc_id)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request) -> HTMLResponse:
    """Hybrid search with each retriever's rank; `?q=` runs a search on load."""
    return _page(request, "search.html", "search")


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    # revalidate on every load (a 304 when unchanged): an upgraded package's script is
    # picked up at once instead of mixing with a cached older one
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
