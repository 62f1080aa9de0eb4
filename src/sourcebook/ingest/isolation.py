"""Converting a file within a time limit.

Formats whose parsers can take long or much memory on a hostile or huge file (PDF, office
files, e-books, images: anything that may need OCR) are converted in a worker process.
When a file is still converting after the limit, the worker is killed, the file is
reported ("took longer than N s") and the next file goes to a fresh worker; the batch
never hangs on one file. Text formats are converted in-process: their cost is linear in
the file's size, which `max_file_mb` bounds.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from sourcebook.ingest.converters import ConversionError, convert, kind_of, use_engine
from sourcebook.models import ParsedDocument

ISOLATED_KINDS = {"pdf", "docx", "pptx", "sheet", "epub", "image"}


class _Worker:
    """One conversion process, started when first needed and replaced after a kill."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._engine = "auto"

    def convert(self, path: Path, data: bytes, timeout: float, engine: str) -> ParsedDocument:
        if self._pool is None or engine != self._engine:
            self.close()
            # forkserver: never fork a process that runs threads (the HTTP server does)
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(1, context, initializer=use_engine, initargs=(engine,))
            self._engine = engine
        future: Future[ParsedDocument] = self._pool.submit(convert, path, data)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            self.close(kill=True)
            raise ConversionError(
                f"took longer than {timeout:g} s to convert and was skipped "
                "(raise the limit with SOURCEBOOK_FILE_TIMEOUT_S)"
            ) from None
        except BrokenProcessPool:
            self.close(kill=True)
            raise ConversionError(
                "the converter crashed or ran out of memory on this file"
            ) from None

    def close(self, kill: bool = False) -> None:
        if self._pool is None:
            return
        if kill:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
        self._pool.shutdown(wait=not kill, cancel_futures=True)
        self._pool = None


_worker = _Worker()


def convert_within(path: Path, data: bytes, timeout: float, engine: str = "auto") -> ParsedDocument:
    """`convert`, in the worker process for the formats that need it."""
    if kind_of(path) not in ISOLATED_KINDS:
        return convert(path, data)
    return _worker.convert(path, data, timeout, engine)


def close_worker() -> None:
    _worker.close()
