"""The `sourcebook` command line. Every command goes through `KnowledgeBase`.

Exit codes: 0 success; 1 error (bad input, missing knowledge base); 2 the command ran but
some files could not be indexed (they are listed with their reasons).

Whoever runs the command line can read the knowledge base's files, so it acts as the
local user, who may read and change everything; its calls are recorded in the audit log
as user "local", surface "cli".
"""

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
from rich.table import Table

from sourcebook.answer.chat import ChatSession
from sourcebook.answer.generation import final_answer
from sourcebook.answer.llm import LLMError
from sourcebook.index.embedders import EMBEDDERS
from sourcebook.kb import KnowledgeBase
from sourcebook.models import Answer, AnswerEvent, AnswerMode, SearchHit, SyncReport, User
from sourcebook.settings import Settings
from sourcebook.store.access import AccessError, audited
from sourcebook.store.embedded import Filters, StoreError

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
def _errors_to_exit() -> Iterator[None]:
    try:
        yield
    except (StoreError, CliError, LLMError, AccessError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        errors.print(f"[bold red]error:[/] {escape(str(message))}")
        raise typer.Exit(1) from None


def _settings(kb: Path | None) -> Settings:
    settings = Settings()
    if kb is not None:
        settings.kb = kb
    return settings


def _open(kb: Path | None, create: bool = False) -> KnowledgeBase:
    settings = _settings(kb)
    exists = (settings.kb / "sourcebook.db").exists()
    if create and not exists:
        console.print(f"Created knowledge base at [bold]{escape(str(settings.kb))}[/]")
    return KnowledgeBase(settings.kb, settings, create=create and not exists)


def _emit_json(data: Any) -> None:
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


def _record(
    base: KnowledgeBase,
    action: str,
    query: str | None = None,
    documents: list[str] | None = None,
    detail: str | None = None,
) -> None:
    base.access.record(LOCAL_USER, "cli", action, query, documents or [], detail)


def _record_answer(base: KnowledgeBase, question: str) -> Callable[[Answer], None]:
    """A recorder for `audited`: the answer to `question`, with the documents cited."""

    def record(answer: Answer) -> None:
        state = "found" if answer.found else "not found"
        paths = [c.hit.path for c in answer.citations]
        _record(base, "ask", question, paths, f"{answer.mode}, {state}")

    return record


def _display_path(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _location(hit: SearchHit) -> str:
    where = f"{_display_path(hit.path)}:{hit.line_start}-{hit.line_end}"
    if hit.page_start:
        pages = (
            f"p.{hit.page_start}"
            if hit.page_start == hit.page_end
            else f"pp.{hit.page_start}-{hit.page_end}"
        )
        where += f" ({pages})"
    return where


# --- writing commands --------------------------------------------------------------------


@app.command()
def init(
    kb: KbOption = None,
    model: Annotated[
        str | None, typer.Option(help=f"embedding model: {', '.join(EMBEDDERS)}")
    ] = None,
) -> None:
    """Create an empty knowledge base."""
    with _errors_to_exit():
        settings = _settings(kb)
        if model:
            settings.embedder = model
        if (settings.kb / "sourcebook.db").exists():
            raise CliError(f"a knowledge base already exists at {settings.kb}")
        with KnowledgeBase.create(settings.kb, settings) as base:
            console.print(
                f"Created knowledge base at [bold]{escape(str(base.path))}[/] "
                f"(embedding model: {base.store.embedder_name})"
            )


@app.command()
def add(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to index")],
    kb: KbOption = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", "-i", help="only files matching this glob (repeatable)"),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude", "-x", help="skip files or folders matching this glob (repeatable)"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Index files and folders (recursively) and remember them for `sync`."""
    with _errors_to_exit(), _open(kb, create=True) as base:
        report = _with_progress(
            lambda cb: base.add(paths, include or [], exclude or [], cb), quiet=as_json
        )
        sources = [str(p.expanduser().resolve()) for p in paths]
        _record(base, "add", documents=sources, detail=_counts(report))
        _finish_report(report, as_json)


@app.command()
def sync(kb: KbOption = None, as_json: JsonOption = False) -> None:
    """Re-read every source: index new and changed files, drop deleted ones."""
    with _errors_to_exit(), _open(kb) as base:
        report = _with_progress(base.sync, quiet=as_json)
        _record(base, "sync", detail=_counts(report))
        _finish_report(report, as_json)


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to forget")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove documents (a file, or everything under a folder) from every index."""
    with _errors_to_exit(), _open(kb) as base:
        removed = base.remove(paths)
        _record(base, "remove", documents=removed)
        if as_json:
            _emit_json(removed)
            return
        if not removed:
            raise CliError("nothing in the knowledge base matches " + ", ".join(map(str, paths)))
        for path in removed:
            console.print(f"removed {escape(_display_path(path))}")


@app.command()
def reindex(
    kb: KbOption = None,
    model: Annotated[str | None, typer.Option(help="switch to this embedding model")] = None,
) -> None:
    """Re-embed every chunk (with another model if given) and rebuild the indexes."""
    with _errors_to_exit(), _open(kb) as base:
        chunks = base.reindex(model)
        console.print(f"Re-indexed {chunks} chunks with {base.store.embedder_name}")


# --- reading commands --------------------------------------------------------------------


def _filters(
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


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    kb: KbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, max=1000)] = 10,
    path: PathFilter = None,
    tag: TagFilter = None,
    after: AfterFilter = None,
    before: BeforeFilter = None,
    as_json: JsonOption = False,
) -> None:
    """Hybrid (BM25 + dense) search over the chunks."""
    with _errors_to_exit(), _open(kb) as base:
        hits = base.search(query, limit, _filters(path, tag, after, before))
        _record(base, "search", query, [h.path for h in hits])
        if as_json:
            _emit_json(hits)
            return
        if not hits:
            console.print("[yellow]no results[/]")
        for rank, hit in enumerate(hits, start=1):
            ranks = "  ".join(f"{name} #{r}" for name, r in hit.ranks.items())
            console.print(
                f"[bold cyan]{rank:>2}.[/] [green]{escape(_location(hit))}[/]  "
                f"[dim]{escape(' > '.join(hit.heading_path))}  {ranks}[/]"
            )
            console.print("    " + escape(_snippet(hit.text)))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="a question, in Chinese or English")],
    kb: KbOption = None,
    path: PathFilter = None,
    tag: TagFilter = None,
    after: AfterFilter = None,
    before: BeforeFilter = None,
    mode: ModeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer from the knowledge base, citing a source after every sentence."""
    with _errors_to_exit(), _open(kb) as base:
        events = base.ask_stream(question, _filters(path, tag, after, before), mode)
        _show_answer(audited(events, _record_answer(base, question)), as_json)


@app.command()
def chat(
    kb: KbOption = None,
    path: PathFilter = None,
    tag: TagFilter = None,
    after: AfterFilter = None,
    before: BeforeFilter = None,
    mode: ModeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask questions one per line (from the terminal or piped in); follow-ups such as
    "那它的缺点呢？" are understood from the conversation. Ends at end of input."""
    with _errors_to_exit(), _open(kb) as base:
        session = ChatSession(base, mode, _filters(path, tag, after, before))
        interactive = sys.stdin.isatty() and not as_json
        while True:
            if interactive:
                console.print("[bold green]?[/] ", end="")
            line = sys.stdin.readline()
            if not line:
                break
            question = line.strip()
            if not question:
                continue
            standalone = session.standalone(question)
            if standalone != question and not as_json:
                console.print(f"[dim]→ {escape(standalone)}[/]")
            events = audited(
                session.ask_stream(question, standalone), _record_answer(base, question)
            )
            if as_json:  # one line per turn
                final_answer(events)
                sys.stdout.write(session.history[-1].model_dump_json() + "\n")
            else:
                _show_answer(events, as_json=False)
                console.print()


