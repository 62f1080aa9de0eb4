"""What every command shares: the app, the consoles, options, errors, output helpers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sourcebook.answer.llm import LLMError
from sourcebook.kb import KnowledgeBase
from sourcebook.models import Answer, AnswerEvent, AnswerMode, SearchHit, SyncReport
from sourcebook.settings import Settings
from sourcebook.store.access import AccessError
from sourcebook.store.embedded import Filters, StoreError
from sourcebook.text import printable

app = typer.Typer(
    help="Sourcebook: ask your own notes (Chinese, English or both), get cited answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # paths stay on one line

KbOption = Annotated[
    Path | None,
    typer.Option("--kb", help="knowledge base folder [env: SOURCEBOOK_KB; default: ./.sourcebook]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


class CliError(Exception):
    pass


@contextmanager
def errors_to_exit() -> Iterator[None]:
    try:
        yield
    except (StoreError, CliError, LLMError, AccessError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        errors.print(f"[bold red]error:[/] {escape(str(message))}")
        raise typer.Exit(1) from None


def settings_for(kb: Path | None) -> Settings:
    settings = Settings()
    if kb is not None:
        settings.kb = kb
    return settings


def kb_exists(settings: Settings) -> bool:
    """Whether the folder holds a knowledge base (its SQLite records, or the backends
    `init` recorded for it)."""
    return (settings.kb / "sourcebook.db").exists() or (settings.kb / "backends.json").exists()


def open_kb(kb: Path | None, create: bool = False) -> KnowledgeBase:
    settings = settings_for(kb)
    exists = kb_exists(settings)
    if create and not exists:
        console.print(f"Created knowledge base at [bold]{escape(str(settings.kb))}[/]")
    return KnowledgeBase(settings.kb, settings, create=create and not exists)


def emit_json(data: Any) -> None:
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
        paths = [c.hit.path for c in answer.citations]
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
    where = f"{display_path(hit.path)}:{hit.line_start}-{hit.line_end}"
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
    if quiet or not console.is_terminal:
        return run(None)  # type: ignore[no-any-return]
    with Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=None)

        def update(done: int, total: int, path: str) -> None:
            progress.update(
                task,
                completed=done,
                total=total,
                description=display_path(path)[-50:] if path else "",
            )

        return run(update)  # type: ignore[no-any-return]


def finish_report(report: SyncReport, as_json: bool) -> None:
    if as_json:
        emit_json(report)
    else:
        console.print(
            f"[bold]documents[/]: {report.added} added, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.removed} removed, "
            f"[{'red' if report.failed else 'green'}]{len(report.failed)} failed[/]"
            + (f", {len(report.skipped)} skipped (unsupported type)" if report.skipped else "")
        )
        console.print(
            f"[bold]chunks[/]: {report.chunks_added} added ({report.chunks_embedded} embedded, "
            f"the rest from cache), {report.chunks_removed} removed  [dim]{report.seconds:.1f}s[/]"
        )
        for issue in report.failed:
            errors.print(
                f"[red]failed[/] {escape(display_path(issue.path))}: "
                + escape(printable(issue.reason))
            )
    if report.failed:
        raise typer.Exit(2)


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
            console.print("    " + escape(snippet(hit.text)))


def snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
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
