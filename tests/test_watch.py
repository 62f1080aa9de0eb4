"""`sourcebook watch`, `serve --watch` and background embedding (issue 11), on real files,
a real store and real models: edits, new files, deletes and renames in Chinese and
English notes reach search; editors' temporary files are ignored; a watched folder may go
away and come back; chunks are keyword-searchable before they are embedded, and a process
killed while embedding leaves a store that the next one completes."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sourcebook import KnowledgeBase, Settings
from sourcebook.ingest.background import BackgroundEmbedder, Locks
from sourcebook.ingest.pipeline import Source, discover
from sourcebook.ingest.watch import EditorFilesFilter, FolderWatcher, WatchOptions
from sourcebook.surfaces.server import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import watch_bench

FAST_MODEL = "use-multilingual"  # real, and fast enough to embed while a test waits
LOCAL = "http://127.0.0.1"

LORA_ZH = "# LoRA 笔记\n\nLoRA 通过低秩分解减少显存占用，暗号青松。\n"
ADAM_EN = "# Adam notes\n\nAdam keeps running averages of gradients; codename KESTREL.\n"


def eventually(predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)


def reader(path: Path) -> KnowledgeBase:
    """Another process's view of the knowledge base (its own connection)."""
    return KnowledgeBase(path, Settings(kb=path, retrieval="bm25", reranker="none"))


def found(base: KnowledgeBase, word: str) -> list[str]:
    """Paths of the chunks containing `word` that a keyword search returns."""
    return [hit.path for hit in base.search(word, 10) if word in hit.text]


@contextmanager
def watcher(kb: KnowledgeBase, embed: bool = True) -> Iterator[FolderWatcher]:
    """A FolderWatcher over every source (and a background embedder) in threads."""
    locks = Locks.exclusive()
    embedder = BackgroundEmbedder(kb, locks, poll_seconds=0.5) if embed else None
    options = WatchOptions(debounce_ms=300, step_ms=50, poll_seconds=0.3)
    folder_watcher = FolderWatcher(kb, None, locks, options, embedder=embedder)
    stop = threading.Event()
    thread = threading.Thread(target=folder_watcher.run, args=(stop,))
    thread.start()
    if embedder:
        embedder.start()
    try:
        yield folder_watcher
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive(), "the watcher did not stop"
        if embedder:
            embedder.stop()


@pytest.fixture
def notes_and_kb(tmp_path: Path) -> Iterator[tuple[Path, KnowledgeBase]]:
    notes = tmp_path / "notes"
    (notes / "zh").mkdir(parents=True)
    (notes / "en").mkdir()
    (notes / "zh" / "lora.md").write_text(LORA_ZH, encoding="utf-8")
    (notes / "en" / "adam.md").write_text(ADAM_EN, encoding="utf-8")
    kb = KnowledgeBase.create(tmp_path / "kb", Settings(kb=tmp_path / "kb", embedder=FAST_MODEL))
    assert kb.add([notes]).added == 2
    yield notes, kb
    kb.close()


# --- which files are watched ----------------------------------------------------------------