@app.command()
def show(
    document: Annotated[str, typer.Argument(help="PATH or PATH:START-END")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a document's indexed text, or a line range of it (as cited)."""
    with _errors_to_exit(), _open(kb) as base:
        path, start, end = _parse_location(document)
        text = base.document_text(path, start, end)
        lines = f"lines {start}-{end}" if start else None
        _record(base, "document", documents=[str(Path(path).expanduser().resolve())], detail=lines)
        first = start or 1
        if as_json:
            _emit_json({"path": path, "line_start": first, "text": text})
            return
        for offset, line in enumerate(text.split("\n")):
            console.print(f"[dim]{first + offset:>5}[/]  {escape(line)}", highlight=False)


@app.command()
def status(kb: KbOption = None, as_json: JsonOption = False) -> None:
    """Documents, chunks, model, size and sources of the knowledge base."""
    with _errors_to_exit(), _open(kb) as base:
        info = base.status()
        if as_json:
            _emit_json(info)
            return
        table = Table(show_header=False, box=None)
        table.add_row("knowledge base", info.path)
        table.add_row("embedding model", info.embedder)
        table.add_row("documents", str(info.documents))
        table.add_row("chunks", str(info.chunks))
        table.add_row("size", f"{info.store_bytes / 1e6:.1f} MB")
        table.add_row("indexes", "up to date" if info.index_consistent else "[yellow]behind[/]")
        for source in info.sources:
            table.add_row("source", _display_path(source))
        console.print(table)


@app.command()
def bench(
    chunks: Annotated[
        list[int] | None, typer.Option("--chunks", help="store sizes to test")
    ] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="embedding models")] = None,
    queries: Annotated[int, typer.Option(help="queries per store")] = 200,
    work: Annotated[Path, typer.Option(help="scratch folder")] = Path("benchmarks/work"),
    output: Annotated[Path | None, typer.Option(help="write JSON results here")] = None,
) -> None:
    """Measure ingestion throughput and hybrid query latency (see benchmarks/)."""
    from sourcebook.evaluation.bench import run_benchmark

    with _errors_to_exit():
        results = run_benchmark(chunks or [10_000], model or None, queries, work, console)
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=2, ensure_ascii=False))


