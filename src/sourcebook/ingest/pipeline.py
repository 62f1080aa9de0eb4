"""Ingestion: find files, convert, chunk, embed what is new, and store one document at a time.

Each document is committed on its own, so an interrupted run keeps everything done so far
and the next `sync` picks up the rest. A file that cannot be read is reported with its
reason and the batch goes on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sourcebook.index.embedders import Embedder
from sourcebook.ingest.chunker import ChunkingOptions, chunk_document, contextual_text
from sourcebook.ingest.converters import ConversionError, convert, kind_of
from sourcebook.models import FileIssue, ParsedDocument, SyncReport
from sourcebook.settings import Settings
from sourcebook.store.composed import KnowledgeStore
from sourcebook.store.embedded import DocumentRecord, text_hash

ProgressCallback = Callable[[int, int, str], None]  # (done, total, current path)

# What converters store: "2" = the file's own characters (NFKC only for matching); a store
# written before holds NFKC text, so its documents are converted again by the next `sync`
# even where the file did not change.
TEXT_VERSION = "2"


def absolute_path(raw: str | Path) -> Path:
    """The path a source or document is known by: absolute, `~` expanded and `.`/`..`
    removed, but symbolic links kept, not resolved. The path the user added (or the link
    found in a folder) is the document's identity: access rules match it, `remove` and
    `sync` find it, and every surface shows it; where a link points never matters, so a
    link cannot carry a file out of the rule of the folder it is in."""
    return Path(os.path.abspath(Path(raw).expanduser()))


@dataclass(frozen=True)
class Source:
    """A file or folder the user added, with the globs that select files under it."""

    root: Path
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


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
    def __init__(self, store: KnowledgeStore, embedder: Embedder, settings: Settings) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings
        self._options = ChunkingOptions(settings.chunk_tokens, settings.chunk_overlap)
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

    def _ingest_file(self, path: Path, report: SyncReport, keep_unreadable: bool) -> None:
        try:
            stat = path.stat()
            limit = self._settings.max_file_mb * 1024 * 1024
            if stat.st_size > limit:
                raise ConversionError(
                    f"larger than the {self._settings.max_file_mb:g} MB limit "
                    "(raise it with SOURCEBOOK_MAX_FILE_MB)"
                )
            data = path.read_bytes()
        except OSError as exc:
            self._fail(path, f"cannot read: {exc.strerror}", report, keep_unreadable)
            return
        except ConversionError as exc:
            self._fail(path, str(exc), report, keep_unreadable)
            return
        content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
        existing = self._store.document(str(path))
        if existing and existing.content_hash == content_hash and not self._reconvert:
            report.unchanged += 1
            return
        try:
            parsed = convert(path, data)
        except ConversionError as exc:
            self._fail(path, str(exc), report, keep_unreadable)
            return
        except Exception as exc:  # a converter library failing on odd input must not stop the batch
            reason = f"could not parse: {type(exc).__name__}: {exc}"
            self._fail(path, reason, report, keep_unreadable)
            return
        chunks = chunk_document(parsed, self._options)
        texts = [contextual_text(parsed.title, c.heading_path, c.text) for c in chunks]
        vectors, embedded = self._embed(texts)
        record = _record(path, parsed, stat.st_mtime, len(data), content_hash)
        self._store.replace_document(record, chunks, texts, vectors)
        report.chunks_embedded += embedded
        report.chunks_added += len(chunks)
        if existing:
            report.updated += 1
            report.chunks_removed += existing.chunks
        else:
            report.added += 1

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

    def _embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Vectors for `texts`, embedding only those not in the cache."""
        hashes = [text_hash(t) for t in texts]
        cached = self._store.cached_vectors(hashes)
        missing = [i for i, h in enumerate(hashes) if h not in cached]
        batch = self._settings.embed_batch
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), batch):
            indices = missing[start : start + batch]
            for i, vector in zip(
                indices, self._embedder.embed_passages([texts[i] for i in indices]), strict=True
            ):
                fresh[hashes[i]] = vector
        dim = self._embedder.dim
        vectors = np.zeros((len(texts), dim), dtype=np.float32)
        for i, digest in enumerate(hashes):
            vectors[i] = cached[digest] if digest in cached else fresh[digest]
        return vectors, len({hashes[i] for i in missing})


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
    )


def _under_any(path: str, sources: Sequence[Source]) -> bool:
    for source in sources:
        root = str(source.root)
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False
