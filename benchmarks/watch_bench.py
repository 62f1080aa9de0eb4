"""Issue 11 (watch) benchmarks: how soon a change is searchable, and that none is lost.

Three measurements, each against real processes (`sourcebook add`, `sourcebook watch`)
and a reader in this process that searches like a server would (its own connection,
following the writer):

- `add`: a folder of ~10,000 chunks (the `sourcebook bench` corpus: CMRC 2018 and
  Cranfield passages, five per Markdown file) added with `--no-wait`: seconds until the
  command returns (every chunk keyword-searchable) and until a marker of the last file is
  found by another process.
- `latency`: `sourcebook watch` on that folder (its background embedder busy with the
  10,000 waiting chunks, as it would be right after such an add): a unique word appended
  to a random file, seconds until a keyword search finds it there; a file deleted, seconds
  until its word is no longer found. p50 / p95 / max over `--trials` of each.
- `churn`: `sourcebook watch` on a folder of `--files` notes (Chinese and English) while
  this process edits, renames and deletes every one of them in random order (each file:
  an edit, then a rename or a move into another folder, then an edit or a delete), and a
  thread searches all the while. When the watcher is done, every file on disk must be
  indexed with its current content (its latest word found, in that file), and nothing
  deleted found: the count of mismatches is the number of lost updates.

    python benchmarks/watch_bench.py add latency churn     # all three (minutes)
    python benchmarks/watch_bench.py churn --files 200

Every process is bounded by a timeout and killed at the end; work happens in a
temporary folder (or `--work`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sourcebook import KnowledgeBase, Settings

TOPICS_ZH = ["注意力机制", "量化", "低秩适配", "向量检索", "扩散模型", "优化器", "显存", "分词"]
TOPICS_EN = ["attention", "quantization", "adapters", "retrieval", "diffusion", "optimizers"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sourcebook.surfaces.cli", *args]


def environment(kb: Path, embedder: str | None) -> dict[str, str]:
    env = {**os.environ, "SOURCEBOOK_KB": str(kb)}
    if embedder:
        env["SOURCEBOOK_EMBEDDER"] = embedder
    return env


def content_hash(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }


def reader(kb: Path) -> KnowledgeBase:
    """A searching process's view: keyword search only (what "keyword-searchable" means)."""
    return KnowledgeBase(kb, Settings(kb=kb, retrieval="bm25", reranker="none"))


