"""Ingestion: find files, convert, chunk, and store one document at a time.

Each document is committed on its own, so an interrupted run keeps everything done so far
and the next `sync` picks up the rest. A file that cannot be read is reported with its
reason and the batch goes on. Stored chunks are keyword-searchable at once; their vectors
come from the embedding cache or are computed afterwards (`KnowledgeBase.embed_pending`).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sourcebook.ingest.chunker import ChunkingOptions, chunk_document, contextual_text
from sourcebook.ingest.converters import ConversionError, kind_of, use_engine
from sourcebook.ingest.isolation import convert_within
from sourcebook.ingest.streamed import (
    content_digest,
    file_digest,
    is_streamed,
    store_in_parts,
)
from sourcebook.models import DocumentInfo, FileIssue, ParsedDocument, SyncReport
from sourcebook.paths import absolute_path as absolute_path  # its former home: still importable
from sourcebook.settings import Settings
from sourcebook.store.base import PARTIAL_HASH
from sourcebook.store.composed import KnowledgeStore
from sourcebook.store.embedded import DocumentRecord

ProgressCallback = Callable[[int, int, str], None]  # (done, total, current path)

# What converters and the analyzer store: "2" = the file's own characters (NFKC only for
# matching); "3" = keyword tokens with plural acronyms as the acronym ("GPUs" → gpu); "4" =
# long tables written in blocks under copies of their header (`markdown_table`). A
# store written before is converted and tokenised again by the next `sync` even where the
# file did not change (vectors come from the embedding cache).
TEXT_VERSION = "4"


@dataclass(frozen=True)
class Source:
    """A file or folder the user added, with the globs that select files under it."""

    root: Path
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def selects(self, path: Path) -> bool:
        """Whether `discover` would yield the file at `path` (which need not exist any
        more): under the root, no hidden part, not excluded, included, a known type."""
        if path == self.root:
            return kind_of(path) is not None
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        if any(part.startswith(".") for part in parts):
            return False
        folders = [self.root.joinpath(*parts[:i]) for i in range(1, len(parts))]
        if any(_matches(p, self.root, self.exclude) for p in [*folders, path]):
            return False
        if self.include and not _matches(path, self.root, self.include):
            return False
        return kind_of(path) is not None


def discover(source: Source, skip_folder: Path | None = None) -> Iterator[Path]:
    """Files under a source: recursive, hidden files and folders ignored, globs applied."""
    if source.root.is_file():
        yield source.root
        return
    for folder, subfolders, files in os.walk(source.root):
        here = Path(folder)
        subfolders[:] = sorted(
            d
            for d in subfolders
            if not d.startswith(".")
            and not _matches(here / d, source.root, source.exclude)
            # realpath: never raises on a link loop (Path.resolve does)
            and (skip_folder is None or Path(os.path.realpath(here / d)) != skip_folder)
        )
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or _matches(path, source.root, source.exclude):
                continue
            if source.include and not _matches(path, source.root, source.include):
                continue
            yield path


def _matches(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    relative = path.relative_to(root).as_posix()
    return any(
        fnmatch.fnmatch(relative, p)
        or fnmatch.fnmatch(path.name, p)
        or fnmatch.fnmatch(relative, p.rstrip("/") + "/*")
        for p in patterns
    )


class Ingestor:
    def __init__(self, store: KnowledgeStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._options = ChunkingOptions(settings.chunk_tokens, settings.chunk_overlap)
        use_engine(settings.ocr)
        self._reconvert = store.meta_value("text_version") != TEXT_VERSION
        if self._reconvert and not store.counts()[0]:
            store.set_meta_value("text_version", TEXT_VERSION)  # a new store: nothing to redo
            self._reconvert = False

    def run(
        self,
        sources: Sequence[Source],
        prune: bool,
        progress: ProgressCallback | None = None,
        keep_unreadable: bool = False,
    ) -> SyncReport:
        """Index every file of `sources`. With `prune`, documents under these sources
        whose files are gone are removed. A file that cannot be read or converted any
        more (emptied, overwritten with binary, a link loop) is reported and leaves the
        indexes, unless `keep_unreadable` (the caller puts the indexed version back)."""
        started = time.perf_counter()
        report = SyncReport()
        skip = Path(os.path.realpath(self._store.folder))
        files: list[Path] = []
        for source in sources:
            try:
                source.root.stat()
            except OSError as exc:  # missing, a dangling link, a link loop
                reason = "no such file or folder" if not os.path.lexists(source.root) else None
                self._fail(source.root, reason or f"cannot read: {exc.strerror}", report, True)
                continue
            for path in discover(source, skip):
                if kind_of(path) is None:
                    if source.root.is_file():
                        report.failed.append(
                            FileIssue(
                                path=str(path), reason=f"unsupported file type {path.suffix!r}"
                            )
                        )
                    else:
                        report.skipped.append(FileIssue(path=str(path), reason="unsupported type"))
                    continue
                files.append(path)
        files = list(dict.fromkeys(files))
        seen = {str(p) for p in files}
        for done, path in enumerate(files):
            if progress:
                progress(done, len(files), str(path))
            self._ingest_file(path, report, keep_unreadable)
        if progress:
            progress(len(files), len(files), "")
        if prune:
            for document in self._store.documents():
                if document.path not in seen and _under_any(document.path, sources):
                    self._store.remove_document(document.path)
                    report.removed += 1
                    report.chunks_removed += document.chunks
        self._store.collect_garbage()
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def reconcile(self, paths: Collection[Path], sources: Sequence[Source]) -> SyncReport:
        """Bring what is indexed at or under `paths` (a watcher's batch of changed files
        and folders) in line with the file system: new and changed files are indexed,
        documents whose files are gone are removed, and a file that appears with the
        content of one that went away in the same batch (a rename or a move) takes over
        its document, keeping its id. Paths outside `sources` are ignored."""
        started = time.perf_counter()
        report = SyncReport()
        skip = Path(os.path.realpath(self._store.folder))
        present: list[Path] = []
        gone: dict[str, DocumentInfo] = {}
        indexed: list[DocumentInfo] | None = None
        for path in sorted(set(paths)):
            source = next((s for s in sources if _is_under(str(path), str(s.root))), None)
            if source is None or _is_under(os.path.realpath(path), str(skip)):
                continue
            if path.is_file():
                if source.selects(path):
                    present.append(path)
                continue
            # a folder (moved in, or rescanned) or a path that is gone: the documents
            # under it whose files went away leave the index
            found = []
            if path.is_dir():
                found = [p for p in discover(Source(path), skip) if source.selects(p)]
                present.extend(found)
            if indexed is None:
                indexed = self._store.documents()
            on_disk = {str(p) for p in found}
            for document in indexed:
                if (
                    _is_under(document.path, str(path))
                    and document.path not in on_disk
                    and not os.path.lexists(document.path)
                ):
                    gone[document.path] = document
        self._move_renamed(present, gone, report)
        for document in gone.values():
            self._store.remove_document(document.path)
            report.removed += 1
            report.chunks_removed += document.chunks
        for path in dict.fromkeys(present):
            self._ingest_file(path, report, False)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _move_renamed(
        self, present: list[Path], gone: dict[str, DocumentInfo], report: SyncReport
    ) -> None:
        """Give each new file whose content is that of a document whose file went away
        that document (its id stays; `gone` loses it)."""
        by_hash = {d.content_hash: d for d in gone.values()}
        for path in present:
            if not by_hash or self._store.document(str(path)) is not None:
                continue
            try:
                digest = file_digest(path)  # in blocks: a moved file may be large
                modified = path.stat().st_mtime
            except OSError:
                continue
            moved = by_hash.pop(digest, None)
            if moved is not None and self._store.rename_document(moved.path, str(path), modified):
                del gone[moved.path]
                report.renamed += 1

    def _ingest_file(self, path: Path, report: SyncReport, keep_unreadable: bool) -> None:
        streamed = is_streamed(path)
        try:
            stat = path.stat()
            limit = self._settings.max_file_mb * 1024 * 1024
            if stat.st_size > limit and not streamed:
                raise ConversionError(
                    f"larger than the {self._settings.max_file_mb:g} MB limit "
                    "(raise it with SOURCEBOOK_MAX_FILE_MB)"
                )
            data = None if streamed else path.read_bytes()
            content_hash = file_digest(path) if data is None else content_digest(data)
        except OSError as exc:
            self._fail(path, f"cannot read: {exc.strerror}", report, keep_unreadable)
            return
        except ConversionError as exc:
            self._fail(path, str(exc), report, keep_unreadable)
            return
        existing = self._store.document(str(path))
        if existing and existing.content_hash == content_hash and not self._reconvert:
            report.unchanged += 1
            return
        try:
            if data is None:
                chunks = store_in_parts(
                    self._store,
                    path,
                    lambda part, digest: _record(path, part, stat.st_mtime, stat.st_size, digest),
                    self._options,
                    self._settings.csv_part_rows,
                )
            else:
                chunks = self._store_whole(path, data, stat.st_mtime, content_hash, report)
        except (OSError, ConversionError) as exc:  # OSError: gone while read in parts
            reason = f"cannot read: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
            self._fail(path, reason, report, keep_unreadable and not self._partly_stored(path))
            return
        except Exception as exc:  # a converter library failing on odd input must not stop the batch
            reason = f"could not parse: {type(exc).__name__}: {exc}"
            self._fail(path, reason, report, keep_unreadable and not self._partly_stored(path))
            return
        report.chunks_added += chunks
        if existing:
            report.updated += 1
            report.chunks_removed += existing.chunks
        else:
            report.added += 1

    def _partly_stored(self, path: Path) -> bool:
        """Whether some parts of the file were stored before it failed (they replaced
        what was indexed, and must not stay)."""
        document = self._store.document(str(path))
        return document is not None and document.content_hash == PARTIAL_HASH

    def _store_whole(
        self, path: Path, data: bytes, modified: float, content_hash: str, report: SyncReport
    ) -> int:
        """Convert the file's bytes (in the worker process for the formats that need it)
        and store the document in one transaction; the number of chunks."""
        parsed = convert_within(path, data, self._settings.file_timeout_s, self._settings.ocr)
        for warning in parsed.warnings:
            report.partial.append(FileIssue(path=str(path), reason=warning))
        chunks = chunk_document(parsed, self._options)
        texts = [contextual_text(parsed.title, c.heading_path, c.text) for c in chunks]
        record = _record(path, parsed, modified, len(data), content_hash)
        self._store.replace_document(record, chunks, texts)
        return len(chunks)

    def _fail(self, path: Path, reason: str, report: SyncReport, keep: bool) -> None:
        """Report a file that cannot be indexed. What was indexed from it before is no
        longer what the file says: it leaves every index (and the report says so)."""
        existing = None if keep else self._store.document(str(path))
        if existing is not None:
            self._store.remove_document(existing.path)
            report.removed += 1
            report.chunks_removed += existing.chunks
            reason += "; removed from the index"
        report.failed.append(FileIssue(path=str(path), reason=reason))


def _record(
    path: Path, parsed: ParsedDocument, modified: float, size: int, content_hash: str
) -> DocumentRecord:
    kind = kind_of(path) or "text"
    return DocumentRecord(
        path=str(path),
        title=parsed.title,
        kind=kind,
        tags=parsed.tags,
        modified=modified,
        size=size,
        content_hash=content_hash,
        text=parsed.text,
        pages=parsed.pages,
        boxes=parsed.boxes,
    )


def _is_under(path: str, root: str) -> bool:
    """Whether `path` is `root` or inside it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _under_any(path: str, sources: Sequence[Source]) -> bool:
    return any(_is_under(path, str(source.root)) for source in sources)
