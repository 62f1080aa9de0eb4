"""Bounded HTTP load test of `sourcebook serve` on the loopback interface.

Starts `sourcebook serve` (its own process, as a user would, on a free port of 127.0.0.1)
over a knowledge base, then runs N concurrent asyncio httpx clients
for a fixed time, each issuing `GET /api/search` (80%) or `POST /api/ask` (20%), and stops
by itself. Reports per route: requests, errors (a non-2xx status or an exception),
throughput and p50/p95/p99 latency; writes them as JSON.

Questions (`--questions`):
- `notes`: a fixed list of 12 Chinese and English questions about the sample notes. They
  repeat, so after the first round the query vectors come from the server's cache.
- `datasets`: CMRC 2018 questions and Cranfield queries (3,400 distinct), shuffled, each
  request taking the next one: every query is new to the server, as with real users.

Clients (`--think`): with 0 each client sends its next request as soon as the last one is
answered (a closed loop: it measures saturation throughput, and the latency is then
clients / throughput by Little's law). With a mean think time T > 0 each client waits an
exponentially distributed pause (mean T seconds) between requests, like people reading
their results: 50 clients at T = 2 s offer about 25 requests per second.

Attackers (`--attackers N`, issue 12): N more clients that send only maximal requests,
1 MB questions to `POST /api/ask`, as fast as they are answered (422: refused by length);
they are reported as their own route, and their 422s are not errors. Before the load, five
such questions are sent alone and the server's CPU time per request is measured. The
attackers run in a process of their own (`--attacker-cpus` pins it), with the body built
once, so that generating 150 MB a second does not slow the measuring clients' own event
loop; `--alternate R` runs R rounds of a phase without and a phase with them on one server
and reports the search p95 of each and their ratio.

Usage:  python benchmarks/load_test.py [--kb PATH] [--clients 50] [--seconds 30]
            [--think 0] [--questions notes|datasets] [--ask-share 0.2] [--key sb_…]
            [--attackers 0] [--attacker-cpus 1] [--alternate 0]
            [--output benchmarks/results/load_test/latest.json]
Without --kb, the sample notes are indexed once into benchmarks/work/load-kb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTES = ROOT / "examples" / "notes"
DEFAULT_KB = HERE / "work" / "load-kb"
DEFAULT_OUTPUT = HERE / "results" / "load_test" / "latest.json"
HOST = "127.0.0.1"  # loopback only: nothing else is ever contacted

QUESTIONS = [
    "LoRA 为什么能减少显存？",
    "LoRA 的 rank r 一般取多少？",
    "Adam 的默认 β2 是多少？",
    "GPT-2 的词表有多大？",
    "PagedAttention 的每个 block 存多少个 token？",
    "Mixtral 8x7B 每个 token 激活多少参数？",
    "GradScaler 的默认 init_scale 是多少？",
    "What does ONNX Runtime's execution provider do?",
    "Why do Transformers use LayerNorm instead of BatchNorm?",
    "What auxiliary loss coefficient does the Switch Transformer use for load balancing?",
    "What is the default prefetch_factor of a PyTorch DataLoader?",
    "Who won the 1998 FIFA World Cup final?",  # off topic: "not found"
]


def dataset_questions(seed: int) -> list[str]:
    """Every CMRC 2018 question and Cranfield query, shuffled (seeded), no repeats."""
    from sourcebook.evaluation.datasets import load_named

    texts = [q.text for name in ("cmrc2018", "cranfield") for q in load_named(name).queries]
    unique = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(unique)
    return unique


SEARCH = "GET /api/search"
ASK = "POST /api/ask"
REQUEST_TIMEOUT_S = 120.0  # one request; bounds how long the run can outlast --seconds
START_TIMEOUT_S = 300.0  # opening the knowledge base and loading the models


def ensure_kb(path: Path) -> None:
    """Index the sample notes into `path` unless a knowledge base is already there."""
    from sourcebook import KnowledgeBase, Settings

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with KnowledgeBase.create(path, Settings(kb=path)) as kb:
        report = kb.add([NOTES])
    if report.failed:
        raise SystemExit(f"could not index the sample notes: {report.failed}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(kb_path: Path, port: int) -> subprocess.Popen[bytes]:
    """`sourcebook serve` in a process of its own. (Not a fork of this one: a server forked
    from a Python process that had imported the package answered 2x slower, measured.)"""
    command = [sys.executable, "-m", "sourcebook", "serve", "--kb", str(kb_path)]
    return subprocess.Popen(
        [*command, "--host", HOST, "--port", str(port)], stdout=subprocess.DEVNULL
    )


@dataclass
class RouteStats:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)

    def record(self, latency: float, status: int | None, exc: BaseException | None) -> None:
        self.latencies_s.append(latency)
        if exc is not None:
            name = type(exc).__name__
            self.exceptions[name] = self.exceptions.get(name, 0) + 1
            self.errors += 1
            return
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if status is None or not 200 <= status < 300:
            self.errors += 1

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        ms = np.array(self.latencies_s) * 1000
        quantiles = (
            {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}
            if len(ms)
            else {}
        )
        return {
            "requests": len(ms),
            "errors": self.errors,
            "throughput_rps": round(len(ms) / elapsed_s, 2),
            **quantiles,
            "max_ms": round(float(ms.max()), 1) if len(ms) else None,
            "statuses": self.statuses,
            "exceptions": self.exceptions,
        }


@dataclass
class Workload:
    questions: list[str]
    ask_share: float
    think_s: float
    seed: int
    drawn: int = 0

    def next_question(self, rng: random.Random) -> str:
        """The next question in turn (datasets), or a random one of a short list (notes)."""
        if len(self.questions) <= len(QUESTIONS):
            return rng.choice(self.questions)
        self.drawn += 1
        return self.questions[(self.drawn - 1) % len(self.questions)]


async def client(
    number: int,
    http: httpx.AsyncClient,
    deadline: float,
    workload: Workload,
    stats: dict[str, RouteStats],
) -> None:
    rng = random.Random(workload.seed * 1000 + number)
    if workload.think_s:  # users do not all press enter in the same millisecond
        await asyncio.sleep(rng.uniform(0, workload.think_s))
    while time.monotonic() < deadline:
        question = workload.next_question(rng)
        route = ASK if rng.random() < workload.ask_share else SEARCH
        started = time.perf_counter()
        status: int | None = None
        error: BaseException | None = None
        try:
            if route == SEARCH:
                response = await http.get("/api/search", params={"q": question, "limit": 10})
            else:
                response = await http.post("/api/ask", json={"question": question})
            await response.aread()
            status = response.status_code
        except httpx.HTTPError as exc:
            error = exc
        stats[route].record(time.perf_counter() - started, status, error)
        if workload.think_s:
            pause = rng.expovariate(1 / workload.think_s)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))


ATTACK = "POST /api/ask (1 MB)"
MAXIMAL_QUESTION = "显存为什么" * (1024 * 1024 // 15)  # 1 MB of UTF-8


MAXIMAL_BODY = json.dumps({"question": MAXIMAL_QUESTION}, ensure_ascii=False).encode()


async def attacker(http: httpx.AsyncClient, deadline: float, stats: RouteStats) -> None:
    """Maximal requests back to back; the expected answer is 422 (too long). The body is
    built once: what is measured is the server, not the encoding of 1 MB per request."""
    body = MAXIMAL_BODY
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status: int | None = None
        error: BaseException | None = None
        try:
            response = await http.post("/api/ask", content=body, headers=headers)
            await response.aread()
            status = response.status_code
        except httpx.HTTPError as exc:
            error = exc
        stats.record(time.perf_counter() - started, 200 if status == 422 else status, error)


async def attack_for(url: str, attackers: int, seconds: float, key: str | None) -> RouteStats:
    stats = RouteStats()
    limits = httpx.Limits(max_connections=attackers, max_keepalive_connections=attackers)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=httpx.Timeout(REQUEST_TIMEOUT_S), headers=headers
    ) as http:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(attacker(http, deadline, stats) for _ in range(attackers)))
    return stats


def attack_process(
    url: str,
    attackers: int,
    seconds: float,
    key: str | None,
    cpus: list[int] | None,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """The attackers' own process (and, with `cpus`, their own cores): sending 150 MB a
    second from the measuring clients' event loop would slow the measurement itself.
    Says `ready` once imported, starts when `go` is set, puts its RouteStats."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    ready.set()
    go.wait()
    results.put(asyncio.run(attack_for(url, attackers, seconds, key)))


