"""watch: keep the knowledge base in sync with its folders as files change."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sourcebook.surfaces.cli.common import (
    CliError,
    KbOption,
    app,
    console,
    display_path,
    errors_to_exit,
    open_kb,
)

if TYPE_CHECKING:
    from sourcebook.ingest.background import EmbeddingProgress
    from sourcebook.models import SyncReport


@app.command()
def watch(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="files or folders to add and watch (default: every source)"),
    ] = None,
    kb: KbOption = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", "-i", help="only files matching this glob (with PATHs)"),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", "-x", help="skip files or folders matching this glob"),
    ] = None,
    debounce: Annotated[
        int, typer.Option(min=10, max=60_000, help="longest wait, in ms, to group changes")
    ] = 500,
    poll: Annotated[
        bool, typer.Option(help="poll for changes (file systems without change events)")
    ] = False,
) -> None:
    """Watch sources and index every change as it is saved: an edit is keyword-searchable
    within about a second and embedded soon after; deleted files leave the index; renamed
    files keep their documents. Runs until Ctrl-C (or SIGTERM)."""
    # imported here: `watchfiles` and the pipeline are not needed by the other commands
    from sourcebook.ingest.background import BackgroundEmbedder, Locks
    from sourcebook.ingest.pipeline import absolute_path
    from sourcebook.ingest.watch import FolderWatcher, WatchOptions

    with errors_to_exit(), open_kb(kb, create=bool(paths)) as base:
        if paths:
            missing = [p for p in paths if not absolute_path(p).exists()]
            if missing:
                raise CliError(f"no such file or folder: {', '.join(map(str, missing))}")
            report = base.add(paths, include or [], exclude or [], wait=False)
            _print_report(report)
        # without PATHs: every source, including those added while it runs
        roots = [absolute_path(p) for p in paths] if paths else None
        if not base.sources():
            raise CliError(
                "nothing to watch: give a folder (`sourcebook watch ~/notes`) "
                "or add one first (`sourcebook add ~/notes`)"
            )
        locks = Locks.exclusive()  # the watcher and the embedder share one connection
        embedder = BackgroundEmbedder(base, locks, on_progress=_print_embedding)
        watcher = FolderWatcher(
            base,
            roots,
            locks,
            WatchOptions(debounce_ms=debounce, force_polling=poll),
            on_report=_print_report,
            embedder=embedder,
        )
        stop = threading.Event()
        # Ctrl-C and SIGTERM let the batch in hand finish (stored and reported), a second
        # Ctrl-C interrupts at once
        previous = {s: signal.signal(s, _stopper(stop)) for s in (signal.SIGTERM, signal.SIGINT)}
        console.print(
            "Watching "
            + ", ".join(f"[bold]{escape(display_path(str(r)))}[/]" for r in watcher.roots())
            + " [dim](Ctrl-C to stop)[/]"
        )
        embedder.start()
        try:
            watcher.run(stop)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            console.print("[dim]stopping…[/]")
            embedder.stop()
            for number, handler in previous.items():
                signal.signal(number, handler)
        done, total = base.embedding_progress()
        console.print(
            f"Stopped. {done:,} of {total:,} chunks embedded"
            + (" (the rest are embedded by the next watch, sync or add)" if done < total else "")
        )


def _stopper(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handle(number: int, _frame: FrameType | None) -> None:
        if stop.is_set() and number == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    return handle


def _print_report(report: SyncReport) -> None:
    parts = [
        f"{count} {what}"
        for count, what in (
            (report.added, "added"),
            (report.updated, "updated"),
            (report.renamed, "renamed"),
            (report.removed, "removed"),
            (len(report.failed), "failed"),
        )
        if count
    ]
    if parts:
        console.print(
            f"[bold]{', '.join(parts)}[/] [dim]({report.chunks_added} chunks keyword-searchable, "
            f"{report.seconds:.2f}s)[/]"
        )
    for issue in report.failed:
        console.print(f"[red]failed[/] {escape(display_path(issue.path))}: {escape(issue.reason)}")


def _print_embedding(progress: EmbeddingProgress) -> None:
    console.print(
        f"[dim]embedded {progress.embedded} texts: {progress.chunks_embedded:,} of "
        f"{progress.chunks:,} chunks have vectors[/]"
    )