@app.command("eval")
def evaluate(
    datasets: Annotated[
        list[str] | None,
        typer.Argument(
            help="cranfield, cmrc2018, study-notes, a BEIR folder or a SQuAD-style .json"
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="test (held out), tune, or all")] = "test",
    model: Annotated[list[str] | None, typer.Option("--model", help="embedding models")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many queries")] = None,
    answers: Annotated[bool, typer.Option(help="also evaluate extractive answers")] = True,
    answer_limit: Annotated[
        int | None, typer.Option(help="evaluate answers on at most this many queries")
    ] = None,
    generate: Annotated[
        bool, typer.Option(help="also evaluate generated answers (SOURCEBOOK_LLM_* model)")
    ] = False,
    work: Annotated[Path, typer.Option(help="scratch folder")] = Path("benchmarks/work/eval"),
    output: Annotated[Path, typer.Option(help="JSON results")] = Path(
        "benchmarks/eval/results.json"
    ),
    chart: Annotated[Path | None, typer.Option(help="PNG chart")] = Path(
        "benchmarks/eval/chart.png"
    ),
) -> None:
    """Measure retrieval and answers on evaluation data through the real pipeline."""
    from sourcebook.evaluation.run import run_eval, summarize, write_chart
    from sourcebook.settings import DEFAULT_EMBEDDER

    with _errors_to_exit():
        if split not in ("test", "tune", "all"):
            raise CliError("--split must be test, tune or all")
        results = run_eval(
            datasets or ["cranfield", "cmrc2018"],
            split,
            model or [DEFAULT_EMBEDDER],
            Settings(),
            work,
            limit,
            answers,
            lambda message: console.print(f"[dim]{escape(message)}[/]"),
            answer_limit,
            generate,
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        console.print(summarize(results), markup=False)
        # --chart "" turns the chart off
        if chart is not None and chart != Path() and write_chart(results, chart):
            console.print(f"chart: {chart}")


@app.command()
def serve(
    kb: KbOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="address to listen on: loopback only (127.0.0.1, ::1, localhost) unless "
            "the knowledge base has users (then every request needs an API key)"
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8321,
) -> None:
    """Serve the HTTP API (/api, docs at /docs) and an OpenAI-compatible endpoint (/v1)."""
    # imported here: the web stack is not needed by the other commands
    from sourcebook.surfaces.server import check_host, run_server

    with _errors_to_exit(), _open(kb) as base:
        authenticated = base.access.has_users()
        check_host(host, authenticated)
        where = f"[{host}]" if ":" in host else host
        console.print(
            f"Serving [bold]{escape(str(base.path))}[/] at http://{where}:{port} "
            f"(API docs: http://{where}:{port}/docs, OpenAI base URL: "
            f"http://{where}:{port}/v1, MCP: http://{where}:{port}/mcp)"
            + ("; every request needs an API key" if authenticated else "")
        )
        run_server(base, host, port)


@app.command()
def mcp(
    kb: KbOption = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="SOURCEBOOK_API_KEY",
            help="read as this API key's user (their groups' documents only); "
            "default: the local user, who reads everything",
        ),
    ] = None,
) -> None:
    """Serve the knowledge base to an MCP client (Claude Desktop, an IDE, an agent) over
    stdin/stdout: tools search, ask, get_document and list_collections."""
    # imported here: the MCP SDK and the web stack are not needed by the other commands
    from sourcebook.surfaces.mcp_server import run_stdio
    from sourcebook.surfaces.server import LOCAL_USER as LOCAL_CALLER
    from sourcebook.surfaces.server import Caller

    with _errors_to_exit(), _open(kb) as base:
        caller = LOCAL_CALLER
        if key is not None:
            user = base.access.authenticate(key.strip())
            if user is None:
                raise CliError(
                    "the API key is not valid (unknown or revoked); an admin creates one "
                    "with `sourcebook key create NAME`"
                )
            caller = Caller.of(user)
        # stdout carries the protocol: anything else goes to stderr
        errors.print(
            f"Sourcebook MCP server on stdio for {escape(str(base.path))} as {caller.name}"
        )
        run_stdio(base, caller)


