"""Killing a real ingest process with SIGKILL leaves a consistent store; `sync` finishes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sourcebook import KnowledgeBase, Settings

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


def committed_documents(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_sigkill_mid_ingest_then_sync_completes(tmp_path: Path) -> None:
    notes, kb_path = tmp_path / "notes", tmp_path / "kb"
    write_corpus(notes, 120)
    env = {**os.environ, "SOURCEBOOK_EMBEDDER": "use-multilingual", "SOURCEBOOK_KB": str(kb_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sourcebook.cli", "add", str(notes), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while committed_documents(kb_path / "sourcebook.db") < 10:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "ingest made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = committed_documents(kb_path / "sourcebook.db")
    assert 10 <= interrupted < 120  # killed in the middle

    settings = Settings(kb=kb_path)
    with KnowledgeBase(kb_path, settings) as kb:
        # opening repaired the derived indexes: they hold exactly the committed chunks
        status = kb.status()
        assert status.documents >= interrupted
        assert status.index_consistent
        assert kb.store.index_sizes() == (status.chunks, status.chunks)
        report = kb.sync()
        assert report.failed == []
        assert report.unchanged >= interrupted and report.added == 120 - report.unchanged
        status = kb.status()
        assert status.documents == 120
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
