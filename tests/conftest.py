"""Shared fixtures: the sample notes indexed once with the real default model.

Tests that change a knowledge base work on a copy (`kb_copy`), so the session index is
built only once (embedding is the slow part).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_copy import copy_knowledge_base
from sourcebook import KnowledgeBase, Settings

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "examples" / "notes"


@pytest.fixture(scope="session")
def notes_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeBase]:
    """A knowledge base over a copy of examples/notes (read-only use)."""
    base = tmp_path_factory.mktemp("session")
    notes = base / "notes"
    shutil.copytree(NOTES, notes)
    kb = KnowledgeBase.create(base / "kb", Settings(kb=base / "kb"))
    report = kb.add([notes])
    assert not report.failed, report.failed
    yield kb
    kb.close()


@pytest.fixture
def kb_copy(notes_kb: KnowledgeBase, tmp_path: Path) -> Iterator[tuple[KnowledgeBase, Path]]:
    """A private, writable copy of the session knowledge base and of its notes folder.

    The copy's documents are re-keyed to the new folder by re-adding it; unchanged
    chunks come from the embedding cache, so this costs no embedding.
    """
    notes = tmp_path / "notes"
    shutil.copytree(NOTES, notes)
    copy_knowledge_base(notes_kb.path, tmp_path / "kb")
    kb = KnowledgeBase(tmp_path / "kb", Settings(kb=tmp_path / "kb"))
    for source in kb.status().sources:
        kb.remove([source])
    report = kb.add([notes])
    assert report.chunks_embedded == 0  # everything came from the cache
    yield kb, notes
    kb.close()