# --- output helpers ----------------------------------------------------------------------


def _with_progress(run: Any, quiet: bool) -> SyncReport:
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
                description=_display_path(path)[-50:] if path else "",
            )

        return run(update)  # type: ignore[no-any-return]


def _finish_report(report: SyncReport, as_json: bool) -> None:
    if as_json:
        _emit_json(report)
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
                f"[red]failed[/] {escape(_display_path(issue.path))}: {escape(issue.reason)}"
            )
    if report.failed:
        raise typer.Exit(2)


def _show_answer(events: Iterator[AnswerEvent], as_json: bool) -> None:
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
            _emit_json(event.answer)
            return
        if streamed:
            sys.stdout.write("\n\n")
        _print_answer(event.answer, "".join(streamed))


def _print_answer(answer: Answer, streamed: str = "") -> None:
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
            f"[bold cyan]\\[{citation.n}][/] [green]{escape(_location(hit))}[/]"
            + (f"  [dim]{escape(heading)}[/]" if heading else "")
        )
        for quote, (first, last) in zip(citation.quotes, citation.quote_lines, strict=True):
            lines = f"{first}" if first == last else f"{first}-{last}"
            console.print(f"    [dim]line {lines}:[/] {escape(' '.join(quote.split()))}")
        if not citation.quotes:
            console.print("    " + escape(_snippet(hit.text)))


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _parse_location(value: str) -> tuple[str, int | None, int | None]:
    path, sep, lines = value.rpartition(":")
    if sep and lines and all(part.isdigit() for part in lines.split("-", 1)):
        first, _, last = lines.partition("-")
        return path, int(first), int(last or first)
    return value, None, None


def _counts(report: SyncReport) -> str:
    return (
        f"{report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{len(report.failed)} failed"
    )


# --- teams: users, keys, groups, access rules, audit log ---------------------------------

user_app = typer.Typer(help="Users of a shared knowledge base (served with API keys).")
key_app = typer.Typer(help="API keys: created once per person, revocable.")
group_app = typer.Typer(help="Put users into groups, or take them out.")
access_app = typer.Typer(help="Which groups may read which documents.")
for sub, name in (
    (user_app, "user"),
    (key_app, "key"),
    (group_app, "group"),
    (access_app, "access"),
):
    sub.info.no_args_is_help = True
    app.add_typer(sub, name=name)

GroupsOption = Annotated[
    list[str] | None, typer.Option("--group", "-g", help="a group the user belongs to (repeatable)")
]