def found_in(base: KnowledgeBase, word: str, path: Path) -> bool:
    return any(h.path == str(path) and word in h.text for h in base.search(word, 5))


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> float | None:
    """Seconds until `predicate()` holds, None after `timeout`."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if predicate():
            return time.perf_counter() - started
        time.sleep(step)
    return None


@contextlib.contextmanager
def watching(
    kb: Path, folder: Path, embedder: str | None, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`sourcebook watch FOLDER` in a subprocess, until it says it watches; stopped with
    SIGTERM (and killed if it does not stop) at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            cli("watch", str(folder)), env=environment(kb, embedder), stdout=out, stderr=out
        )
    try:
        ready = wait_for(lambda: b"Watching" in log.read_bytes(), 300, 0.1)
        if ready is None or process.poll() is not None:
            raise RuntimeError(f"watch did not start: {log.read_text(errors='replace')}")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- add -------------------------------------------------------------------------------


def bench_corpus(folder: Path, chunks: int) -> int:
    """The `sourcebook bench` corpus of about `chunks` chunks; returns the file count."""
    from itertools import islice

    from sourcebook.evaluation.bench import data_folder, generate_passages, load_pool, write_corpus

    pool = load_pool(data_folder())
    return write_corpus(folder, list(islice(generate_passages(pool), chunks)))


def bench_add(work: Path, chunks: int, embedder: str | None) -> dict[str, Any]:
    """`sourcebook add --no-wait` of the corpus, timed from outside, while another process
    (this one: the knowledge base created empty first, its reader warmed up) searches for
    a word only the last file holds."""
    folder, kb = work / "corpus", work / "kb"
    shutil.rmtree(kb, ignore_errors=True)
    files = bench_corpus(folder, chunks)
    last = sorted(folder.rglob("*.md"))[-1]
    marker = f"zzlast{random.randrange(10**9)}"
    with last.open("a", encoding="utf-8") as out:
        out.write(f"\n\n## marker\n\n{marker}\n")
    env = environment(kb, embedder)
    subprocess.run(cli("init"), env=env, capture_output=True, timeout=300, check=True)
    with reader(kb) as base:
        base.search("warm up 预热", 1)  # the analyzer's dictionary is loaded
        started = time.perf_counter()
        process = subprocess.Popen(
            cli("add", str(folder), "--no-wait", "--json"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        visible = wait_for(lambda: found_in(base, marker, last), 900, 0.1)
        output, _ = process.communicate(timeout=900)
        returned = time.perf_counter() - started
        embedded, total = base.embedding_progress()
    report = json.loads(output[output.index(b"{") :])
    return {
        "files": files,
        "chunks": total,
        "chunks_waiting": report["chunks_waiting"],
        "embedded_during_add": embedded,
        "add_returned_s": round(returned, 2),
        "last_file_found_by_another_process_s": None if visible is None else round(visible, 2),
    }


# --- latency ---------------------------------------------------------------------------


def bench_latency(work: Path, trials: int, embedder: str | None) -> dict[str, Any]:
    folder, kb = work / "corpus", work / "kb"
    if not (kb / "sourcebook.db").exists():
        raise SystemExit("run `add` first: latency is measured on its knowledge base")
    rng = random.Random(11)
    files = sorted(folder.rglob("*.md"))
    edits: list[float] = []
    deletes: list[float] = []
    missed = 0
    with watching(kb, folder, embedder, work / "watch-latency.log"), reader(kb) as base:
        # not counted: the watcher's first rescan of the folder (which reads every file)
        # ends before this edit is seen
        probe = files.pop()
        with probe.open("a", encoding="utf-8") as out:
            out.write("\n\nwarmupprobe\n")
        if wait_for(lambda: found_in(base, "warmupprobe", probe), 300) is None:
            raise RuntimeError("the watcher did not index the warm-up edit")
        for trial in range(trials):
            path = files.pop(rng.randrange(len(files)))
            word = f"edit{trial}x{rng.randrange(10**9)}"
            with path.open("a", encoding="utf-8") as out:
                out.write(f"\n\n## 新增 added {trial}\n\n{word} 编辑后的内容。\n")
            seconds = wait_for(lambda p=path, w=word: found_in(base, w, p), 30)
            if seconds is None:
                missed += 1
                continue
            edits.append(seconds)
            path.unlink()
            seconds = wait_for(lambda w=word: not any(w in h.text for h in base.search(w, 5)), 30)
            if seconds is None:
                missed += 1
                continue
            deletes.append(seconds)
            time.sleep(rng.uniform(0.05, 0.3))
        embedded, total = base.embedding_progress()
    return {
        "edits_s": [round(x, 2) for x in edits],
        "edit_to_searchable_s": percentiles(edits),
        "delete_to_gone_s": percentiles(deletes),
        "missed": missed,
        "chunks_embedded_meanwhile": f"{embedded} of {total}",
    }


# --- churn -----------------------------------------------------------------------------


@dataclass
class Churn:
    """The files a churn run expects on disk, each with the word only its latest
    version contains, and the words that must no longer be found."""

    present: dict[Path, str] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    operations: dict[str, int] = field(default_factory=dict)

    def count(self, operation: str) -> None:
        self.operations[operation] = self.operations.get(operation, 0) + 1


def note_text(rng: random.Random, word: str) -> str:
    zh, en = rng.choice(TOPICS_ZH), rng.choice(TOPICS_EN)
    return (
        f"# {zh} {en}\n\n{zh}的笔记：关键在于{rng.choice(TOPICS_ZH)}。{word}\n\n"
        f"Notes on {en}: it depends on {rng.choice(TOPICS_EN)}. Marker {word}.\n"
    )


def churn_files(folder: Path, files: int, rng: random.Random) -> Churn:
    churn = Churn()
    for i in range(files):
        sub = folder / ("zh" if i % 2 else "en")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"note-{i:04d}.md"
        word = f"w{i}v0x{rng.randrange(10**6)}"
        path.write_text(note_text(rng, word), encoding="utf-8")
        churn.present[path] = word
    return churn


def churn_operations(folder: Path, churn: Churn, rng: random.Random, pace: float) -> None:
    """Edit, rename or move, then edit again or delete, every file, in random order."""
    steps = [(path, stage) for path in list(churn.present) for stage in range(3)]
    rng.shuffle(steps)
    steps.sort(key=lambda s: s[1])  # every file's first step, then its second, ...
    moved: dict[Path, Path] = {path: path for path in churn.present}
    for serial, (original, stage) in enumerate(steps):
        path = moved[original]
        if path not in churn.present:
            continue
        old_word = churn.present[path]
        if stage == 0 or (stage == 2 and rng.random() < 0.5):  # an edit
            word = f"{old_word.split('v')[0]}v{serial}x{rng.randrange(10**6)}"
            path.write_text(note_text(rng, word), encoding="utf-8")
            churn.present[path] = word
            churn.gone.add(old_word)
            churn.count("edit")
        elif stage == 1:  # a rename in place or a move into the other folder
            other = "zh" if path.parent.name == "en" else "en"
            target = (
                folder / other / f"moved-{path.name}"
                if rng.random() < 0.5
                else path.with_name(f"renamed-{path.name}")
            )
            path.rename(target)
            churn.present[target] = churn.present.pop(path)
            moved[original] = target
            churn.count("rename")
        else:  # a delete
            path.unlink()
            churn.gone.add(churn.present.pop(path))
            churn.count("delete")
        time.sleep(rng.uniform(0, 2 * pace))


def lost_updates(base: KnowledgeBase, churn: Churn) -> list[str]:
    """What the knowledge base got wrong, compared with the files (empty: nothing)."""
    problems = []
    indexed = {d.path: d for d in base.documents()}
    for path, word in churn.present.items():
        document = indexed.pop(str(path), None)
        if document is None:
            problems.append(f"{path.name} is not indexed")
        elif document.content_hash != content_hash(path):
            problems.append(f"{path.name} is indexed in an earlier version")
        elif not found_in(base, word, path):
            problems.append(f"{word} is not found in {path.name}")
    problems.extend(f"{Path(p).name} is indexed but gone" for p in indexed)
    problems.extend(
        f"{word} is still found"
        for word in churn.gone
        if any(word in hit.text for hit in base.search(word, 5))
    )
    return problems


def run_churn(
    work: Path, files: int, embedder: str | None, pace: float = 0.02, seed: int = 7
) -> dict[str, Any]:
    """A churn run (see the module docstring); `lost_updates` is what must be 0."""
    folder, kb = work / "churn", work / "churn-kb"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(kb, ignore_errors=True)
    rng = random.Random(seed)
    churn = churn_files(folder, files, rng)
    searches, errors = [0], []
    stop = threading.Event()

    def search_all_the_while() -> None:
        with reader(kb) as base:
            while not stop.is_set():
                try:
                    base.search(rng.choice(TOPICS_ZH + TOPICS_EN), 10)
                    searches[0] += 1
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.01)

    with watching(kb, folder, embedder, work / "watch-churn.log") as process:
        searcher = threading.Thread(target=search_all_the_while)
        searcher.start()
        started = time.perf_counter()
        try:
            churn_operations(folder, churn, rng, pace)
            operated = time.perf_counter() - started
            with reader(kb) as base:
                settled = wait_for(lambda: not lost_updates(base, churn), 60, 0.25)
                problems = lost_updates(base, churn)
                renamed = sum(
                    1 for d in base.documents() if "renamed-" in d.path or "moved-" in d.path
                )
        finally:
            stop.set()
            searcher.join()
        alive = process.poll() is None
    # what the watcher reported: renames and moves that kept their document (and its id)
    log = (work / "watch-churn.log").read_text(errors="replace")
    kept = sum(int(n) for n in re.findall(r"(\d+) renamed", log))
    return {
        "files": files,
        "operations": churn.operations,
        "operations_s": round(operated, 1),
        "settled_after_s": None if settled is None else round(settled, 2),
        "searches": searches[0],
        "search_errors": errors[:5],
        "renamed_documents_indexed": renamed,
        "renames_that_kept_their_document": kept,
        "lost_updates": len(problems),
        "problems": problems[:20],
        "watcher_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", nargs="+", choices=["add", "latency", "churn"])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--embedder", default=None, help="default: the default model")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="watch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"load": os.getloadavg(), "cpus": os.cpu_count()}
    if "add" in args.benchmarks:
        results["add"] = bench_add(work, args.chunks, args.embedder)
        print(json.dumps(results["add"]), flush=True)
    if "latency" in args.benchmarks:
        results["latency"] = bench_latency(work, args.trials, args.embedder)
        print(json.dumps(results["latency"]), flush=True)
    if "churn" in args.benchmarks:
        results["churn"] = run_churn(work, args.files, args.embedder)
        print(json.dumps(results["churn"], ensure_ascii=False), flush=True)
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
