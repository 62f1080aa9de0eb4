"""Keep a knowledge base in sync with its folders as files change (`sourcebook watch`,
`sourcebook serve --watch`).

File-system events (`watchfiles`: inotify, FSEvents or ReadDirectoryChangesW through the
Rust `notify` crate) are grouped into batches (`debounce_ms`, `step_ms`); each batch's
paths are handed to `KnowledgeBase.update_paths`, which looks at what is on disk now, not
at the kind of event: a path that exists is (re)indexed if it changed, one that is gone
leaves the index, and a file that appears with the content of one that went away in the
same batch is a rename (its document keeps its id). So a lost or reordered event cannot
leave a stale document behind, as long as some event names the path.

Editors' temporary files (`EditorFilesFilter`) and everything hidden or under the
knowledge base folder are ignored before a batch is made. A watched folder that goes away
(deleted, moved, unmounted) takes its documents with it; it is looked for every
`poll_seconds` and rescanned when it is back (vectors of its unchanged text are still
cached, so nothing is embedded again). A folder replaced by another one (a mount point,
`rm -rf` and recreate) is noticed by its identity (device and inode) changing.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from watchfiles import Change, watch

from sourcebook.store.embedded import StoreError

if TYPE_CHECKING:
    from sourcebook.ingest.background import BackgroundEmbedder, Locks
    from sourcebook.kb import KnowledgeBase
    from sourcebook.models import SyncReport

log = logging.getLogger(__name__)

# File names editors and tools write while saving, then rename or delete (never notes):
# vim's swap files and its write test "4913", backups "name~", Emacs locks ".#name" and
# auto-saves "#name#", JetBrains' safe-write copies "name___jb_tmp___", LibreOffice and
# MS Office locks, gedit's ".goutputstream-*", Kate's swap files, and downloads or copies
# in progress.
EDITOR_FILE_PATTERNS = (
    r"\.sw[a-p]$",
    r"\.swpx$",
    r"^4913$",
    r"~$",
    r"^\.#",
    r"^#.*#$",
    r"___jb_\w+___$",
    r"^\.~lock\..*#$",
    r"^~\$",
    r"^\.goutputstream-",
    r"\.kate-swp$",
    r"\.(tmp|temp|part|partial|crdownload|download)$",
    r"^\.DS_Store$",
    r"^Thumbs\.db$",
)


class EditorFilesFilter:
    """watchfiles' `watch_filter`: False for editors' temporary files, for anything
    hidden below a watched root (`discover` skips those too) and for the knowledge base's
    own folder (its database changes on every write)."""

    def __init__(self, roots: Sequence[Path], ignore: Sequence[Path] = ()) -> None:
        self._pattern = re.compile("|".join(f"(?:{p})" for p in EDITOR_FILE_PATTERNS))
        self._roots = [str(r) for r in roots]
        self._ignore = [str(p) for p in ignore]

    def __call__(self, change: Change, path: str) -> bool:
        if self._pattern.search(os.path.basename(path)):
            return False
        if any(_is_under(path, folder) for folder in self._ignore):
            return False
        for root in self._roots:
            if _is_under(path, root):
                relative = path[len(root) :].lstrip(os.sep)
                return not any(part.startswith(".") for part in relative.split(os.sep))
        return True


@dataclass(frozen=True)
class WatchOptions:
    """How events are grouped and how often missing folders are looked for."""

    debounce_ms: int = 500  # a batch never waits longer than this once a change is seen
    step_ms: int = 100  # a batch ends after this long without a new event
    poll_seconds: float = 1.0  # missing or replaced roots are looked for this often
    force_polling: bool = False  # file systems without events (some network mounts)


class FolderWatcher:
    """Watches `roots` (sources of `kb`; None: every source, followed as sources are added
    or removed) and applies every change to the knowledge base, taking `locks.writing` for
    each batch. Call `run(stop)` in the thread that should do the work; it returns once
    `stop` is set (or on Ctrl-C when it runs in the main thread)."""

    def __init__(
        self,
        kb: KnowledgeBase,
        roots: Sequence[Path] | None,
        locks: Locks,
        options: WatchOptions | None = None,
        on_report: Callable[[SyncReport], None] | None = None,
        embedder: BackgroundEmbedder | None = None,
    ) -> None:
        self._kb = kb
        self._fixed_roots = None if roots is None else list(dict.fromkeys(roots))
        self._locks = locks
        self._options = options or WatchOptions()
        self._on_report = on_report
        self._embedder = embedder
        self._own_folder = kb.path.resolve()
        self._backlog: set[Path] = set()  # paths of a batch that could not be applied yet
        # each root's identity when its watch began; None while it is missing
        self._identities: dict[Path, tuple[int, int] | None] = {}

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set. A root is rescanned when its watch begins (and when
        it comes back), so nothing that changed while it was not watched is missed."""
        while not stop.is_set():
            roots = self.roots()
            identities = {root: _identity(root) for root in roots}
            rescan = [r for r in roots if self._identities.get(r, ()) != identities[r]]
            self._identities = identities
            present = [root for root in roots if identities[root] is not None]
            if not present:
                self._apply(set(rescan))
                stop.wait(self._options.poll_seconds)
                continue
            try:
                for changes in self._events(present, stop):
                    paths = {Path(path) for _, path in changes}
                    if rescan:  # the watch has begun: from now on no event is missed
                        paths.update(rescan)
                        rescan = []
                    self._apply(paths)
                    if self._roots_moved():
                        break  # watch again what is there now
            except (OSError, RuntimeError) as exc:  # a root vanished while being set up
                log.warning("watch: %s; watching again", exc)
                stop.wait(self._options.poll_seconds)

    def roots(self) -> list[Path]:
        """What is watched: the given roots, or every source but the server's uploads
        folder (inside the knowledge base folder, written by its own routes)."""
        if self._fixed_roots is not None:
            return self._fixed_roots
        with self._locks.reading():
            sources = self._kb.sources()
        return [
            Path(source)
            for source in sources
            if not _is_under(os.path.realpath(source), str(self._own_folder))
        ]

    def _events(
        self, roots: list[Path], stop: threading.Event
    ) -> Iterator[set[tuple[Change, str]]]:
        """Batches of changes; an empty one every `poll_seconds` without changes."""
        options = self._options
        return watch(
            *roots,
            watch_filter=EditorFilesFilter(roots, [self._own_folder]),
            debounce=options.debounce_ms,
            step=options.step_ms,
            stop_event=stop,
            rust_timeout=max(1, int(options.poll_seconds * 1000)),
            yield_on_timeout=True,
            raise_interrupt=threading.current_thread() is threading.main_thread(),
            force_polling=options.force_polling,
            ignore_permission_denied=True,
        )

    def _roots_moved(self) -> bool:
        """Whether a root went away, came back or was replaced since its watch began, or
        the sources changed."""
        roots = self.roots()
        if set(roots) != set(self._identities):
            return True
        return any(_identity(root) != seen for root, seen in self._identities.items())

    def _apply(self, paths: set[Path]) -> None:
        """Apply one batch (and what an earlier one left) under the write lock."""
        paths |= self._backlog
        self._backlog = set()
        if not paths:
            return
        try:
            with self._locks.writing():
                report = self._kb.update_paths(paths)
        except StoreError as exc:  # another process is writing: keep the batch for later
            log.info("watch: waiting to apply %d changes: %s", len(paths), exc)
            self._backlog = paths
            return
        except Exception:  # a batch must not end the watch; the paths are tried again
            log.exception("watch: applying %d changes failed; retrying", len(paths))
            self._backlog = paths
            return
        changed = report.added + report.updated + report.removed + report.renamed
        if changed or report.failed:
            if self._embedder is not None and report.chunks_added:
                self._embedder.wake()
            if self._on_report is not None:
                self._on_report(report)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