def _print_users(users: list[User]) -> None:
    if not users:
        console.print("[yellow]no users: the server serves only this machine, without keys[/]")
        return
    table = Table("user", "admin", "groups", "active keys", "created", box=None)
    for user in users:
        table.add_row(
            escape(user.name),
            "yes" if user.admin else "",
            escape(", ".join(user.groups)),
            str(user.active_keys),
            _when(user.created),
        )
    console.print(table)


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, . _ @ -)")],
    admin: Annotated[
        bool, typer.Option("--admin", help="may read every document and change the knowledge base")
    ] = False,
    group: GroupsOption = None,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user. Once a knowledge base has users, every API request needs a key."""
    with _errors_to_exit(), _open(kb) as base:
        user = base.access.add_user(name, admin, group or [])
        _record(base, "user.add", detail=_user_detail(user))
        if as_json:
            _emit_json(user)
            return
        console.print(
            f"added {_user_detail(user)}; create a key with `sourcebook key create {name}`"
        )


def _user_detail(user: User) -> str:
    role = "admin" if user.admin else "user"
    groups = f" in {', '.join(user.groups)}" if user.groups else ""
    return f"{role} {user.name}{groups}"


@user_app.command("list")
def user_list(kb: KbOption = None, as_json: JsonOption = False) -> None:
    """List users with their groups and number of active keys."""
    with _errors_to_exit(), _open(kb) as base:
        users = base.access.users()
        if as_json:
            _emit_json(users)
            return
        _print_users(users)


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="user name")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a user and revoke their keys. Without users, the server is single-user again
    (loopback only, no keys)."""
    with _errors_to_exit(), _open(kb) as base:
        user = base.access.remove_user(name)
        _record(base, "user.remove", detail=_user_detail(user))
        if as_json:
            _emit_json(user)
            return
        console.print(f"removed {escape(_user_detail(user))} and {user.active_keys} key(s)")


