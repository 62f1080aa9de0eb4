"""Commands that change what is indexed (init, add, sync, remove, reindex) and read it back
(show, status)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sourcebook.literals import EMBEDDER_NAMES
from sourcebook.surfaces.cli.common import (
    CliError,
    JsonOption,
    KbOption,
    app,
    audit_log,
    console,
    counts,
    display_path,
    emit_json,
    errors_to_exit,
    finish_report,
    kb_exists,
    open_kb,
    parse_location,
    settings_for,
    with_progress,
)

WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="embed every new chunk before returning (--no-wait: return as soon as the "
        "files are keyword-searchable; `watch`, `serve` or the next `sync` embed the rest)",
    ),
]


@app.command()
def init(
    kb: KbOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"embedding model: {', '.join(EMBEDDER_NAMES)}, or server:MODEL "
            "(an OpenAI-compatible endpoint, SOURCEBOOK_EMBED_BASE_URL)"
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL for the records, postgresql://USER@HOST/DB "
            "[env: SOURCEBOOK_DATABASE_URL; default: SQLite in the folder]"
        ),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            help="Milvus for the search index, milvus://HOST:PORT[/COLLECTION] or a Milvus "
            "Lite path [env: SOURCEBOOK_SEARCH_URI; default: tantivy + usearch in the folder]"
        ),
    ] = None,
) -> None:
    """Create an empty knowledge base (in its folder, or on PostgreSQL and Milvus)."""
    from sourcebook.kb import KnowledgeBase

    with errors_to_exit():
        settings = settings_for(kb)
        if model:
            settings.embedder = model
        if database:
            settings.database_url = database
        if search:
            settings.search_uri = search if "://" in search else str(Path(search).resolve())
        if kb_exists(settings):
            raise CliError(f"a knowledge base already exists at {settings.kb}")
        with KnowledgeBase.create(settings.kb, settings) as base:
            if base.store.counts()[0]:
                raise CliError(f"a knowledge base already exists in {base.store.location}")
            console.print(
                f"Created knowledge base at [bold]{escape(str(base.path))}[/] "
                f"(embedding model: {base.store.embedder_name}; {base.backends.describe()})"
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
    wait: WaitOption = True,
    as_json: JsonOption = False,
) -> None:
    """Index files and folders (recursively) and remember them for `sync`."""
    from sourcebook.paths import absolute_path

    with errors_to_exit(), open_kb(kb, create=True) as base:
        report = with_progress(
            lambda files, chunks: base.add(
                paths, include or [], exclude or [], files, wait=wait, embed_progress=chunks
            ),
            quiet=as_json,
        )
        sources = [str(absolute_path(p)) for p in paths]
        audit_log(base, "add", documents=sources, detail=counts(report))
        finish_report(report, as_json)


@app.command()
def sync(kb: KbOption = None, wait: WaitOption = True, as_json: JsonOption = False) -> None:
    """Re-read every source: index new and changed files, drop deleted ones."""
    with errors_to_exit(), open_kb(kb) as base:
        report = with_progress(
            lambda files, chunks: base.sync(files, wait=wait, embed_progress=chunks),
            quiet=as_json,
        )
        audit_log(base, "sync", detail=counts(report))
        finish_report(report, as_json)


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to forget")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove documents (a file, or everything under a folder) from every index."""
    with errors_to_exit(), open_kb(kb) as base:
        removed = base.remove(paths)
        audit_log(base, "remove", documents=removed)
        if as_json:
            emit_json(removed)
            return
        if not removed:
            raise CliError("nothing in the knowledge base matches " + ", ".join(map(str, paths)))
        for path in removed:
            console.print(f"removed {escape(display_path(path))}")


@app.command()
def reindex(
    kb: KbOption = None,
    model: Annotated[str | None, typer.Option(help="switch to this embedding model")] = None,
) -> None:
    """Re-embed every chunk (with another model if given) and rebuild the indexes."""
    with errors_to_exit(), open_kb(kb) as base:
        chunks = base.reindex(model)
        console.print(f"Re-indexed {chunks} chunks with {base.store.embedder_name}")


@app.command()
def show(
    document: Annotated[
        str,
        typer.Argument(help="PATH or PATH:START-END, the path as added or absolute"),
    ],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a document's indexed text, or a line range of it (as cited)."""
    with errors_to_exit(), open_kb(kb) as base:
        path, start, end = parse_location(document)
        text = base.document_text(path, start, end)
        absolute = base.resolve_path(path)
        lines = f"lines {start}-{end}" if start else None
        audit_log(base, "document", documents=[absolute], detail=lines)
        first = start or 1
        if as_json:
            shown = base.path_names().as_added(absolute)
            emit_json({"path": shown, "absolute_path": absolute, "line_start": first, "text": text})
            return
        for offset, line in enumerate(text.split("\n")):
            console.print(f"[dim]{first + offset:>5}[/]  {escape(line)}", highlight=False)


@app.command()
def links(
    document: Annotated[str, typer.Argument(help="PATH, as added or absolute")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a note's [[wiki-links]] and the notes they name (resolved as Obsidian does)."""
    with errors_to_exit(), open_kb(kb) as base:
        found = base.links(document)
        audit_log(base, "links", documents=[base.resolve_path(document)])
        if as_json:
            emit_json(found)
            return
        for link in found:
            target = escape(display_path(link.path)) if link.path else "[yellow]no such note[/]"
            console.print(f"[dim]{link.line:>5}[/]  {escape(link.written)}  →  {target}")


@app.command()
def status(kb: KbOption = None, as_json: JsonOption = False) -> None:
    """Documents, chunks, model, size and sources of the knowledge base."""
    with errors_to_exit(), open_kb(kb) as base:
        info = base.status()
        if as_json:
            emit_json(info)
            return
        table = Table(show_header=False, box=None)
        table.add_row("knowledge base", info.path)
        table.add_row("embedding model", info.embedder)
        table.add_row("documents", str(info.documents))
        table.add_row("chunks", str(info.chunks))
        table.add_row("size", f"{info.store_bytes / 1e6:.1f} MB")
        table.add_row("indexes", "up to date" if info.index_consistent else "[yellow]behind[/]")
        if info.reembedding:
            table.add_row("embeddings", f"[yellow]{escape(info.reembedding)}[/]")
        if info.embedding:
            table.add_row("embedding", f"[yellow]{escape(info.embedding)}[/]")
        for path in info.indexed_in_part:
            note = "indexed in part: `sourcebook sync` reads it again"
            table.add_row("incomplete", f"[yellow]{escape(path)}[/] ({note})")
        for source in info.sources:
            table.add_row("source", display_path(source))
        console.print(table)
