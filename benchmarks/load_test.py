"""Bounded HTTP load test of `sourcebook serve` on the loopback interface.

Serves a knowledge base the way `sourcebook serve` does (uvicorn with `create_app`, in a
child process, on a free port of 127.0.0.1), then runs N concurrent asyncio httpx clients
for a fixed time, each issuing `GET /api/search` (80%) or `POST /api/ask` (20%) with a
question drawn from a fixed list of Chinese and English questions, and stops by itself.
Reports per route: requests, errors (a non-2xx status or an exception), throughput and
p50/p95/p99 latency; writes them as JSON.

The questions repeat, so after the first round most query embeddings come from the
knowledge base's query-vector cache: this measures the server under concurrency, not the
embedding model.

Usage:  python benchmarks/load_test.py [--kb PATH] [--clients 50] [--seconds 30]
                                       [--output benchmarks/results/load_test.json]
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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTES = ROOT / "examples" / "notes"
DEFAULT_KB = HERE / "work" / "load-kb"
DEFAULT_OUTPUT = HERE / "results" / "load_test.json"
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


def serve(kb_path: str, sock: socket.socket) -> None:
    """Child process: `sourcebook serve` on an already bound loopback socket."""
    import uvicorn

    from sourcebook import KnowledgeBase, Settings
    from sourcebook.server import create_app

    path = Path(kb_path)
    with KnowledgeBase(path, Settings(kb=path)) as kb:
        config = uvicorn.Config(create_app(kb), log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])


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


async def client(
    number: int,
    http: httpx.AsyncClient,
    deadline: float,
    ask_share: float,
    seed: int,
    stats: dict[str, RouteStats],
) -> None:
    rng = random.Random(seed * 1000 + number)
    while time.monotonic() < deadline:
        question = rng.choice(QUESTIONS)
        route = ASK if rng.random() < ask_share else SEARCH
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


async def load(
    url: str, clients: int, seconds: float, ask_share: float, seed: int
) -> dict[str, Any]:
    stats = {SEARCH: RouteStats(), ASK: RouteStats()}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            *(client(i, http, deadline, ask_share, seed, stats) for i in range(clients))
        )
        elapsed = time.monotonic() - started
    routes = {route: s.summary(elapsed) for route, s in stats.items()}
    every = RouteStats(
        latencies_s=[x for s in stats.values() for x in s.latencies_s],
        errors=sum(s.errors for s in stats.values()),
    )
    total = every.summary(elapsed)
    del total["statuses"], total["exceptions"]
    return {"elapsed_s": round(elapsed, 2), "total": total, "routes": routes}


def wait_until_up(url: str, process: multiprocessing.process.BaseProcess) -> float:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if not process.is_alive():
            raise SystemExit(f"the server exited while starting (code {process.exitcode})")
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if not 1 <= args.clients <= 1000:
        parser.error("--clients must be between 1 and 1000")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be more than 0 and at most 600")
    if not 0 <= args.ask_share <= 1:
        parser.error("--ask-share must be between 0 and 1")

    kb_path = (args.kb or DEFAULT_KB).resolve()
    if args.kb is None:
        ensure_kb(kb_path)
    elif not kb_path.exists():
        parser.error(f"no knowledge base at {kb_path}")

    sock = socket.socket()
    sock.bind((HOST, 0))
    url = f"http://{HOST}:{sock.getsockname()[1]}"
    # fork before this process loads any model: the child inherits the bound socket
    process = multiprocessing.get_context("fork").Process(
        target=serve, args=(str(kb_path), sock), daemon=True
    )
    process.start()
    sock.close()
    try:
        startup_s = wait_until_up(url, process)
        print(f"serving {kb_path} at {url} (up in {startup_s:.1f} s); ", end="")
        print(f"{args.clients} clients for {args.seconds:g} s …", flush=True)
        load_before = os.getloadavg()
        result = asyncio.run(load(url, args.clients, args.seconds, args.ask_share, args.seed))
        load_after = os.getloadavg()
    finally:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn shuts down gracefully
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "knowledge_base": str(kb_path),
        "clients": args.clients,
        "seconds": args.seconds,
        "ask_share": args.ask_share,
        "seed": args.seed,
        "questions": len(QUESTIONS),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "server_startup_s": round(startup_s, 1),
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    total = result["total"]
    print(
        f"{total['requests']} requests, {total['errors']} errors, "
        f"{total['throughput_rps']} req/s in {result['elapsed_s']} s"
    )
    for route, stats in result["routes"].items():
        quantiles = " ".join(f"p{q} {stats.get(f'p{q}_ms', '-')} ms" for q in (50, 95, 99))
        print(
            f"  {route:16} {stats['requests']:6} requests {stats['errors']:4} errors "
            f"{stats['throughput_rps']:7} req/s  {quantiles}"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
