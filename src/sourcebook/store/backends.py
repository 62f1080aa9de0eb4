"""Which record store and search index a knowledge base uses: configuration, not code.

- records: SQLite in the knowledge base folder (default), or PostgreSQL
  (`SOURCEBOOK_DATABASE_URL=postgresql://…`, or `sourcebook init --database URL`);
- search: tantivy + usearch in the folder (default), or Milvus
  (`SOURCEBOOK_SEARCH_URI=milvus://host:port[/collection]`, or a Milvus Lite path).

`sourcebook init --database … --search …` writes the choice into `kb/backends.json`, so
every later command and server on that folder uses the same backends without the
environment variables (which, when set, win). The folder itself always exists: uploads
are kept there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sourcebook.store.base import StoreError
from sourcebook.store.composed import KnowledgeStore

if TYPE_CHECKING:  # the drivers are imported only when a backend needs them
    from sourcebook.store.milvus import MilvusSearchIndex
    from sourcebook.store.postgres import PostgresRecords

BACKENDS_FILE = "backends.json"


@dataclass(frozen=True)
class Backends:
    """None: the embedded default."""

    database: str | None = None
    search: str | None = None

    @property
    def embedded(self) -> bool:
        return self.database is None and self.search is None

    def describe(self) -> str:
        from sourcebook.store.postgres import redacted

        records = "SQLite" if self.database is None else f"PostgreSQL {redacted(self.database)}"
        search = "tantivy + usearch" if self.search is None else f"Milvus {self.search}"
        return f"records: {records}; search: {search}"


def check_backends(backends: Backends) -> Backends:
    if backends.database is not None and not backends.database.startswith(
        ("postgresql://", "postgres://")
    ):
        raise StoreError(
            f"unsupported database URL {backends.database!r}: use postgresql://USER@HOST/DB "
            "(or leave it unset for SQLite in the knowledge base folder)"
        )
    return backends


def recorded_backends(folder: Path) -> Backends:
    """The backends `init` recorded in `folder` (the embedded default if none)."""
    try:
        data = json.loads((folder / BACKENDS_FILE).read_text())
    except FileNotFoundError:
        return Backends()
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {folder / BACKENDS_FILE}: {exc}") from exc
    return Backends(data.get("database"), data.get("search"))


def record_backends(folder: Path, backends: Backends) -> None:
    """Remember the backends in `folder` (readable by its owner only: a database URL may
    hold a password)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / BACKENDS_FILE
    if backends.embedded:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"database": backends.database, "search": backends.search}))
    tmp.chmod(0o600)
    os.replace(tmp, path)


def configured_backends(folder: Path, database_url: str | None, search_uri: str | None) -> Backends:
    """The settings' backends where given, else those recorded in the folder."""
    recorded = recorded_backends(folder)
    return check_backends(
        Backends(database_url or recorded.database, search_uri or recorded.search)
    )


def open_store(
    folder: Path,
    backends: Backends,
    model: tuple[str, int] | None,
    create: bool = False,
    exact_vector_search_below: int = 20_000,
) -> KnowledgeStore:
    """The knowledge base's store on `backends`; with `create`, made if missing."""
    from sourcebook.store.embedded import EmbeddedStore

    if backends.embedded:
        return EmbeddedStore(folder, model, create, exact_vector_search_below)
    from sourcebook.store.local_index import LocalSearchIndex
    from sourcebook.store.sqlite import SQLiteRecords

    if backends.database is None:
        records: SQLiteRecords | PostgresRecords = SQLiteRecords(folder, model, create)
    else:
        from sourcebook.store.postgres import PostgresRecords

        folder.mkdir(parents=True, exist_ok=True)
        records = PostgresRecords(backends.database, model, create)
    try:
        if backends.search is None:
            index: LocalSearchIndex | MilvusSearchIndex = LocalSearchIndex(
                folder, records.dim, records.chunk_layout, exact_vector_search_below
            )
        else:
            from sourcebook.store.milvus import MilvusSearchIndex, parse_uri

            uri, collection = parse_uri(backends.search, folder)
            index = MilvusSearchIndex(uri, records.dim, collection)
    except BaseException:
        records.close()
        raise
    return KnowledgeStore(folder, records, index)