async def load(
    url: str,
    clients: int,
    seconds: float,
    workload: Workload,
    key: str | None = None,
    attackers: int = 0,
    attacker_cpus: list[int] | None = None,
) -> dict[str, Any]:
    stats = {SEARCH: RouteStats(), ASK: RouteStats()}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Event(), context.Event(), context.Queue()
    process = None
    if attackers:
        process = context.Process(
            target=attack_process,
            args=(url, attackers, seconds, key, attacker_cpus, ready, go, results),
            daemon=True,
        )
        process.start()
        if not await asyncio.to_thread(ready.wait, START_TIMEOUT_S):
            raise SystemExit("the attackers' process did not start")
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=timeout, headers=headers
    ) as http:
        go.set()
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(client(i, http, deadline, workload, stats) for i in range(clients)))
        elapsed = time.monotonic() - started
    attack_stats = None
    if process is not None:
        attack_stats = await asyncio.to_thread(results.get, True, REQUEST_TIMEOUT_S + 60)
        process.join(10)
    routes = {route: s.summary(elapsed) for route, s in stats.items()}
    if attack_stats is not None:
        routes[ATTACK] = attack_stats.summary(elapsed)
    every = RouteStats(
        latencies_s=[x for s in stats.values() for x in s.latencies_s],
        errors=sum(s.errors for s in stats.values()),
    )
    total = every.summary(elapsed)
    del total["statuses"], total["exceptions"]
    return {"elapsed_s": round(elapsed, 2), "total": total, "routes": routes}


