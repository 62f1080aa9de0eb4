"""Issue 12, the store: a writer that dies between two of its transactions (simulated
in-process here: the n-th transaction fails; `test_fault_injection.py` kills real
processes) never leaves orphans behind a `remove FOLDER`, and an interrupted `reindex`
never leaves chunks without vectors: it is resumable and `status` tells how far it got."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sourcebook import KnowledgeBase, Settings
from sourcebook.store.sqlite import SQLiteRecords


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception`)."""


@contextmanager
def dying_at_transaction(n: int) -> Iterator[None]:
    original = SQLiteRecords._transaction
    calls = 0

    @contextmanager
    def transaction(self: SQLiteRecords) -> Iterator[None]:
        nonlocal calls
        calls += 1
        if calls == n:
            raise Crash
        with original(self):
            yield

    SQLiteRecords._transaction = transaction  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQLiteRecords._transaction = original  # type: ignore[method-assign]


def chunks_without_vectors(kb_path: Path) -> int:
    with sqlite3.connect(kb_path / "sourcebook.db") as db:
        return int(
            db.execute(
                "SELECT COUNT(*) FROM chunks WHERE text_hash NOT IN (SELECT text_hash FROM vectors)"
            ).fetchone()[0]
        )


def orphans(kb: KnowledgeBase) -> list[str]:
    sources = kb.status().sources
    return [
        d.path
        for d in kb.documents()
        if not any(d.path == s or d.path.startswith(s + "/") for s in sources)
    ]


@pytest.mark.parametrize("n", [2, 3])
def test_remove_folder_interrupted_leaves_no_orphans(
    kb_copy: tuple[KnowledgeBase, Path], n: int
) -> None:
    kb, notes = kb_copy
    before = len(kb.documents())
    with dying_at_transaction(n), contextlib.suppress(Crash):
        kb.remove([notes])
    kb.close()
    with KnowledgeBase(kb.path, Settings(kb=kb.path)) as reopened:
        reopened.sync()
        assert orphans(reopened) == []
        assert len(reopened.documents()) in (0, before)


@pytest.mark.parametrize("n", [3])
def test_an_interrupted_reindex_keeps_dense_search_and_resumes(
    kb_copy: tuple[KnowledgeBase, Path], n: int
) -> None:
    kb, _ = kb_copy
    kb.settings.embed_batch = 4  # many transactions: one per batch
    with dying_at_transaction(n), pytest.raises(Crash):
        kb.reindex()
    kb.close()
    assert chunks_without_vectors(kb.path) == 0
    settings = Settings(kb=kb.path, retrieval="dense")
    with KnowledgeBase(kb.path, settings) as reopened:
        status = reopened.status()
        assert status.reembedding is not None and status.reembedding.startswith("re-embedding")
        hits = reopened.search("LoRA 为什么能减少显存？", 3)
        assert hits and hits[0].path.endswith("lora.md")
        reopened.sync()  # resumes the re-embedding
        assert reopened.status().reembedding is None
        assert reopened.store.consistency_problems() == []
        assert reopened.search("LoRA 为什么能减少显存？", 3)[0].path.endswith("lora.md")
