"""Copy a knowledge base to other backends (`sourcebook migrate`): SQLite -> PostgreSQL,
tantivy/usearch -> Milvus, and back, without re-embedding (the vectors are records).

1. the records, table by table in primary-key order, in batches of `INSERT … ON CONFLICT
   DO NOTHING`: a migration stopped anywhere resumes where it stopped when run again;
2. every chunk is logged for the target's search index, which is then built from the
   copied vectors and tokens (idempotent writes, so a rerun simply redoes it);
3. the counts of both sides are compared (and the target's document frequencies with a
   recount of its chunks); only if they agree does the knowledge base folder switch to the
   new backends (`backends.json`). The source is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sourcebook.store.base import StoreError
from sourcebook.store.composed import KnowledgeStore
from sourcebook.store.sql import Row
from sourcebook.store.sql_records import SQLRecords

# (table, its columns, the key it is copied in order of: None for small tables, copied whole)
TABLES: tuple[tuple[str, tuple[str, ...], str | None], ...] = tuple(
    (table, tuple(columns.split()), key)
    for table, columns, key in (
        ("sources", "path include exclude added given", None),
        (
            "documents",
            "id path title kind tags modified size content_hash text pages indexed boxes",
            "id",
        ),
        (
            "chunks",
            "id doc_id ordinal text heading_path char_start char_end line_start line_end"
            " page_start page_end text_hash tokens",
            "id",
        ),
        # the document frequencies of the idf weights, kept with the chunks
        ("term_counts", "term chunks", "term"),
        ("vectors", "text_hash vector", "text_hash"),
        ("pending_vectors", "text_hash vector", "text_hash"),
        ("answer_cache", "key answer content_hashes created", "key"),
        ("access_rules", "pattern group_name", None),
        ("document_grants", "path group_name", None),
        ("document_groups", "path group_name", None),
        ("users", "id name admin created", None),
        ("memberships", "user_id group_name", None),
        ("api_keys", "id user_id prefix hash created revoked", "id"),
        ("audit_log", 'id at "user" surface action query documents detail', "id"),
    )
)
# meta rows that describe the knowledge base (not this copy's bookkeeping)
META_KEYS = ("schema_version", "embedder", "dim", "created", "text_version", "reembedding")
BATCH = 2_000

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class CountCheck:
    table: str
    source: int
    target: int

    @property
    def ok(self) -> bool:
        return self.source == self.target


def copy_records(source: SQLRecords, target: SQLRecords, progress: Progress) -> None:
    """Copy every table of `source` into `target` (resumable, see the module docstring)."""
    if target.counts()[0] and target.meta_value("migrating_from") != source.location:
        raise StoreError(
            f"the target {target.location} already holds a knowledge base; migrate into an "
            "empty database (or collection)"
        )
    target.set_meta_value("migrating_from", source.location)
    for records in (source, target):  # the user tables exist on both sides
        records.access_control()
    for name in META_KEYS:
        value = source.meta_value(name)
        if value is not None:
            target.set_meta_value(name, value)
    for table, columns, key in TABLES:
        total = _count(source, table)
        done = 0
        progress(table, done, total)
        for rows in _batches(source, table, columns, key):
            marks = ", ".join("?" * len(columns))
            with target.db.transaction():
                target.db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
                    " ON CONFLICT DO NOTHING",
                    rows,
                )
            done += len(rows)
            progress(table, done, total)
    target.restart_identities()


def _count(records: SQLRecords, table: str) -> int:
    return int(records.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _batches(
    source: SQLRecords, table: str, columns: tuple[str, ...], key: str | None
) -> Iterator[list[Row]]:
    select = f"SELECT {', '.join(columns)} FROM {table}"
    if key is None:
        rows = source.db.execute(select).fetchall()
        if rows:
            yield rows
        return
    position = columns.index(key)
    last: object = None
    while True:
        if last is None:
            rows = source.db.execute(f"{select} ORDER BY {key} LIMIT ?", (BATCH,)).fetchall()
        else:
            rows = source.db.execute(
                f"{select} WHERE {key} > ? ORDER BY {key} LIMIT ?", (last, BATCH)
            ).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][position]


def build_index(store: KnowledgeStore, progress: Progress) -> None:
    """Fill the target's search index from its records (no embedding: the vectors are
    copied records), then record it as up to date."""
    records, index = store.records, store.index
    chunk_ids = sorted(records.chunk_ids())
    total = len(chunk_ids)
    progress("search index", 0, total)
    with records.write_lock():
        last = records.last_seq()
        for start in range(0, total, 1_000):
            index.upsert(records.index_entries(chunk_ids[start : start + 1_000]))
            progress("search index", min(start + 1_000, total), total)
        index.commit(last)
        records.trim_log(last)


def count_check(source: KnowledgeStore, target: KnowledgeStore) -> list[CountCheck]:
    """Rows of every table on both sides, the target's index entries, and the target's
    document frequencies that differ from a recount of its chunks (none)."""
    assert isinstance(source.records, SQLRecords) and isinstance(target.records, SQLRecords)
    checks = [
        CountCheck(table, _count(source.records, table), _count(target.records, table))
        for table, _, _ in TABLES
    ]
    chunks = _count(target.records, "chunks")
    keyword, vectors = target.index.sizes()
    checks.append(CountCheck("keyword index", chunks, keyword))
    checks.append(CountCheck("vector index", chunks, vectors))
    stored, counted = target.records.term_counts(), target.records.recount_terms()
    same = sum(1 for term, n in counted.items() if stored.get(term) == n)
    checks.append(CountCheck("term counts", len(counted), same))
    return checks
