"""search, ask and chat."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from sourcebook.surfaces.cli.common import (
    AfterFilter,
    BeforeFilter,
    JsonOption,
    KbOption,
    ModeOption,
    PathFilter,
    TagFilter,
    app,
    audit_log,
    console,
    emit_json,
    errors_to_exit,
    filters_from,
    location,
    open_kb,
    record_answer,
    show_answer,
    snippet,
)


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
    with errors_to_exit(), open_kb(kb) as base:
        hits = base.search(query, limit, filters_from(path, tag, after, before))
        audit_log(base, "search", query, [h.absolute_path for h in hits])
        if as_json:
            emit_json(hits)
            return
        if not hits:
            console.print("[yellow]no results[/]")
        for rank, hit in enumerate(hits, start=1):
            ranks = "  ".join(f"{name} #{r}" for name, r in hit.ranks.items())
            console.print(
                f"[bold cyan]{rank:>2}.[/] [green]{escape(location(hit))}[/]  "
                f"[dim]{escape(' > '.join(hit.heading_path))}  {ranks}[/]"
            )
            console.print("    " + escape(snippet(hit, query)))


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
    from sourcebook.store.access import audited

    with errors_to_exit(), open_kb(kb) as base:
        events = base.ask_stream(question, filters_from(path, tag, after, before), mode)
        show_answer(audited(events, record_answer(base, question)), as_json)


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
    from sourcebook.answer.chat import ChatSession
    from sourcebook.answer.generation import final_answer
    from sourcebook.store.access import audited

    with errors_to_exit(), open_kb(kb) as base:
        session = ChatSession(base, mode, filters_from(path, tag, after, before))
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
                session.ask_stream(question, standalone), record_answer(base, question)
            )
            if as_json:  # one line per turn
                final_answer(events)
                sys.stdout.write(session.history[-1].model_dump_json() + "\n")
            else:
                show_answer(events, as_json=False)
                console.print()
