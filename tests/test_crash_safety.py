"""Killing a real ingest process with SIGKILL leaves a consistent store; `sync` finishes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from killing import kill_when, stored_rows
from sourcebook import KnowledgeBase, Settings
from sourcebook.models import ChunkDraft
from sourcebook.store.embedded import DocumentRecord, EmbeddedStore, SearchScope

TOPICS = ["注意力机制", "量化", "LoRA 微调", "向量检索", "扩散模型", "优化器"]


def write_corpus(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        paragraphs = "\n\n".join(
            f"第 {i} 篇笔记的第 {j} 段：{topic} 的要点 {i * 31 + j}。"
            f"Note {i} paragraph {j} explains {topic} with detail number {i * 7 + j}."
            for j in range(12)
        )
        marker = f"marker{i:03d}"  # a word only this note contains
        (folder / f"note-{i:03d}.md").write_text(f"# 笔记 {i}：{topic} {marker}\n\n{paragraphs}\n")


def test_sigkill_mid_ingest_then_sync_completes(tmp_path: Path) -> None:
    notes, kb_path = tmp_path / "notes", tmp_path / "kb"
    write_corpus(notes, 120)
    env = {**os.environ, "SOURCEBOOK_EMBEDDER": "use-multilingual", "SOURCEBOOK_KB": str(kb_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sourcebook.surfaces.cli", "add", str(notes), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = kb_path / "sourcebook.db"
    kill_when(process, lambda: stored_rows(db, "documents") >= 10, within=240)
    interrupted = stored_rows(db, "documents")
    assert 10 <= interrupted < 120  # killed in the middle

    settings = Settings(kb=kb_path)
    with KnowledgeBase(kb_path, settings) as kb:
        # opening repaired the derived indexes: they hold exactly the committed chunks
        # (the vector index those already embedded; the others wait for their vector)
        status = kb.status()
        assert status.documents >= interrupted
        assert status.index_consistent
        embedded, total = kb.embedding_progress()
        assert total == status.chunks and status.chunks_waiting == total - embedded
        assert kb.store.index_sizes() == (status.chunks, embedded)
        assert kb.store.consistency_problems() == []
        report = kb.sync()
        assert report.failed == []
        assert report.unchanged >= interrupted and report.added == 120 - report.unchanged
        status = kb.status()
        assert status.documents == 120 and status.chunks_waiting == 0
        assert kb.store.index_sizes() == (status.chunks, status.chunks)
        hit = kb.search("marker119", limit=1)[0]
        assert hit.path.endswith("note-119.md")


def test_a_second_writer_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from sourcebook import StoreError

    kb_path = tmp_path / "kb"
    settings = Settings(kb=kb_path, embedder="use-multilingual")
    with KnowledgeBase.create(kb_path, settings) as first, first.store.writing():
        second = KnowledgeBase(kb_path, Settings(kb=kb_path))
        try:
            import pytest

            with pytest.raises(StoreError, match="another Sourcebook process is writing"):
                second.add([tmp_path])
        finally:
            second.close()


def version(path: str, paragraphs: list[str]) -> tuple[DocumentRecord, list[ChunkDraft]]:
    """A document of one chunk per paragraph (one line each), as the ingestor stores it."""
    text = "\n".join(paragraphs)
    record = DocumentRecord(
        path=path,
        title="Garden 花园",
        kind="markdown",
        tags=[],
        modified=time.time(),
        size=len(text.encode()),
        content_hash=str(hash(text)),
        text=text,
        pages=None,
    )
    chunks, start = [], 0
    for ordinal, paragraph in enumerate(paragraphs):
        chunks.append(
            ChunkDraft(
                ordinal, paragraph, [], start, start + len(paragraph), ordinal + 1, ordinal + 1
            )
        )
        start += len(paragraph) + 1
    return record, chunks


def test_a_failed_re_index_leaves_the_document_whole(tmp_path: Path) -> None:
    """Re-indexing keeps a document's id by updating its row in place; a replacement that
    fails midway (after the row and some new chunks were written) is rolled back whole,
    and the next one succeeds under the same id."""
    store = EmbeddedStore(tmp_path / "kb", ("test-model", 4), create=True)
    path = str(tmp_path / "garden.md")
    old = ["Tomatoes are watered at 6 a.m., codename KESTREL.", "番茄早上六点浇水，暗号青松。"]
    new = ["Tomatoes are watered at 7 p.m., codename OSPREY.", "番茄晚上七点浇水，暗号白桦。", "完"]
    rng = np.random.default_rng(0)

    def replace(paragraphs: list[str], vectors: int) -> None:
        record, chunks = version(path, paragraphs)
        with store.writing():
            store.replace_document(record, chunks, paragraphs, rng.random((vectors, 4)))

    replace(old, len(old))
    before = store.document(path)
    assert before is not None
    with pytest.raises(ValueError):  # one vector short: fails after two chunks were written
        replace(new, len(new) - 1)
    assert store.document(path) == before and store.document_text(path) == "\n".join(old)
    assert store.index_sizes() == (len(old), len(old)) and store.is_consistent()

    replace(new, len(new))
    after = store.document(path)
    assert after is not None and after.id == before.id and after.chunks == len(new)
    assert store.index_sizes() == (len(new), len(new))
    for word, expected in (("OSPREY", 1), ("白桦", 1), ("KESTREL", 0), ("青松", 0)):
        found = store.keyword_search(word, 5, SearchScope([before.id]))
        assert len(found) == expected, word
        assert all(hit.doc_id == before.id for hit in store.hits([c for c, _ in found]).values())
    store.close()