def test_source_selects_what_discover_finds(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    for relative in ("a.md", "sub/b.txt", ".hidden/c.md", "sub/.d.md", "drafts/e.md", "f.bin"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("x")
    source = Source(root, (), ("drafts",))
    found_files = {p for p in discover(source) if source.selects(p)}
    assert {p.relative_to(root).as_posix() for p in found_files} == {"a.md", "sub/b.txt"}
    assert not source.selects(root / "drafts" / "e.md")  # under an excluded folder
    assert not source.selects(root / ".hidden" / "c.md")
    assert source.selects(root / "gone.md")  # a file that is gone may still be selected
    assert not source.selects(tmp_path / "elsewhere.md")


@pytest.mark.parametrize(
    "name",
    [
        ".lora.md.swp",
        "lora.md.swo",
        "4913",
        "lora.md~",
        ".#lora.md",
        "#lora.md#",
        "lora.md___jb_tmp___",
        "lora.md___jb_old___",
        "~$report.docx",
        ".~lock.report.docx#",
        ".goutputstream-ABC123",
        "lora.md.kate-swp",
        "download.pdf.part",
        "notes.md.tmp",
        ".DS_Store",
    ],
)
def test_editor_temporary_files_are_ignored(tmp_path: Path, name: str) -> None:
    from watchfiles import Change

    folder_filter = EditorFilesFilter([tmp_path / "notes"], [tmp_path / "notes" / ".sourcebook"])
    assert not folder_filter(Change.added, str(tmp_path / "notes" / name))
    assert folder_filter(Change.modified, str(tmp_path / "notes" / "lora.md"))
    assert folder_filter(Change.added, str(tmp_path / "notes" / "笔记" / "显存.md"))
    assert not folder_filter(Change.modified, str(tmp_path / "notes" / ".sourcebook" / "x.db"))
    assert not folder_filter(Change.added, str(tmp_path / "notes" / ".git" / "index"))


# --- the watcher, in this process -----------------------------------------------------------


def test_edits_new_files_deletes_and_renames_reach_search(
    notes_and_kb: tuple[Path, KnowledgeBase],
) -> None:
    notes, kb = notes_and_kb
    with watcher(kb), reader(kb.path) as search:
        lora = notes / "zh" / "lora.md"
        lora_id = kb.store.document(str(lora)).id  # type: ignore[union-attr]
        # an edit (Chinese): the new word is found, the old one is not
        lora.write_text(LORA_ZH.replace("青松", "白桦"), encoding="utf-8")
        eventually(lambda: found(search, "白桦") == [str(lora)])
        assert found(search, "青松") == []
        assert search.store.document(str(lora)).id == lora_id  # type: ignore[union-attr]
        # a new file (English) in a new folder
        (notes / "en" / "new").mkdir()
        rmsprop = notes / "en" / "new" / "rmsprop.md"
        rmsprop.write_text("# RMSprop\n\nRMSprop divides by a running RMS; codename OSPREY.\n")
        eventually(lambda: found(search, "OSPREY") == [str(rmsprop)])
        # a rename keeps the document's id; the old path leaves every surface
        renamed = notes / "zh" / "低秩适配.md"
        lora.rename(renamed)
        eventually(lambda: found(search, "白桦") == [str(renamed)])
        moved = search.store.document(str(renamed))
        assert moved is not None and moved.id == lora_id
        assert search.store.document(str(lora)) is None
        # a folder moved: its documents follow with their ids
        rmsprop_id = search.store.document(str(rmsprop)).id  # type: ignore[union-attr]
        (notes / "en" / "new").rename(notes / "en" / "optimizers")
        moved_rmsprop = notes / "en" / "optimizers" / "rmsprop.md"
        eventually(lambda: found(search, "OSPREY") == [str(moved_rmsprop)])
        assert search.store.document(str(moved_rmsprop)).id == rmsprop_id  # type: ignore[union-attr]
        # a delete: gone from search, documents, answers and their citations
        adam = notes / "en" / "adam.md"
        adam.unlink()
        eventually(lambda: found(search, "KESTREL") == [])
        assert str(adam) not in {d.path for d in search.documents()}
        answer = search.ask("Adam running averages of gradients KESTREL")
        assert all(c.hit.path != str(adam) for c in answer.citations)
        # everything is embedded soon after, and the indexes agree with the records
        eventually(lambda: kb.status().chunks_waiting == 0)
    assert kb.store.consistency_problems() == []
    assert {d.path for d in kb.documents()} == {str(renamed), str(moved_rmsprop)}


def test_temporary_files_of_a_save_are_not_indexed(
    notes_and_kb: tuple[Path, KnowledgeBase],
) -> None:
    """What vim, Emacs, JetBrains IDEs and Office leave around while saving."""
    notes, kb = notes_and_kb
    with watcher(kb, embed=False), reader(kb.path) as search:
        lora = notes / "zh" / "lora.md"
        # vim: write test, backup, swap; then the file itself is rewritten
        (notes / "zh" / "4913").write_text("")
        (notes / "zh" / "4913").unlink()
        shutil.copy(lora, notes / "zh" / "lora.md~")
        (notes / "zh" / ".lora.md.swp").write_bytes(b"\x00b0VIM 9.0")
        (notes / "zh" / "~$report.docx").write_bytes(b"not a docx")  # an Office lock file
        (notes / "zh" / "lora.md___jb_tmp___").write_text(LORA_ZH + "草稿 draft\n")
        lora.write_text(LORA_ZH + "保存后的新内容 savedword。\n", encoding="utf-8")
        eventually(lambda: found(search, "savedword") == [str(lora)])
        time.sleep(1)  # anything the temporary files would have caused has happened
        assert {Path(d.path).name for d in search.documents()} == {"lora.md", "adam.md"}
        assert found(search, "draft") == []


def test_a_watched_folder_removed_and_restored(
    notes_and_kb: tuple[Path, KnowledgeBase], tmp_path: Path
) -> None:
    notes, kb = notes_and_kb
    kb.embed_pending()
    with watcher(kb, embed=False), reader(kb.path) as search:
        eventually(lambda: found(search, "KESTREL") != [])
        # the folder goes away (a drive unmounted, a folder moved to the trash)
        aside = tmp_path / "aside"
        notes.rename(aside)
        eventually(lambda: search.documents() == [])
        assert found(search, "青松") == []
        # ... and comes back: rescanned, and nothing embedded again (cached vectors)
        aside.rename(notes)
        eventually(lambda: found(search, "青松") == [str(notes / "zh" / "lora.md")])
        assert len(search.documents()) == 2
        assert kb.embedding_progress()[0] == kb.embedding_progress()[1]
        # deleted and recreated as a new folder with different content
        shutil.rmtree(notes)
        eventually(lambda: search.documents() == [])
        notes.mkdir()
        (notes / "new.md").write_text("# 新 new\n\n恢复以后 restored-note。\n", encoding="utf-8")
        eventually(lambda: found(search, "restored-note") == [str(notes / "new.md")])
        assert [Path(d.path).name for d in search.documents()] == ["new.md"]
    assert kb.store.consistency_problems() == []


# --- searchable at once, embedded after -----------------------------------------------------


def test_new_chunks_are_found_by_keyword_before_they_are_embedded(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kv.md").write_text(
        "# KV cache\n\nKV cache 把注意力的键和值缓存起来，推理时不必重复计算。"
        "独有词 zebrafinch。\n",
        encoding="utf-8",
    )
    (notes / "en.md").write_text("# Beam search\n\nBeam search keeps the k best prefixes.\n")
    with KnowledgeBase.create(
        tmp_path / "kb", Settings(kb=tmp_path / "kb", embedder=FAST_MODEL)
    ) as kb:
        report = kb.add([notes], wait=False)
        assert report.added == 2 and report.chunks_embedded == 0
        assert report.chunks_waiting == report.chunks_added > 0
        status = kb.status()
        assert status.chunks_waiting == status.chunks
        assert status.embedding == (
            f"embedding 0 of {status.chunks} chunks ({status.chunks} waiting: "
            "found by keyword search only until then)"
        )
        # hybrid search and answers work: the chunk comes from BM25 alone for now
        hits = kb.search("zebrafinch", 3)
        assert hits[0].path == str(notes / "kv.md") and set(hits[0].ranks) == {"bm25"}
        assert kb.ask("KV cache 为什么能加速推理？").citations[0].hit.path == str(notes / "kv.md")
        assert kb.store.consistency_problems() == []
        # embedded later: the status clears and the dense ranking has the chunk too
        assert kb.embed_pending() == status.chunks
        assert kb.status().embedding is None and kb.status().chunks_waiting == 0
        assert set(kb.search("zebrafinch", 3)[0].ranks) == {"bm25", "dense"}
        assert kb.store.index_sizes() == (status.chunks, status.chunks)


def test_a_sigkilled_background_embedder_leaves_a_store_the_next_one_completes(
    tmp_path: Path,
) -> None:
    """`sourcebook watch` (default model) killed with SIGKILL while it embeds."""
    notes, kb_path = tmp_path / "notes", tmp_path / "kb"
    notes.mkdir()
    for i in range(100):  # 400 chunks: several rounds of the embedder (each ~2 s)
        sections = "\n\n".join(
            f"## 第 {j} 节 section {j}\n\n第 {i} 篇笔记第 {j} 节讲量化与显存 {i * 13 + j}。"
            f"Note {i} section {j} is about memory {i * 7 + j}."
            for j in range(4)
        )
        (notes / f"note-{i:02d}.md").write_text(f"# 笔记 {i} marker{i:02d}\n\n{sections}\n")
    env = {**os.environ, "SOURCEBOOK_KB": str(kb_path)}
    command = [sys.executable, "-m", "sourcebook.surfaces.cli"]
    subprocess.run([*command, "add", str(notes), "--no-wait", "--json"], env=env, check=True)
    process = subprocess.Popen(
        [*command, "watch"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def vectors() -> int:
        with sqlite3.connect(kb_path / "sourcebook.db", timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    try:
        eventually(lambda: vectors() > 0 or process.poll() is not None, 240)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with KnowledgeBase(kb_path, Settings(kb=kb_path)) as kb:
        status = kb.status()
        assert status.index_consistent and kb.store.consistency_problems() == []
        assert 0 < status.chunks_waiting < status.chunks  # killed in the middle
        assert kb.search("marker99", 1)[0].path == str(notes / "note-99.md")
        report = kb.sync()
        assert report.chunks_embedded > 0 and report.chunks_waiting == 0
        assert kb.status().embedding is None
        assert kb.store.index_sizes() == (status.chunks, status.chunks)


# --- the command line and the server ------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_watch_command_follows_changes_and_stops_cleanly(
    notes_and_kb: tuple[Path, KnowledgeBase], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    notes, kb = notes_and_kb
    log = tmp_path / "watch.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sourcebook.surfaces.cli", "watch", str(notes)],
            env={**os.environ, "SOURCEBOOK_KB": str(kb.path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: "Watching" in log.read_text() or process.poll() is not None, 120)
        adam = notes / "en" / "adam.md"
        adam.write_text(ADAM_EN.replace("KESTREL", "HERON"))
        with reader(kb.path) as search:
            eventually(lambda: found(search, "HERON") == [str(adam)], 60)
    finally:
        process.send_signal(stop_signal)
        process.wait(60)
    output = log.read_text()
    assert process.returncode == 0, output
    assert "1 updated" in output and "Stopped." in output


def test_serve_watch_keeps_the_api_in_sync(notes_and_kb: tuple[Path, KnowledgeBase]) -> None:
    notes, kb = notes_and_kb
    with TestClient(create_app(kb, watch=True), base_url=LOCAL) as client:

        def api_paths(word: str) -> list[str]:
            hits = client.get("/api/search", params={"q": word}).json()
            return [hit["path"] for hit in hits if word in hit["text"]]

        time.sleep(2)  # the watcher's first rescan
        lora = notes / "zh" / "lora.md"
        lora.write_text(LORA_ZH + "\n## 新段落\n\n服务器看到的修改 wagtail。\n", encoding="utf-8")
        eventually(lambda: api_paths("wagtail") == [str(lora)])
        (notes / "en" / "adam.md").unlink()
        eventually(lambda: api_paths("KESTREL") == [])
        listed = {d["path"] for d in client.get("/api/documents").json()}
        assert listed == {str(lora)}
        # the background embedder catches up; /api/status says how far it is meanwhile
        eventually(lambda: client.get("/api/status").json()["chunks_waiting"] == 0)
        assert client.get("/api/status").json()["embedding"] is None


def test_editing_renaming_and_deleting_while_searching_loses_no_update(tmp_path: Path) -> None:
    """A smaller run of `benchmarks/watch_bench.py churn` (there: 200 files)."""
    result = watch_bench.run_churn(tmp_path, files=30, embedder=FAST_MODEL)
    assert result["problems"] == [] and result["lost_updates"] == 0
    assert result["search_errors"] == [] and result["searches"] > 0
    assert result["operations"]["rename"] == 30 and result["operations"]["delete"] > 0
    assert result["renamed_documents_indexed"] > 0 and result["watcher_alive"]


def test_the_add_summary_counts_chunks_waiting_for_vectors() -> None:
    from rich.text import Text

    from sourcebook.models import SyncReport
    from sourcebook.surfaces.cli.common import summary

    waiting = SyncReport(added=2, chunks_added=5, chunks_embedded=0, chunks_waiting=5)
    assert "5 added (5 keyword-searchable, waiting for their vectors)" in (
        Text.from_markup(summary(waiting)).plain
    )
    mixed = SyncReport(added=2, chunks_added=5, chunks_embedded=1, chunks_waiting=2)
    assert "(1 embedded now, 2 from the embedding cache, 2 keyword-searchable" in (
        Text.from_markup(summary(mixed)).plain
    )


def test_the_watch_command_says_what_is_wrong(tmp_path: Path) -> None:
    env = {**os.environ, "SOURCEBOOK_KB": str(tmp_path / "kb"), "SOURCEBOOK_EMBEDDER": FAST_MODEL}
    command = [sys.executable, "-m", "sourcebook.surfaces.cli"]
    subprocess.run([*command, "init"], env=env, check=True, capture_output=True)
    nothing = subprocess.run([*command, "watch"], env=env, capture_output=True, text=True)
    assert nothing.returncode == 1 and "nothing to watch" in nothing.stderr
    missing = subprocess.run(
        [*command, "watch", str(tmp_path / "no-such-folder")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
