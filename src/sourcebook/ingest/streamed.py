"""Files stored in parts: a CSV or TSV file of any size is read as a stream and stored one
part (a few thousand rows, one transaction) at a time, so that memory holds a part, not
the file (a 200 MB export would otherwise be held several times over: bytes, text,
chunks).

The first part is stored with `PARTIAL_HASH` as its content hash and the last part sets the
file's hash. A process killed between parts leaves a shorter document that is consistent
in every index; its hash matches no file, so the next `sync` (or `watch`) indexes the file
again from its start. The file is read once first to check it (`check_csv`), so that a
malformed or wrongly encoded file is reported before any of it replaces what was indexed.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sourcebook.ingest.chunker import ChunkingOptions, chunk_document, contextual_text
from sourcebook.ingest.converters.sheets import check_csv, csv_parts
from sourcebook.models import ParsedDocument
from sourcebook.store.base import PARTIAL_HASH
from sourcebook.store.composed import KnowledgeStore
from sourcebook.store.embedded import DocumentRecord

STREAMED_SUFFIXES = frozenset({".csv", ".tsv"})

T = TypeVar("T")


def is_streamed(path: Path) -> bool:
    return path.suffix.lower() in STREAMED_SUFFIXES


def content_digest(data: bytes) -> str:
    """The content hash ingestion stores for a file: BLAKE2b, 16 bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: Path) -> str:
    """`content_digest` of a file, read in 1 MB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_in_parts(
    store: KnowledgeStore,
    path: Path,
    record_for: Callable[[ParsedDocument, str], DocumentRecord],
    options: ChunkingOptions,
    part_rows: int,
) -> int:
    """Check the file, then store it part by part (see the module docstring); the number
    of chunks stored. `record_for(first part, content hash)` is the document's record.
    Raises ConversionError (nothing stored when the check finds it) or OSError."""
    with path.open("rb") as stream:
        check_csv(stream, path)
    digest = hashlib.blake2b(digest_size=16)
    stored = 0
    offset = 0  # where the part's text starts in the document's text
    first_line = 1  # ... and on which of its lines
    title = ""
    with path.open("rb") as raw:
        parts = csv_parts(io.BufferedReader(_Hashing(raw, digest)), path, part_rows)
        for number, (part, last) in enumerate(_with_last(parts)):
            chunks = [
                replace(
                    c,
                    ordinal=c.ordinal + stored,
                    char_start=c.char_start + offset,
                    char_end=c.char_end + offset,
                )
                for c in chunk_document(part, options)
            ]
            title = title or part.title
            texts = [contextual_text(title, c.heading_path, c.text) for c in chunks]
            # the file has been read to its end when its last part is known
            content_hash = digest.hexdigest() if last else None
            if number == 0:
                record = record_for(part, content_hash or PARTIAL_HASH)
                store.replace_document(record, chunks, texts)
            else:
                store.append_to_document(
                    str(path), part.text, first_line, chunks, texts, content_hash
                )
            stored += len(chunks)
            offset += len(part.text) + 1
            first_line += part.text.count("\n") + 1
            del chunks, texts
            _return_free_memory()
    return stored


def _return_free_memory() -> None:
    """Hand the heap's free pages back to the system after a part. Each part allocates
    and frees a few hundred thousand small objects; glibc keeps the freed pages, and
    fragmentation made the process grow by ~1.5 MB a part (a 200-part file: +300 MB)
    although nothing stays referenced. No-op where the C library has no malloc_trim."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


try:
    _MALLOC_TRIM: Any = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError):  # not glibc
    _MALLOC_TRIM = None


class _Hashing(io.RawIOBase):
    """A file read through, every byte also fed to `digest` (what was indexed is what
    is hashed, even if the file changes while it is read)."""

    def __init__(self, raw: io.BufferedReader, digest: hashlib.blake2b) -> None:
        self._raw = raw
        self._digest = digest
        self._position = 0  # bytes hashed: a seek back re-reads without hashing twice

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        start = self._raw.tell()
        count = self._raw.readinto(buffer)
        end = start + count
        if end > self._position:
            self._digest.update(memoryview(buffer)[self._position - start : count])
            self._position = end
        return count


def _with_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Each item with whether it is the last (one item read ahead)."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True
