"""The background embedder: fills in the vectors of chunks that were stored without one.

Ingestion stores a document's chunks first (keyword-searchable at once) and leaves their
vectors to this worker when it should not wait for them (`watch`, `serve`, `add
--no-wait`). It runs in a thread of its own, reads what is waiting, embeds it outside any
lock, and takes the write lock only to store a few seconds' worth of vectors at a time.
A process killed while it works loses at most those few seconds: the chunks are still
stored without vectors, and the next embedder (or `sync`, `add`) takes them up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sourcebook.store.embedded import StoreError

if TYPE_CHECKING:
    from sourcebook.index.embedders import Vectors
    from sourcebook.kb import KnowledgeBase

log = logging.getLogger(__name__)

LockFactory = Callable[[], AbstractContextManager[Any]]

# The embedding thread keeps the normal CPU priority: a lower one made it hold Python's
# interpreter lock for seconds on a loaded machine (descheduled in the middle of its
# Python work), stalling the watcher and the requests of the same process. The model's
# own threads do the heavy work without that lock.
BACKGROUND_BATCH = 8  # texts embedded at a time


@dataclass(frozen=True)
class Locks:
    """How background workers share one open knowledge base with the other threads of
    their process: `reading` around reads, `writing` around writes. The server passes its
    `ReadWriteLock`; a process with no other readers uses `Locks.exclusive()`."""

    reading: LockFactory
    writing: LockFactory

    @classmethod
    def exclusive(cls) -> Locks:
        """One lock for everything (reads and writes share the SQLite connection)."""
        lock = threading.RLock()
        return cls(lambda: lock, lambda: lock)


@dataclass(frozen=True)
class EmbeddingProgress:
    """What one round stored, and how far the knowledge base is."""

    embedded: int  # chunk texts embedded and stored by this round
    chunks_embedded: int  # chunks that have a vector now
    chunks: int  # all chunks


class BackgroundEmbedder:
    """Embeds waiting chunk texts in a thread until stopped.

    It works whenever texts are waiting; otherwise it sleeps until `wake()` (called after
    a write that stored new chunks) or `poll_seconds` (another process may have stored
    some: `add --no-wait`, a watcher). While another process holds the knowledge base's
    write lock it waits and tries again.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        locks: Locks,
        on_progress: Callable[[EmbeddingProgress], None] | None = None,
        poll_seconds: float = 5.0,
        save_seconds: float = 2.0,
    ) -> None:
        self._kb = kb
        self._locks = locks
        self._on_progress = on_progress
        self._poll_seconds = poll_seconds
        self._save_seconds = save_seconds  # vectors are stored in rounds of about this long
        # small batches: a stop (Ctrl-C, SIGTERM, server shutdown) waits for one of them
        self._batch = min(kb.settings.embed_batch, BACKGROUND_BATCH)
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        # chunks up to this id have been read (chunk ids only grow): the next read goes on
        # from here instead of passing every embedded chunk again
        self._after = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="sourcebook-embedder", daemon=True
            )
            self._thread.start()

    def wake(self) -> None:
        """New chunks were stored: embed them now rather than at the next poll."""
        self._wakeup.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the batch being embedded (what was computed is stored first)."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                worked = self.run_once()
            except StoreError as exc:  # another process is writing: try again later
                log.info("background embedding waits: %s", exc)
                worked = False
            except Exception:  # never let the thread die: report and try again later
                log.exception("background embedding failed; retrying in %ss", self._poll_seconds)
                worked = False
            if not worked:
                self._wakeup.wait(self._poll_seconds)
                self._wakeup.clear()

    def run_once(self) -> bool:
        """Embed waiting texts for about `save_seconds` and store their vectors; returns
        whether there was anything to do."""
        with self._locks.reading():
            done, total = self._kb.embedding_progress()  # counted again only after a write
        if done == total:
            return False
        computed: dict[str, Vectors] = {}
        started = time.monotonic()
        while not self._stopping.is_set() and time.monotonic() - started < self._save_seconds:
            with self._locks.reading():
                work = self._kb.texts_to_embed(self._batch, self._after)
            if work is None:
                if self._after == 0:
                    break
                self._after = 0  # from the start once more: nothing is ever skipped
                continue
            self._after = work.last_chunk
            texts = {h: t for h, t in work.texts.items() if h not in computed}
            if texts:
                vectors = self._kb.embedder.embed_passages(list(texts.values()))
                computed.update(zip(texts, vectors, strict=True))
        if not computed:
            return False
        try:
            with self._locks.writing():
                self._kb.save_vectors(computed)
                done, total = self._kb.embedding_progress()
        except BaseException:
            self._after = 0  # not stored: these chunks are read again
            raise
        if self._on_progress:
            self._on_progress(EmbeddingProgress(len(computed), done, total))
        return True