@key_app.command("create")
def key_create(
    user: Annotated[str, typer.Argument(help="the user the key belongs to")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key and print it; it is shown only this once (only its hash is kept)."""
    with _errors_to_exit(), _open(kb) as base:
        info, key = base.access.create_key(user)
        _record(base, "key.create", detail=f"{info.prefix} (id {info.id}) for {user}")
        if as_json:
            _emit_json({**info.model_dump(mode="json"), "key": key})
            return
        errors.print(
            f"API key {info.id} for {escape(user)} (shown only now; revoke it with "
            f"`sourcebook key revoke {info.prefix}`):"
        )
        sys.stdout.write(key + "\n")


@key_app.command("list")
def key_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="only this user's keys")] = None,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List API keys (their prefixes, never the keys)."""
    with _errors_to_exit(), _open(kb) as base:
        keys = base.access.keys(user)
        if as_json:
            _emit_json(keys)
            return
        table = Table("id", "prefix", "user", "created", "revoked", box=None)
        for k in keys:
            revoked = _when(k.revoked) if k.revoked else ""
            table.add_row(str(k.id), k.prefix + "…", escape(k.user), _when(k.created), revoked)
        console.print(table if keys else "[yellow]no API keys[/]")


@key_app.command("revoke")
def key_revoke(
    key: Annotated[str, typer.Argument(help="the key's id, its prefix (sb_XXXXXXXX) or the key")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key: requests with it are refused from now on."""
    with _errors_to_exit(), _open(kb) as base:
        info = base.access.revoke_key(key)
        _record(base, "key.revoke", detail=f"{info.prefix} (id {info.id}) of {info.user}")
        if as_json:
            _emit_json(info)
            return
        console.print(f"revoked key {info.id} ({info.prefix}…) of {escape(info.user)}")


@group_app.command("add")
def group_add(
    user: Annotated[str, typer.Argument(help="user name")],
    groups: Annotated[list[str], typer.Argument(help="groups to add the user to")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user to groups."""
    with _errors_to_exit(), _open(kb) as base:
        updated = base.access.add_to_groups(user, groups)
        _record(base, "group.add", detail=f"{user} + {', '.join(groups)}")
        _show_user(updated, as_json)


@group_app.command("remove")
def group_remove(
    user: Annotated[str, typer.Argument(help="user name")],
    groups: Annotated[list[str], typer.Argument(help="groups to take the user out of")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a user out of groups."""
    with _errors_to_exit(), _open(kb) as base:
        updated = base.access.remove_from_groups(user, groups)
        _record(base, "group.remove", detail=f"{user} - {', '.join(groups)}")
        _show_user(updated, as_json)


def _show_user(user: User, as_json: bool) -> None:
    if as_json:
        _emit_json(user)
    else:
        _print_users([user])


@access_app.command("set")
def access_set(
    pattern: Annotated[
        str, typer.Argument(help="path glob, as --path: 'hr/*', '*.pdf', '/abs/folder/*'")
    ],
    groups: Annotated[list[str], typer.Argument(help="the groups that may read them")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Only these groups (and admins) may read documents matching PATTERN, now and when
    indexed later. A document matched by several rules may be read by each rule's groups;
    one uploaded with its own groups keeps them. Documents no rule matches: everyone."""
    with _errors_to_exit(), _open(kb) as base:
        base.set_access_rule(pattern, groups)
        _record(base, "access.set", pattern, _matching(base, pattern), ", ".join(groups))
        _show_rules(base, as_json)


@access_app.command("remove")
def access_remove(
    pattern: Annotated[str, typer.Argument(help="the rule's path glob")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a rule: the documents it matched are readable by everyone again (unless
    another rule matches them)."""
    with _errors_to_exit(), _open(kb) as base:
        base.set_access_rule(pattern, [])
        _record(base, "access.remove", pattern, _matching(base, pattern))
        _show_rules(base, as_json)


@access_app.command("list")
def access_list(
    documents: Annotated[
        bool, typer.Option("--documents", help="also list each restricted document")
    ] = False,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The access rules (and with --documents, who may read each restricted document)."""
    with _errors_to_exit(), _open(kb) as base:
        _show_rules(base, as_json, documents)


def _matching(base: KnowledgeBase, pattern: str) -> list[str]:
    return [d.path for d in base.documents_matching(pattern)]


def _show_rules(base: KnowledgeBase, as_json: bool, documents: bool = False) -> None:
    rules = base.access_rules()
    restricted = base.document_groups()
    if as_json:
        data: dict[str, Any] = {"rules": rules}
        if documents:
            data["documents"] = restricted
        _emit_json(data)
        return
    if not rules:
        console.print("[yellow]no access rules: every user may read every document[/]")
    for pattern, groups in rules.items():
        console.print(f"[green]{escape(pattern)}[/] → {escape(', '.join(groups))}")
    if documents:
        for path, groups in restricted.items():
            console.print(f"  {escape(_display_path(path))}  [dim]{escape(', '.join(groups))}[/]")


def _moment(value: str | None, option: str) -> datetime | None:
    """An ISO date or time; without a time zone, local time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"{option} {value!r} is not an ISO date or time (2025-03-01, 2025-03-01T14:30)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


@app.command()
def audit(
    user: Annotated[str | None, typer.Option("--user", "-u", help="only this user")] = None,
    since: Annotated[str | None, typer.Option(help="from this ISO date/time on")] = None,
    until: Annotated[str | None, typer.Option(help="up to this ISO date/time")] = None,
    action: Annotated[
        str | None, typer.Option(help="only this action (search, ask, document, upload, …)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="newest N entries")] = 50,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log, newest first: who searched, asked, read or changed what, when, and
    through which surface (cli, http, openai, mcp)."""
    with _errors_to_exit():
        start, end = _moment(since, "--since"), _moment(until, "--until")
        if start and end and end < start:
            raise CliError("--until is before --since")
        with _open(kb) as base:
            entries = base.access.audit(user, start, end, action, limit)
        if as_json:
            _emit_json(entries)
            return
        if not entries:
            console.print("[yellow]no audit entries[/]")
        for entry in entries:
            query = f" [bold]{escape(entry.query)}[/]" if entry.query else ""
            detail = f" [dim]({escape(entry.detail)})[/]" if entry.detail else ""
            console.print(
                f"[dim]{_when(entry.at)}[/] {escape(entry.user)} [cyan]{entry.surface}[/] "
                f"{entry.action}{query}{detail}"
            )
            for path in entry.documents:
                console.print(f"    {escape(_display_path(path))}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