def cpu_per_maximal_request(url: str, server: psutil.Process, key: str | None) -> float:
    """The server's CPU seconds per 1 MB question, five sent one after another, alone."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    before = sum(server.cpu_times()[:2])
    for _ in range(5):
        response = httpx.post(
            f"{url}/api/ask", json={"question": MAXIMAL_QUESTION}, headers=headers, timeout=60
        )
        if response.status_code != 422:
            raise SystemExit(f"a 1 MB question got {response.status_code}, not 422")
    return (sum(server.cpu_times()[:2]) - before) / 5


def compare(phases: list[dict[str, Any]]) -> dict[str, float]:
    """Search p95 under attack over idle: the median of each kind of phase, and their ratio."""
    idle = [p["routes"][SEARCH]["p95_ms"] for p in phases if not p["attackers"]]
    attacked = [p["routes"][SEARCH]["p95_ms"] for p in phases if p["attackers"]]
    p95 = {"idle_p95_ms": float(np.median(idle)), "attacked_p95_ms": float(np.median(attacked))}
    return {**p95, "ratio": round(p95["attacked_p95_ms"] / p95["idle_p95_ms"], 2)}


def machine(load_before: Sequence[float], load_after: Sequence[float]) -> dict[str, Any]:
    """The machine a run was on, and its load average before and after the run."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def wait_until_up(url: str, process: subprocess.Popen[bytes], key: str | None) -> float:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            raise SystemExit(f"the server exited while starting (code {process.returncode})")
        try:
            if httpx.get(f"{url}/api/health", headers=headers, timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {START_TIMEOUT_S:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kb", type=Path, help=f"knowledge base (default: {DEFAULT_KB})")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send requests")
    parser.add_argument("--ask-share", type=float, default=0.2, help="share of POST /api/ask")
    parser.add_argument(
        "--think", type=float, default=0.0, help="mean pause between a client's requests, s"
    )
    parser.add_argument("--questions", choices=["notes", "datasets"], default="notes")
    parser.add_argument(
        "--key", help="API key the clients send (a knowledge base with users: its ACL applies)"
    )
    parser.add_argument(
        "--attackers", type=int, default=0, help="extra clients sending 1 MB questions"
    )
    parser.add_argument(
        "--attacker-cpus",
        help="cores the attackers' process is pinned to (taskset-style list: 1 or 0,1)",
    )
    parser.add_argument(
        "--alternate",
        type=int,
        default=0,
        help="ROUNDS of --seconds without attackers, then --seconds with them, on one server",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if not 1 <= args.clients <= 1000:
        parser.error("--clients must be between 1 and 1000")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be more than 0 and at most 600")
    if not 0 <= args.ask_share <= 1:
        parser.error("--ask-share must be between 0 and 1")
    if not 0 <= args.think <= 60:
        parser.error("--think must be between 0 and 60 seconds")
    questions = QUESTIONS if args.questions == "notes" else dataset_questions(args.seed)
    workload = Workload(questions, args.ask_share, args.think, args.seed)

    kb_path = (args.kb or DEFAULT_KB).resolve()
    if args.kb is None:
        ensure_kb(kb_path)
    elif not kb_path.exists():
        parser.error(f"no knowledge base at {kb_path}")

    port = free_port()
    url = f"http://{HOST}:{port}"
    process = start_server(kb_path, port)
    try:
        startup_s = wait_until_up(url, process, args.key)
        print(f"serving {kb_path} at {url} (up in {startup_s:.1f} s); ", end="")
        print(f"{args.clients} clients for {args.seconds:g} s …", flush=True)
        server = psutil.Process(process.pid)
        maximal_cpu_s = cpu_per_maximal_request(url, server, args.key)
        load_before = os.getloadavg()
        cpus = [int(c) for c in args.attacker_cpus.split(",")] if args.attacker_cpus else None
        phases = []
        for attackers in [0, args.attackers] * args.alternate or [args.attackers]:
            cpu_before = sum(server.cpu_times()[:2])
            phase = asyncio.run(
                load(url, args.clients, args.seconds, workload, args.key, attackers, cpus)
            )
            # CPU the server used, in cores: how close to saturation the run was
            phase["server_cpu_cores"] = round(
                (sum(server.cpu_times()[:2]) - cpu_before) / phase["elapsed_s"], 2
            )
            phase["attackers"] = attackers
            phase["load_average"] = round(os.getloadavg()[0], 2)
            phases.append(phase)
        result = phases[-1]
        server_cores = result["server_cpu_cores"]
        load_after = os.getloadavg()
    finally:
        process.terminate()  # SIGTERM: uvicorn shuts down gracefully
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "knowledge_base": str(kb_path),
        "clients": args.clients,
        "seconds": args.seconds,
        "ask_share": args.ask_share,
        "think_s": args.think,
        "with_key": bool(args.key),
        "seed": args.seed,
        "questions": args.questions,
        "distinct_questions": len(questions),
        "machine": machine(load_before, load_after),
        "server_startup_s": round(startup_s, 1),
        "attackers": args.attackers,
        "server_cpu_s_per_1mb_question": round(maximal_cpu_s, 3),
        "server_cpu_cores": round(server_cores, 2),
        **result,
        **({"phases": phases, "comparison": compare(phases)} if args.alternate else {}),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    total = result["total"]
    print(f"a 1 MB question costs the server {maximal_cpu_s:.3f} s of CPU (alone)")
    print(
        f"{total['requests']} requests, {total['errors']} errors, "
        f"{total['throughput_rps']} req/s in {result['elapsed_s']} s; "
        f"the server used {server_cores:.2f} of {os.cpu_count()} cores"
    )
    for route, stats in result["routes"].items():
        quantiles = " ".join(f"p{q} {stats.get(f'p{q}_ms', '-')} ms" for q in (50, 95, 99))
        print(
            f"  {route:16} {stats['requests']:6} requests {stats['errors']:4} errors "
            f"{stats['throughput_rps']:7} req/s  {quantiles}"
        )
    if args.alternate:
        for phase in phases:
            search = phase["routes"][SEARCH]
            print(
                f"  attackers {phase['attackers']}: search p50 {search.get('p50_ms')} ms, "
                f"p95 {search.get('p95_ms')} ms, server {phase['server_cpu_cores']} cores, "
                f"load {phase['load_average']}"
            )
        print(f"  {compare(phases)}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
