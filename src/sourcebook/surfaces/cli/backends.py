"""`sourcebook migrate`: move a knowledge base to other backends (PostgreSQL + Milvus, or
back to the embedded SQLite + tantivy/usearch) without re-embedding.

The heavy imports (drivers, the store) happen inside the command: the CLI starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sourcebook.surfaces.cli.common import KbOption, app, console, errors_to_exit, settings_for

EMBEDDED = "embedded"


@app.command()
def migrate(
    to_database: Annotated[
        str,
        typer.Option(
            "--to-database",
            help="postgresql://USER@HOST/DB for the records, or 'embedded' (SQLite in the "
            "knowledge base folder)",
        ),
    ],
    to_search: Annotated[
        str,
        typer.Option(
            "--to-search",
            help="milvus://HOST:PORT[/COLLECTION] or a Milvus Lite path for the search "
            "index, or 'embedded' (tantivy + usearch in the folder)",
        ),
    ],
    kb: KbOption = None,
) -> None:
    """Copy the knowledge base into other backends and switch to them: records (with
    ids, vectors, users, keys, audit log) and the search index, no re-embedding. Stopped
    midway, run it again: it resumes. The old backends are left as they were."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from sourcebook.kb import KnowledgeBase
    from sourcebook.store.backends import Backends, check_backends, open_store, record_backends
    from sourcebook.store.base import StoreError
    from sourcebook.store.migrate import build_index, copy_records, count_check
    from sourcebook.store.sql_records import SQLRecords

    with errors_to_exit():
        settings = settings_for(kb)
        target_backends = check_backends(
            Backends(
                None if to_database == EMBEDDED else to_database,
                None if to_search == EMBEDDED else _absolute(to_search),
            )
        )
        with KnowledgeBase(settings.kb, settings) as base:
            source = base.store
            source_backends = base.backends
            if source_backends == target_backends:
                raise StoreError(f"the knowledge base already uses {target_backends.describe()}")
            if target_backends.database == source_backends.database or (
                target_backends.database is None and source_backends.database is None
            ):
                raise StoreError(
                    "migrate copies the records to another database: give a different "
                    "--to-database (the search index alone is rebuilt by `sourcebook reindex`)"
                )
            target = open_store(
                settings.kb,
                Backends(target_backends.database, target_backends.search),
                (source.embedder_name, source.dim),
                create=True,
            )
            try:
                assert isinstance(source.records, SQLRecords)
                assert isinstance(target.records, SQLRecords)
                with Progress(
                    TextColumn("{task.description:>16}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    console=console,
                ) as bar:
                    tasks: dict[str, TaskID] = {}

                    def progress(stage: str, done: int, total: int) -> None:
                        if stage not in tasks:
                            tasks[stage] = bar.add_task(stage, total=total)
                        bar.update(tasks[stage], completed=done)

                    with source.writing():  # no writes to the source while it is copied
                        copy_records(source.records, target.records, progress)
                        build_index(target, progress)
                checks = count_check(source, target)
            finally:
                target.close()
        for check in checks:
            mark = "[green]ok[/]" if check.ok else "[bold red]differs[/]"
            console.print(f"  {check.table:>16}: {check.source:>8} -> {check.target:>8} {mark}")
        if not all(check.ok for check in checks):
            raise typer.Exit(1)
        record_backends(settings.kb, target_backends)
        console.print(f"Now using {target_backends.describe()}.")


def _absolute(search: str) -> str:
    """A Milvus Lite path as an absolute one (the URI is recorded in the folder)."""
    if "://" in search:
        return search
    return str(Path(search).resolve())
