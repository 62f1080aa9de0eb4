"""Fault-injection sweep (issue 12): kill a real writer process at every write step and
check, after each kill, that the knowledge base is still whole.

Each writer command (`add` of notes and of a CSV stored in parts, `sync`, `remove`,
`reindex`, `access set`, `user add`, `key create`, an upload to `sourcebook serve`) runs
as a subprocess with `SOURCEBOOK_CRASH_AT=*:N` (`sourcebook/faults.py`): it is SIGKILLed
at its N-th crash point (before and after every SQLite commit, between the steps of an
index flush, while an upload is being saved), for N = 1, 2, … until it completes. After
each kill:

- the store opens (the next process recovers the derived indexes);
- every index agrees with the records: the keyword index holds exactly SQLite's chunk
  ids, the vector index those whose text has a vector (the others wait for the embedder
  and `status` counts them), `status` says the indexes are up to date and names a
  re-embedding in progress if there is one;
- no document is left outside every source (an orphan no `sync` would look at);
- after one `sync` (and, for a killed `reindex`, one `reindex`): every file that should be
  indexed is, each one's marker word is found in it, and nothing deleted, emptied or
  removed is found any more; access rules are applied to every document.

    python benchmarks/fault_sweep.py                  # every kill point of every command
    python benchmarks/fault_sweep.py --limit 20       # a sample, spread over the commands
    python benchmarks/fault_sweep.py --workers 4      # scenarios side by side
    python benchmarks/fault_sweep.py --only add-csv   # one scenario

Loopback only (the upload server binds 127.0.0.1), bounded (every process has a timeout),
and it stops by itself. The pytest suite runs a sample (`tests/test_fault_injection.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sourcebook import KnowledgeBase, Settings
from sourcebook.faults import ENVIRONMENT

EMBEDDER = "use-multilingual"  # the fast model: the sweep runs hundreds of processes
COMMAND_TIMEOUT = 900  # indexing 28 notes took over 120 s at load average 20
TOP, SUB = 24, 4  # notes in the folder and in its subfolder


def note(i: int, marker: str) -> str:
    return (
        f"# 笔记 {i}\n\n第 {i} 篇笔记讲 {marker} 的要点。Note {i} is about {marker}.\n\n"
        f"## 细节\n\nMore detail for note {i}: {marker} appears here too.\n"
    )


@dataclass
class Expected:
    """What must hold after the recovery `sync`: paths (relative to the work folder)
    with the marker each must be found by, and markers nothing may contain."""

    present: dict[str, str] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    rules: dict[str, list[str]] | None = None  # the rules to check documents against


@dataclass
class Scenario:
    name: str
    seed: str  # "empty" or "full"
    prepare: Callable[[Path], list[str]]  # mutate the work folder; the command's arguments
    expect: Callable[[Path, KnowledgeBase], Expected]  # after the kill, before the sync


def full_notes(work: Path) -> None:
    (work / "notes" / "sub").mkdir(parents=True)
    for i in range(TOP):
        (work / "notes" / f"n{i}.md").write_text(note(i, f"marker{i}x"), encoding="utf-8")
    for i in range(TOP, TOP + SUB):
        (work / "notes" / "sub" / f"n{i}.md").write_text(note(i, f"marker{i}x"), "utf-8")


def all_notes() -> dict[str, str]:
    present = {f"notes/n{i}.md": f"marker{i}x" for i in range(TOP)}
    present.update({f"notes/sub/n{i}.md": f"marker{i}x" for i in range(TOP, TOP + SUB)})
    return present


def _add(work: Path) -> list[str]:
    return ["add", str(work / "notes")]


def _expect_add(work: Path, kb: KnowledgeBase) -> Expected:
    # a killed `add` that never recorded its source added nothing `sync` could resume
    return Expected(present=all_notes() if kb.sources() else {})


def _sync(work: Path) -> list[str]:
    notes = work / "notes"
    (notes / "n0.md").write_text(note(0, "marker0edited"), encoding="utf-8")
    (notes / "n1.md").unlink()
    (notes / "n2.md").write_bytes(b"")  # emptied
    (notes / "n3.md").write_bytes(b"\x00\xff\xfe" * 100)  # overwritten with binary
    for i in range(4, 8):
        (notes / f"n{i}.md").write_text(note(i, f"marker{i}edited"), encoding="utf-8")
    for i in range(40, 44):
        (notes / f"n{i}.md").write_text(note(i, f"marker{i}x"), encoding="utf-8")
    shutil.rmtree(notes / "sub")
    return ["sync"]


def _expect_sync(work: Path, kb: KnowledgeBase) -> Expected:
    present = {f"notes/n{i}.md": f"marker{i}x" for i in [*range(8, TOP), *range(40, 44)]}
    present.update({f"notes/n{i}.md": f"marker{i}edited" for i in (0, *range(4, 8))})
    absent = {f"marker{i}x" for i in [*range(0, 8), *range(TOP, TOP + SUB)]}
    return Expected(present=present, absent=absent)


def _remove(work: Path) -> list[str]:
    return ["remove", str(work / "notes")]


def _expect_remove(work: Path, kb: KnowledgeBase) -> Expected:
    if kb.sources():  # the removal did not happen (one transaction): all still there
        return Expected(present=all_notes())
    return Expected(absent=set(all_notes().values()))


def _remove_file(work: Path) -> list[str]:
    return ["remove", str(work / "notes" / "n3.md")]


def _expect_remove_file(work: Path, kb: KnowledgeBase) -> Expected:
    # a file inside a source folder: `remove` forgets it now, the next sync finds it again
    return Expected(present=all_notes())


def _add_links(work: Path) -> list[str]:
    # a second source holding a symlink to a file outside it, and a note of its own
    (work / "outside").mkdir()
    (work / "outside" / "x.md").write_text(note(90, "markerlinkx"), encoding="utf-8")
    (work / "more").mkdir()
    (work / "more" / "own.md").write_text(note(91, "markerownx"), encoding="utf-8")
    (work / "more" / "link.md").symlink_to(Path("..") / "outside" / "x.md")
    return ["add", str(work / "more")]


def _expect_add_links(work: Path, kb: KnowledgeBase) -> Expected:
    present = all_notes()
    if str(work / "more") in kb.sources():  # the link is the document, not its target
        present.update({"more/link.md": "markerlinkx", "more/own.md": "markerownx"})
    return Expected(present=present)


CSV_ROWS, CSV_PART_ROWS = 200, 40  # a CSV stored in five parts, one transaction each


def _add_csv(work: Path) -> list[str]:
    (work / "sheets").mkdir()
    rows = ["编号 code,说明 note"] + [f"csvrow{i:04d}x,第 {i} 行 row {i}" for i in range(CSV_ROWS)]
    (work / "sheets" / "rows.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ["add", str(work / "sheets")]


def _expect_add_csv(work: Path, kb: KnowledgeBase) -> Expected:
    present = all_notes()
    if str(work / "sheets") in kb.sources():  # the row of the last part: the file is whole
        present["sheets/rows.csv"] = f"csvrow{CSV_ROWS - 1:04d}x"
    return Expected(present=present)


def _access_remove(work: Path) -> list[str]:
    with KnowledgeBase(work / "kb", Settings(kb=work / "kb")) as kb:
        kb.set_access_rule("sub/*", ["team-a"])
    return ["access", "remove", "sub/*"]


def _expect_access_remove(work: Path, kb: KnowledgeBase) -> Expected:
    # killed before its commit the rule is still there and still applied; after, gone
    return Expected(present=all_notes(), rules=kb.access_rules())


def _reindex(work: Path) -> list[str]:
    return ["reindex"]


def _expect_reindex(work: Path, kb: KnowledgeBase) -> Expected:
    return Expected(present=all_notes())


def _access(work: Path) -> list[str]:
    return ["access", "set", "sub/*", "team-a", "team-b"]


def _expect_access(work: Path, kb: KnowledgeBase) -> Expected:
    rules = kb.access_rules()
    return Expected(present=all_notes(), rules=rules)


def _user(work: Path) -> list[str]:
    return ["user", "add", "alice", "--group", "hr"]


def _key(work: Path) -> list[str]:
    with KnowledgeBase(work / "kb", Settings(kb=work / "kb")) as kb:
        if not kb.access.has_users():
            kb.access.add_user("root", admin=True)
    return ["key", "create", "root"]


SCENARIOS = [
    Scenario("add", "empty", _add, _expect_add),
    Scenario("sync", "full", _sync, _expect_sync),
    Scenario("remove", "full", _remove, _expect_remove),
    Scenario("remove-file", "full", _remove_file, _expect_remove_file),
    Scenario("reindex", "full", _reindex, _expect_reindex),
    Scenario("add-links", "full", _add_links, _expect_add_links),
    Scenario("add-csv", "full", _add_csv, _expect_add_csv),
    Scenario("access", "full", _access, _expect_access),
    Scenario("access-remove", "full", _access_remove, _expect_access_remove),
    Scenario("user", "full", _user, _expect_reindex),
    Scenario("key", "full", _key, _expect_reindex),
]


def environment(work: Path, crash: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT}
    # small embedding batches: a re-embedding commits after each, more steps to kill at
    env.update(
        SOURCEBOOK_KB=str(work / "kb"),
        SOURCEBOOK_EMBEDDER=EMBEDDER,
        SOURCEBOOK_EMBED_BATCH="4",
        SOURCEBOOK_CSV_PART_ROWS=str(CSV_PART_ROWS),
    )
    if crash:
        env[ENVIRONMENT] = crash
    return env


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sourcebook.surfaces.cli", *args],
        env=env,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def make_seeds(root: Path) -> dict[str, Path]:
    """The starting states, built once: an empty knowledge base, and one holding the notes."""
    seeds = {}
    for name in ("empty", "full"):
        work = root / f"seed-{name}"
        work.mkdir()
        full_notes(work)
        result = cli(["init"], environment(work, None))
        assert result.returncode == 0, result.stderr.decode()
        if name == "full":
            result = cli(["add", str(work / "notes")], environment(work, None))
            assert result.returncode == 0, result.stderr.decode()
        seeds[name] = work
    return seeds


def check(work: Path, scenario: Scenario, stage: str) -> list[str]:
    """The invariants after a kill (see the module docstring); violations as text."""
    problems: list[str] = []
    try:
        kb = KnowledgeBase(work / "kb", Settings(kb=work / "kb"))
    except Exception as exc:
        return [f"{stage}: the store does not open: {type(exc).__name__}: {exc}"]
    with kb:
        problems += _index_agreement(kb, f"{stage}, after the kill")
        expected = scenario.expect(work, kb)
        kb.sync()
        if kb.store.reembedding():
            kb.reindex()  # what status tells the user to run
        problems += _index_agreement(kb, f"{stage}, after sync")
        if kb.status().chunks_waiting:
            problems.append(f"{stage}: after sync, chunks still wait for their vectors")
        problems += _contents(kb, work, expected, stage)
    return problems


def _index_agreement(kb: KnowledgeBase, stage: str) -> list[str]:
    problems = [f"{stage}: {p}" for p in kb.store.consistency_problems()]
    status = kb.status()
    if not status.index_consistent:
        problems.append(f"{stage}: status says the indexes are behind")
    if status.documents != len(kb.documents()):
        problems.append(f"{stage}: status counts {status.documents} documents")
    state = kb.store.reembedding()
    if (state is None) != (status.reembedding is None):
        problems.append(f"{stage}: status does not tell the re-embedding in progress")
    sources = kb.sources()
    for document in kb.documents():
        if not any(document.path == s or document.path.startswith(s + "/") for s in sources):
            problems.append(f"{stage}: {document.path} is under no source (an orphan)")
    return problems


def _contents(kb: KnowledgeBase, work: Path, expected: Expected, stage: str) -> list[str]:
    problems = []
    indexed = {d.path for d in kb.documents()}
    wanted = {str(work / p) for p in expected.present}
    if wanted != indexed:
        problems.append(
            f"{stage}: after sync, missing {sorted(wanted - indexed)}, "
            f"extra {sorted(indexed - wanted)}"
        )
    for relative, marker in expected.present.items():
        hits = kb.search(marker, 5)
        if not any(h.path == str(work / relative) and marker in h.text for h in hits):
            problems.append(f"{stage}: {marker} not found in {relative}")
    for marker in expected.absent:
        if any(marker in h.text for h in kb.search(marker, 10)):
            problems.append(f"{stage}: {marker} is still found")
    if expected.rules is not None:
        groups = kb.document_groups()
        for path in indexed:
            rule_groups = sorted(
                {g for pattern, gs in expected.rules.items() for g in gs if pattern == "sub/*"}
            )
            wants = rule_groups if "/notes/sub/" in path else []
            if groups.get(path, []) != wants:
                problems.append(f"{stage}: {path} has groups {groups.get(path)}, not {wants}")
    return problems


@dataclass
class Outcome:
    scenario: str
    point: int
    killed: bool
    violations: list[str]


def run_point(scenario: Scenario, seeds: dict[str, Path], root: Path, n: int) -> Outcome:
    # the knowledge base records absolute paths: work in the seed's own folder, restored
    # from a pristine copy each time
    seed = seeds[scenario.seed]
    pristine = root / f"pristine-{scenario.seed}"
    if not pristine.exists():
        shutil.copytree(seed, pristine, symlinks=True)
    shutil.rmtree(seed)
    shutil.copytree(pristine, seed, symlinks=True)
    args = scenario.prepare(seed)
    result = cli(args, environment(seed, f"*:{n}"))
    killed = result.returncode == -signal.SIGKILL
    if not killed and result.returncode not in (0, 2):
        return Outcome(scenario.name, n, False, [f"exit {result.returncode}: {result.stderr!r}"])
    return Outcome(scenario.name, n, killed, check(seed, scenario, f"{scenario.name}@{n}"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


UPLOAD_SCENARIO = Scenario("upload", "full", lambda work: [], lambda work, kb: _expect_upload(work))


def _expect_upload(work: Path) -> Expected:
    present = all_notes()
    uploads = work / "kb" / "uploads"
    for name, marker in (("u1.md", "markerup1"), ("u2.md", "markerup2")):
        if (uploads / name).exists():
            present[f"kb/uploads/{name}"] = marker
    return Expected(present=present)


def run_upload_point(seeds: dict[str, Path], root: Path, n: int) -> Outcome:
    """`sourcebook serve` killed at its N-th crash point while two files are uploaded."""
    seed = seeds["full"]
    pristine = root / "pristine-full"
    if not pristine.exists():
        shutil.copytree(seed, pristine, symlinks=True)
    shutil.rmtree(seed)
    shutil.copytree(pristine, seed, symlinks=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sourcebook.surfaces.cli", "serve", "--port", str(port)],
        env=environment(seed, f"*:{n}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while server.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/api/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        files = [
            ("files", ("u1.md", note(1, "markerup1").encode(), "text/markdown")),
            ("files", ("u2.md", note(2, "markerup2").encode(), "text/markdown")),
        ]
        if server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):  # killed while answering
                httpx.post(f"{url}/api/documents", files=files, timeout=COMMAND_TIMEOUT)
    finally:
        try:  # a crash point may be reached while the answer is on its way
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        killed = server.returncode == -signal.SIGKILL
    return Outcome("upload", n, killed, check(seed, UPLOAD_SCENARIO, f"upload@{n}"))


def sweep(
    limit: int | None,
    root: Path,
    log: Callable[[str], None] = print,
    only: list[str] | None = None,
) -> list[Outcome]:
    """Kill points 1, 2, … of every scenario (or those named in `only`) until the command
    completes; with `limit`, about that many kill points in all, spread evenly over the
    scenarios."""
    seeds = make_seeds(root)
    outcomes: list[Outcome] = []
    runners: list[tuple[str, Callable[[int], Outcome]]] = [
        (s.name, lambda n, s=s: run_point(s, seeds, root, n)) for s in SCENARIOS
    ]
    runners.append(("upload", lambda n: run_upload_point(seeds, root, n)))
    if only is not None:
        runners = [r for r in runners if r[0] in only]
    per_scenario = None if limit is None else max(1, limit // len(runners))
    for name, runner in runners:
        step = 1
        n = 1
        done = 0
        while per_scenario is None or done < per_scenario:
            outcome = runner(n)
            outcomes.append(outcome)
            status = "killed" if outcome.killed else "completed"
            log(f"{name:8} point {n:3}: {status}, {len(outcome.violations)} violations")
            for violation in outcome.violations:
                log(f"    {violation}")
            if not outcome.killed:
                break  # past the last crash point: the command ran to its end
            done += 1
            if per_scenario is not None:
                step = 3  # a sample: every third point, from the first
            n += step
    return outcomes


def _sweep_one(name: str, limit: int | None, root: Path) -> list[Outcome]:
    folder = root / name
    folder.mkdir()
    return sweep(limit, folder, lambda line: print(line, flush=True), only=[name])


def sweep_parallel(limit: int | None, root: Path, workers: int) -> list[Outcome]:
    """The same sweep, one scenario per worker process (each with its own seeds)."""
    names = [s.name for s in SCENARIOS] + ["upload"]
    share = None if limit is None else max(1, limit // len(names))
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(workers) as pool:
        futures = {name: pool.submit(_sweep_one, name, share, root) for name in names}
        for name, future in futures.items():
            try:
                outcomes += future.result()
            except Exception as exc:  # the harness failed, not the knowledge base
                print(f"{name}: the sweep could not run: {type(exc).__name__}: {exc}")
                outcomes.append(Outcome(name, 0, False, [f"harness error: {exc!r}"]))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="about this many kill points")
    parser.add_argument("--json", type=Path, default=None, help="write the outcomes here")
    parser.add_argument(
        "--workers", type=int, default=1, help="scenarios run side by side in this many processes"
    )
    parser.add_argument("--only", nargs="+", default=None, help="these scenarios (by name)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sourcebook-faults-") as tmp:
        if args.workers > 1:
            outcomes = sweep_parallel(args.limit, Path(tmp), args.workers)
        else:
            outcomes = sweep(args.limit, Path(tmp), only=args.only)
    kills = [o for o in outcomes if o.killed]
    violations = sum(len(o.violations) for o in outcomes)
    print(
        f"{len(kills)} kill points over {len({o.scenario for o in outcomes})} commands, "
        f"{violations} invariant violations, {time.perf_counter() - started:.0f} s"
    )
    for name in dict.fromkeys(o.scenario for o in outcomes):
        print(f"  {name}: {sum(1 for o in kills if o.scenario == name)} kill points")
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
