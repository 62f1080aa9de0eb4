"""The server's background work: the embedder (always) and the folder watcher (`serve
--watch`), in threads of their own that take the server's `ReadWriteLock` like a request."""

from __future__ import annotations

import logging
import threading

from sourcebook.ingest.background import BackgroundEmbedder, EmbeddingProgress, Locks
from sourcebook.ingest.watch import FolderWatcher
from sourcebook.kb import KnowledgeBase
from sourcebook.models import SyncReport
from sourcebook.surfaces.server.locking import ReadWriteLock

log = logging.getLogger("sourcebook.server")


class BackgroundWork:
    """Started by the application's lifespan, stopped when the server shuts down."""

    def __init__(self, kb: KnowledgeBase, lock: ReadWriteLock, watch: bool) -> None:
        locks = Locks(lock.reading, lock.writing)
        self.embedder = BackgroundEmbedder(kb, locks, on_progress=_log_embedding)
        self._watcher = (
            FolderWatcher(kb, None, locks, on_report=_log_report, embedder=self.embedder)
            if watch
            else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.embedder.start()
        if self._watcher is not None:
            self._thread = threading.Thread(
                target=self._watcher.run, args=(self._stop,), name="sourcebook-watch", daemon=True
            )
            self._thread.start()
            log.info("watching %s", ", ".join(map(str, self._watcher.roots())) or "no sources yet")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.embedder.stop()


def _log_report(report: SyncReport) -> None:
    log.info(
        "watch: %d added, %d updated, %d renamed, %d removed, %d failed",
        report.added,
        report.updated,
        report.renamed,
        report.removed,
        len(report.failed),
    )


def _log_embedding(progress: EmbeddingProgress) -> None:
    log.info(
        "embedded %d: %d of %d chunks have vectors",
        progress.embedded,
        progress.chunks_embedded,
        progress.chunks,
    )
