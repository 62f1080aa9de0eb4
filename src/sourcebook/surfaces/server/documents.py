"""/api/documents and /api/collections: list, upload, remove, re-sync and read documents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Query,
    Response,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sourcebook.faults import crash_point
from sourcebook.ingest.converters import kind_of
from sourcebook.ingest.pages import PageError
from sourcebook.kb import KnowledgeBase
from sourcebook.models import DocumentInfo, DocumentLink, PageRegion, SyncReport
from sourcebook.settings import Settings
from sourcebook.store.access import AccessError, check_name
from sourcebook.surfaces.server.auth import (
    Caller,
    CallerDep,
    audit,
    current_caller,
    groups_detail,
    writer,
)
from sourcebook.surfaces.server.errors import BAD_INPUT, NOT_FOUND, WRITE_ERRORS, kb_errors
from sourcebook.surfaces.server.locking import ReadWriteLock
from sourcebook.surfaces.server.schemas import (
    Collection,
    DocumentStatus,
    DocumentText,
    ErrorResponse,
    Removal,
    Resync,
    UploadedFile,
    UploadReport,
)

# what an upload request may carry beyond SOURCEBOOK_MAX_FILE_MB: the multipart framing
# (boundaries, each part's headers) and the `groups` field
UPLOAD_OVERHEAD = 64 * 1024


def routes(kb: KnowledgeBase, lock: ReadWriteLock, uploads: Path) -> APIRouter:
    api = APIRouter(prefix="/api", dependencies=[Depends(current_caller)])

    def find(doc_id: int, caller: Caller) -> DocumentInfo:
        # a document the caller may not read is as absent as one that does not exist
        document = kb.document_by_id(doc_id, caller.groups)
        if document is None:
            raise HTTPException(404, f"no document with id {doc_id}")
        return document

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
                    uploaded=Path(d.absolute_path).parent == uploads,
                    groups=groups.get(d.absolute_path, []),
                )
                for d in kb.documents(caller.groups)
            ]
        # the count, not every path: a listing must not make the audit write expensive
        audit(kb, caller, "http", "documents", detail=f"{len(listed)} documents")
        return listed

    @api.post(
        "/documents",
        response_model=UploadReport,
        tags=["documents"],
        responses={
            400: {"model": ErrorResponse, "description": "a file name with a folder in it"},
            **WRITE_ERRORS,
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
        readers = _readers(groups)
        names = _checked_names(files, kb.settings.max_file_mb)
        results = {
            name: UploadedFile(name=name, status="unsupported", reason="unsupported file type")
            for name in names
            if kind_of(Path(name)) is None
        }
        wanted = [(n, f) for n, f in zip(names, files, strict=True) if n not in results]
        if not wanted:
            return UploadReport(files=[results[name] for name in names])
        with lock.writing(), kb_errors():
            report, indexed = _index_uploads(kb, uploads, wanted, readers)
        results.update(indexed)
        stored = [r.document.absolute_path for r in results.values() if r.document is not None]
        audit(kb, caller, "http", "upload", documents=stored, detail=groups_detail(readers))
        return UploadReport(files=[results[name] for name in names], report=report)

    @api.delete(
        "/documents/{doc_id}",
        response_model=Removal,
        tags=["documents"],
        responses={**NOT_FOUND, **WRITE_ERRORS},
    )
    def delete(doc_id: int, caller: Annotated[Caller, Depends(writer)]) -> Removal:
        """Remove a document from every index (and, if it was uploaded, its file)."""
        with lock.writing(), kb_errors():
            document = find(doc_id, caller)
            path = Path(document.absolute_path)
            uploaded = path.parent == uploads
            if uploaded:
                path.unlink(missing_ok=True)
            kb.remove([path])
        audit(kb, caller, "http", "remove", documents=[document.absolute_path])
        return Removal(document=document, file_deleted=uploaded)

    @api.post(
        "/documents/{doc_id}/sync",
        response_model=Resync,
        tags=["documents"],
        responses={**NOT_FOUND, **WRITE_ERRORS},
    )
    def resync(doc_id: int, caller: Annotated[Caller, Depends(writer)]) -> Resync:
        """Re-read one document's file: re-indexed if it changed (it keeps its id),
        removed if it is gone."""
        with lock.writing(), kb_errors():
            document = find(doc_id, caller)
            report = kb.resync(document.absolute_path)
            current = next((d for d in kb.documents() if d.id == document.id), None)
        audit(kb, caller, "http", "sync", documents=[document.absolute_path])
        return Resync(report=report, document=current)

    @api.get(
        "/documents/{doc_id}/text",
        response_model=DocumentText,
        tags=["documents"],
        responses={**NOT_FOUND, **BAD_INPUT},
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
            text, truncated = kb.document_lines(document.absolute_path, start, end, caller.groups)
        lines = f"lines {start or 1}-{end}" if start or end else None
        audit(kb, caller, "http", "document", documents=[document.absolute_path], detail=lines)
        first = start or 1
        return DocumentText(
            id=doc_id,
            path=document.path,
            absolute_path=document.absolute_path,
            line_start=first,
            line_end=first + text.count("\n"),
            text=text,
            truncated=truncated,
        )

    @api.get(
        "/documents/{doc_id}/links",
        response_model=list[DocumentLink],
        tags=["documents"],
        responses=NOT_FOUND,
    )
    def document_links(doc_id: int, caller: CallerDep) -> list[DocumentLink]:
        """The document's wiki-links (`[[note]]`), each with the id and path of the note it
        names when one is indexed and the caller may read it (else null)."""
        with lock.reading():
            document = find(doc_id, caller)
            return kb.links(document.absolute_path, caller.groups)

    @api.get(
        "/documents/{doc_id}/regions",
        response_model=list[PageRegion],
        tags=["documents"],
        responses={**NOT_FOUND, **BAD_INPUT},
    )
    def document_regions(
        doc_id: int,
        caller: CallerDep,
        start: Annotated[int, Query(ge=1, description="first line (1-based)")],
        end: Annotated[int, Query(ge=1, description="last line (inclusive)")],
    ) -> list[PageRegion]:
        """Where lines start..end of a PDF or an image are on their pages (page number
        and box as fractions of the page), for drawing a citation over the page image;
        empty for documents without pages."""
        if end < start:
            raise HTTPException(400, f"end ({end}) is before start ({start})")
        with lock.reading():
            document = find(doc_id, caller)
            return kb.page_regions(document.path, start, end, caller.groups)

    @api.get(
        "/documents/{doc_id}/pages/{page}",
        response_class=Response,
        tags=["documents"],
        responses={
            200: {
                "description": "the page as a PNG image",
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            },
            **NOT_FOUND,
            **BAD_INPUT,
        },
    )
    def document_page(
        doc_id: int,
        page: Annotated[int, PathParam(ge=1, le=100_000)],
        caller: CallerDep,
        width: Annotated[int, Query(ge=100, le=2000, description="pixels")] = 1000,
    ) -> Response:
        """Page `page` of a PDF (or an image document) drawn as a PNG."""
        with lock.reading():
            document = find(doc_id, caller)
            try:
                png = kb.page_image(document.path, page, width, caller.groups)
            except PageError as exc:
                raise HTTPException(404, str(exc)) from exc
        audit(kb, caller, "http", "document", documents=[document.path], detail=f"page {page}")
        cache = {"Cache-Control": "private, max-age=60"}
        return Response(png, media_type="image/png", headers=cache)

    @api.get("/collections", response_model=list[Collection], tags=["documents"])
    def collections(caller: CallerDep) -> list[Collection]:
        """The knowledge base's sources (folders and files added, and the uploads), with
        the number of documents in each that the caller may read."""
        with lock.reading():
            sources = kb.sources(caller.groups)
            paths = [d.absolute_path for d in kb.documents(caller.groups)]
        return [
            Collection(
                path=source,
                documents=sum(p == source or p.startswith(source.rstrip("/") + "/") for p in paths),
                uploads=Path(source) == uploads,
            )
            for source in sources
        ]

    return api


def _readers(groups: list[str] | None) -> list[str]:
    """The `groups` form field: repeated, or names separated by commas."""
    try:
        return sorted({check_name("group", g.strip()) for f in groups or [] for g in f.split(",")})
    except AccessError as exc:
        raise HTTPException(400, str(exc)) from exc


def _checked_names(files: list[UploadFile], limit_mb: float) -> list[str]:
    """The names the files are saved under; refused if one repeats or a file is too big."""
    names = [upload_name(f.filename) for f in files]
    if len(set(names)) < len(names):
        raise HTTPException(400, "the same file name appears twice in one upload")
    for name, file in zip(names, files, strict=True):
        if (file.size or 0) > limit_mb * 1024 * 1024:
            raise HTTPException(
                413, f"{name} is larger than the {limit_mb:g} MB limit (SOURCEBOOK_MAX_FILE_MB)"
            )
    return names


def _index_uploads(
    kb: KnowledgeBase, uploads: Path, wanted: list[tuple[str, UploadFile]], readers: list[str]
) -> tuple[SyncReport, dict[str, UploadedFile]]:
    """Save the files and index the uploads folder (under the write lock). A file that
    cannot be indexed is taken back, and an earlier upload of its name (and that one's
    groups) restored, so a failed replacement never loses what was indexed."""
    before = {d.absolute_path: d.content_hash for d in kb.documents()}
    backups: dict[str, Path | None] = {}
    # set before indexing, so that each document is written with its groups
    earlier = {name: kb.store.document_grants(str(uploads / name)) for name, _ in wanted}
    kb.register_source(uploads)
    try:
        for name, file in wanted:
            kb.set_document_groups(uploads / name, readers)
            backups[name] = save_upload(uploads, name, file)
        # a file that fails keeps its earlier upload indexed: it is put back below
        report = kb.add([uploads], keep_unreadable=True)
    except BaseException:
        for name, backup in backups.items():
            restore_upload(uploads / name, backup)
        for name, grants in earlier.items():
            kb.set_document_groups(uploads / name, grants)
        raise
    failed = {issue.path: issue.reason for issue in report.failed}
    documents = {d.absolute_path: d for d in kb.documents()}
    results: dict[str, UploadedFile] = {}
    for name, _file in wanted:
        path = str(uploads / name)
        backup = backups[name]
        if path in failed:
            # keep the earlier upload of this name, which is still indexed
            restore_upload(uploads / name, backup)
            kb.set_document_groups(path, earlier[name])
            results[name] = UploadedFile(name=name, status="failed", reason=failed[path])
            continue
        if backup is not None:
            backup.unlink()
        document = documents[path]
        same = before.get(path) == document.content_hash
        results[name] = UploadedFile(
            name=name, status="unchanged" if same else "indexed", document=document
        )
    return report, results


def upload_name(raw: str | None) -> str:
    """The file name an upload is saved under; anything that could leave the uploads
    folder (a path, '..') or be skipped as hidden is refused, not cleaned up."""
    name = raw or ""
    if (
        not name.strip()
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        # a newline or escape sequence could forge a line of a report; a lone
        # surrogate cannot be encoded as a file name at all
        or not name.isprintable()
        or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise HTTPException(
            400,
            f"invalid file name {raw!r}: give a plain file name, without folders or "
            "control characters and not starting with '.'",
        )
    return name


def save_upload(folder: Path, name: str, upload: UploadFile) -> Path | None:
    """Write an upload to `folder/name` (the file appears whole or not at all). An
    earlier file of that name is kept aside and returned, to restore if the new one
    cannot be indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = folder / f".{name}.partial"  # hidden: never picked up as a document
    with partial.open("wb") as out:
        upload.file.seek(0)
        while block := upload.file.read(1 << 20):
            out.write(block)
    crash_point("upload.saved")
    backup = None
    if target.exists():
        # a second name for the earlier file, then one atomic replace: at no moment is
        # there no file at `target` (a process killed in between would otherwise lose
        # the earlier upload at the next sync)
        backup = folder / f".{name}.previous"
        backup.unlink(missing_ok=True)
        os.link(target, backup)
        crash_point("upload.linked")
    os.replace(partial, target)
    return backup


def restore_upload(target: Path, backup: Path | None) -> None:
    if backup is None:
        target.unlink(missing_ok=True)
    else:
        os.replace(backup, target)


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
