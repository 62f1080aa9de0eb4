"""What every command shares: the app, the consoles, options, errors, output helpers.

Start-up rule (docs/architecture.md): the command modules are imported by every run of
the command line, `--help` included, so at module level they import only the standard
library, typer, rich and light sourcebook modules (`literals`, `text`, this one). The
facade, the models, settings, the server and anything that loads numpy, a model or an
index is imported inside the command that uses it (tests/test_first_hour.py checks this).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from sourcebook.literals import AnswerMode
from sourcebook.text import as_read, printable

if TYPE_CHECKING:
    from sourcebook.kb import KnowledgeBase
    from sourcebook.models import Answer, AnswerEvent, SearchHit, SyncReport
    from sourcebook.settings import Settings
    from sourcebook.store.embedded import Filters


class _CommandList(TyperGroup):
    """The command list shows each command's first sentence whole (click cuts it at the
    terminal's width with "...")."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:  # typer's vendored click
        rows = [
            (name, command.get_short_help_str(limit=1000))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def command_group(help: str, **options: Any) -> typer.Typer:
    """A command group as every group of this CLI is made: plain help (whole sentences,
    single line breaks in docstrings joined, flags without a "<bool>" type, readable when
    piped), no shell-completion options."""
    return typer.Typer(
        help=help,
        cls=_CommandList,
        rich_markup_mode=None,
        add_completion=False,
        pretty_exceptions_enable=False,
        **options,
    )


app = command_group(
    "Sourcebook: ask your own notes (Chinese, English or both), get cited answers.",
    no_args_is_help=True,
)


@app.callback()
def _everywhere(
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for embedding and reranking [env: SOURCEBOOK_THREADS; "
            "default: all cores]",
        ),
    ] = None,
) -> None:
    """Sourcebook: ask your own notes (Chinese, English or both), get cited answers."""
    if threads is not None:
        # every command reads its settings from the environment (Settings())
        os.environ["SOURCEBOOK_THREADS"] = str(threads)


# Piped or redirected, lines are not wrapped at all (rich's default is 80 columns, which
# splits quotes mid-word in a file); in a terminal rich wraps at word boundaries.
console = Console(soft_wrap=not sys.stdout.isatty())
errors = Console(stderr=True, soft_wrap=True)  # paths stay on one line

KbOption = Annotated[
    Path | None,
    typer.Option("--kb", help="knowledge base folder [env: SOURCEBOOK_KB; default: ./.sourcebook]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


class CliError(Exception):
    pass


# Errors reported as one line and exit code 1, by (module, class): looked up only in
# modules already imported, since an error class whose module was never loaded cannot
# have been raised (and importing it just to catch nothing would cost start-up time).
_REPORTED = (
    ("sourcebook.store.embedded", "StoreError"),
    ("sourcebook.answer.llm", "LLMError"),
    ("sourcebook.store.access", "AccessError"),
)


def _reported_errors() -> tuple[type[Exception], ...]:
    loaded = [
        getattr(module, name)
        for module_name, name in _REPORTED
        if (module := sys.modules.get(module_name)) is not None
    ]
    return (CliError, ValueError, KeyError, *loaded)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, _reported_errors()):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        errors.print(f"[bold red]error:[/] {escape(str(message))}")
        raise typer.Exit(1) from None


def settings_for(kb: Path | None) -> Settings:
    from sourcebook.settings import Settings

    settings = Settings()
    if kb is not None:
        settings.kb = kb
    return settings


def kb_exists(settings: Settings) -> bool:
    """Whether the folder holds a knowledge base (its SQLite records, or the backends
    `init` recorded for it)."""
    return (settings.kb / "sourcebook.db").exists() or (settings.kb / "backends.json").exists()


def open_kb(kb: Path | None, create: bool = False) -> KnowledgeBase:
    from sourcebook.kb import KnowledgeBase

    settings = settings_for(kb)
    exists = kb_exists(settings)
    if create and not exists:
        console.print(f"Created knowledge base at [bold]{escape(str(settings.kb))}[/]")
    return KnowledgeBase(settings.kb, settings, create=create and not exists)


def emit_json(data: Any) -> None:
    from pydantic import BaseModel

    if isinstance(data, BaseModel):
        text = data.model_dump_json(indent=2)
    elif isinstance(data, dict):
        text = json.dumps(data, ensure_ascii=False, indent=2)
    else:
        text = json.dumps(
            [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data],
            ensure_ascii=False,
            indent=2,
        )
    sys.stdout.write(text + "\n")


LOCAL_USER = "local"  # who the command line acts as (see the module docstring)


def audit_log(
    base: KnowledgeBase,
    action: str,
    query: str | None = None,
    documents: list[str] | None = None,
    detail: str | None = None,
) -> None:
    base.access.record(LOCAL_USER, "cli", action, query, documents or [], detail)


def record_answer(base: KnowledgeBase, question: str) -> Callable[[Answer], None]:
    """A recorder for `audited`: the answer to `question`, with the documents cited."""

    def record(answer: Answer) -> None:
        state = "found" if answer.found else "not found"
        paths = [c.hit.absolute_path for c in answer.citations]
        audit_log(base, "ask", question, paths, f"{answer.mode}, {state}")

    return record


def display_path(path: str) -> str:
    """A path as a report line shows it: relative to here, control characters escaped
    (a newline in a file name must not start a line of its own)."""
    try:
        return printable(os.path.relpath(path))
    except ValueError:
        return printable(path)


def location(hit: SearchHit) -> str:
    """Where a hit is, as `show` takes it: the path as added, then the lines."""
    where = f"{printable(hit.path)}:{hit.line_start}-{hit.line_end}"
    if hit.page_start:
        pages = (
            f"p.{hit.page_start}"
            if hit.page_start == hit.page_end
            else f"pp.{hit.page_start}-{hit.page_end}"
        )
        where += f" ({pages})"
    return where


def filters_from(
    path: str | None, tag: list[str] | None, after: datetime | None, before: datetime | None
) -> Filters:
    from sourcebook.store.embedded import Filters

    return Filters(
        path_glob=path, tags=tuple(tag or ()), modified_after=after, modified_before=before
    )


PathFilter = Annotated[str | None, typer.Option("--path", help="only documents matching this glob")]
TagFilter = Annotated[list[str] | None, typer.Option("--tag", help="only documents with this tag")]
AfterFilter = Annotated[
    datetime | None, typer.Option("--after", help="modified on/after (ISO date)")
]
BeforeFilter = Annotated[datetime | None, typer.Option("--before", help="modified on/before")]
ModeOption = Annotated[
    AnswerMode | None,
    typer.Option(
        "--mode",
        help="extractive: quote the sources; generate: a language model writes the answer "
        "and every sentence is checked against its sources [env: SOURCEBOOK_ANSWER_MODE; "
        "default: extractive]",
    ),
]


def with_progress(run: Any, quiet: bool) -> SyncReport:
    """Run `run(indexing, embedding)` with a progress bar for each phase: files indexed
    (keyword-searchable from then on), then chunks embedded."""
    if quiet or not console.is_terminal:
        return run(None, None)  # type: ignore[no-any-return]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.fields[phase]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        files = progress.add_task("", total=None, phase="indexing")
        chunks = progress.add_task("", total=None, phase="embedding", visible=False)

        def indexing(done: int, total: int, path: str) -> None:
            progress.update(
                files,
                completed=done,
                total=total,
                description=display_path(path)[-50:] if path else "",
            )

        def embedding(done: int, total: int, _: str) -> None:
            progress.update(
                chunks,
                completed=done,
                total=total,
                visible=True,
                description="chunks (keyword search works meanwhile)",
            )

        return run(indexing, embedding)  # type: ignore[no-any-return]


def finish_report(report: SyncReport, as_json: bool) -> None:
    if as_json:
        emit_json(report)
    else:
        console.print(summary(report))
        if report.chunks_waiting:
            console.print(
                f"[yellow]{report.chunks_waiting:,} chunks wait for their vectors[/] (found by "
                "keyword search until then; embedded by `sourcebook sync`, `watch` or `serve`)"
            )
        for issue in report.failed:
            errors.print(
                f"[red]failed[/] {escape(display_path(issue.path))}: "
                + escape(printable(issue.reason))
            )
        for issue in report.partial:
            errors.print(
                f"[yellow]partly read[/] {escape(display_path(issue.path))}: "
                + escape(printable(issue.reason))
            )
    if report.failed:
        raise typer.Exit(2)


def summary(report: SyncReport) -> str:
    """What an add or sync did, in counts that say only what happened."""
    seconds = f"[dim]{report.seconds:.1f} s[/]"
    changed = report.added + report.updated + report.removed
    if not changed and not report.failed and not report.chunks_added:
        return (
            f"Nothing to do: {report.unchanged} document{'s' * (report.unchanged != 1)} "
            f"already indexed and unchanged.  {seconds}"
        )
    failed = f"[{'red' if report.failed else 'green'}]{len(report.failed)} failed[/]"
    documents = (
        f"[bold]documents[/]: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed, {failed}"
        + (f", {len(report.skipped)} skipped (unsupported type)" if report.skipped else "")
    )
    embedded = min(report.chunks_embedded, report.chunks_added)
    waiting = min(report.chunks_waiting, report.chunks_added - embedded)
    cached = report.chunks_added - embedded - waiting
    if not report.chunks_added:
        origin = ""
    elif embedded == report.chunks_added:
        origin = " (all embedded now)"
    elif cached == report.chunks_added:
        origin = " (all from the embedding cache)"
    else:
        origin = (
            " ("
            + ", ".join(
                f"{count} {what}"
                for count, what in (
                    (embedded, "embedded now"),
                    (cached, "from the embedding cache"),
                    (waiting, "keyword-searchable, waiting for their vectors"),
                )
                if count
            )
            + ")"
        )
    chunks = (
        f"[bold]chunks[/]: {report.chunks_added} added{origin}, "
        f"{report.chunks_removed} removed  {seconds}"
    )
    return f"{documents}\n{chunks}"


def show_answer(events: Iterator[AnswerEvent], as_json: bool) -> None:
    """Print a generated answer's text as it arrives, then the verified answer and its
    sources; with --json only the final answer."""
    streamed: list[str] = []
    for event in events:
        if event.answer is None:
            if not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
                streamed.append(event.text)
            continue
        if as_json:
            emit_json(event.answer)
            return
        if streamed:
            sys.stdout.write("\n\n")
        print_answer(event.answer, "".join(streamed))


def print_answer(answer: Answer, streamed: str = "") -> None:
    """The answer and its sources; after a streamed draft, what verification changed."""
    verification = answer.verification
    if streamed and verification is not None:
        if verification.notice:
            console.print(f"[yellow]{escape(verification.notice)}[/]")
        for sentence in verification.sentences:
            if not sentence.supported:
                console.print(f"[dim]  removed: {escape(sentence.text)} ({sentence.reason})[/]")
    if not streamed or " ".join(streamed.split()) != " ".join(answer.text.split()):
        style = "bold" if answer.found else "bold yellow"
        text = escape(answer.text)
        for citation in answer.citations:
            text = text.replace(f"\\[{citation.n}]", f"[bold cyan]\\[{citation.n}][/]")
        if streamed and answer.found:
            console.print("[bold]Verified answer[/]")
        console.print(f"[{style}]{text}[/]")
        console.print()
    if answer.cached:
        console.print("[dim](from the answer cache)[/]")
    if answer.citations:
        header = (
            "Sources"
            if answer.found
            else ("最接近的来源" if answer.language == "zh" else "Nearest sources")
        )
        console.print(f"[bold]{header}[/]")
    for citation in answer.citations:
        hit = citation.hit
        heading = " > ".join(hit.heading_path)
        console.print(
            f"[bold cyan]\\[{citation.n}][/] [green]{escape(location(hit))}[/]"
            + (f"  [dim]{escape(heading)}[/]" if heading else "")
        )
        for quote, (first, last) in zip(citation.quotes, citation.quote_lines, strict=True):
            lines = f"{first}" if first == last else f"{first}-{last}"
            console.print(f"    [dim]line {lines}:[/] {escape(' '.join(quote.split()))}")
        if not citation.quotes:
            console.print("    " + escape(snippet(hit)))


def snippet(hit: SearchHit, query: str = "", width: int = 160) -> str:
    """A hit's text on one line as its document reads rendered, starting at the first line
    that holds the most query terms (so the words searched for are on screen)."""
    lines = [line for line in as_read(hit.text, hit.kind).split("\n") if line.strip()]
    if query and lines:
        from sourcebook.index.analyzer import analyze  # loaded already by the search

        wanted = set(analyze(query))
        overlap = [len(wanted & set(analyze(line))) for line in lines]
        best = max(range(len(lines)), key=lambda i: (overlap[i], -i))
        if overlap[best]:
            lines = lines[best:]
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def parse_location(value: str) -> tuple[str, int | None, int | None]:
    path, sep, lines = value.rpartition(":")
    if sep and lines and all(part.isdigit() for part in lines.split("-", 1)):
        first, _, last = lines.partition("-")
        return path, int(first), int(last or first)
    return value, None, None


def counts(report: SyncReport) -> str:
    return (
        f"{report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{len(report.failed)} failed"
    )
