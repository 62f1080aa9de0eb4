"""Long-running and measuring commands: serve, mcp, bench, eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sourcebook.surfaces.cli.common import (
    CliError,
    KbOption,
    app,
    console,
    errors,
    errors_to_exit,
    open_kb,
)


@app.command()
def bench(
    chunks: Annotated[
        list[int] | None, typer.Option("--chunks", help="store sizes to test")
    ] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="embedding models")] = None,
    queries: Annotated[int, typer.Option(help="queries per store")] = 200,
    work: Annotated[Path, typer.Option(help="scratch folder")] = Path("benchmarks/work"),
    output: Annotated[Path | None, typer.Option(help="write JSON results here")] = None,
) -> None:
    """Measure ingestion throughput and hybrid query latency (see benchmarks/)."""
    from sourcebook.evaluation.bench import run_benchmark

    with errors_to_exit():
        results = run_benchmark(chunks or [10_000], model or None, queries, work, console)
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=2, ensure_ascii=False))


@app.command("eval")
def evaluate(
    datasets: Annotated[
        list[str] | None,
        typer.Argument(
            help="cranfield, cmrc2018, study-notes, a BEIR folder or a SQuAD-style .json"
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="test (held out), tune, or all")] = "test",
    model: Annotated[list[str] | None, typer.Option("--model", help="embedding models")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many queries")] = None,
    answers: Annotated[bool, typer.Option(help="also evaluate extractive answers")] = True,
    answer_limit: Annotated[
        int | None, typer.Option(help="evaluate answers on at most this many queries")
    ] = None,
    generate: Annotated[
        bool, typer.Option(help="also evaluate generated answers (SOURCEBOOK_LLM_* model)")
    ] = False,
    work: Annotated[Path, typer.Option(help="scratch folder")] = Path("benchmarks/work/eval"),
    output: Annotated[Path, typer.Option(help="JSON results")] = Path(
        "benchmarks/eval/results.json"
    ),
    chart: Annotated[Path | None, typer.Option(help="PNG chart")] = Path(
        "benchmarks/eval/chart.png"
    ),
) -> None:
    """Measure retrieval and answers on evaluation data through the real pipeline."""
    from sourcebook.evaluation.run import run_eval, summarize
    from sourcebook.settings import DEFAULT_EMBEDDER, Settings

    with errors_to_exit():
        if split not in ("test", "tune", "all"):
            raise CliError("--split must be test, tune or all")
        results = run_eval(
            datasets or ["cranfield", "cmrc2018"],
            split,
            model or [DEFAULT_EMBEDDER],
            Settings(),
            work,
            limit,
            answers,
            lambda message: console.print(f"[dim]{escape(message)}[/]"),
            answer_limit,
            generate,
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        console.print(summarize(results), markup=False)
        console.print(f"results: {escape(str(output))}")
        # --chart "" turns the chart off
        if chart is not None and chart != Path():
            draw_chart(results, chart)


def draw_chart(results: dict[str, Any], chart: Path) -> None:
    """The chart, or, without the optional matplotlib, how to get it (the table and the
    JSON are written before: a missing extra never loses a long evaluation)."""
    from sourcebook.evaluation.run import write_chart

    try:
        drawn = write_chart(results, chart)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "matplotlib":
            raise
        console.print(
            "chart: not drawn, matplotlib is not installed; "
            "`pip install 'sourcebook\\[eval]'` adds it",
        )
        return
    if drawn:
        console.print(f"chart: {escape(str(chart))}")


@app.command()
def serve(
    kb: KbOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="address to listen on: loopback only (127.0.0.1, ::1, localhost) unless "
            "the knowledge base has users (then every request needs an API key)"
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8321,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="keep every source in sync as its files change (see `watch`)"),
    ] = False,
) -> None:
    """Serve the HTTP API (/api, docs at /docs) and an OpenAI-compatible endpoint (/v1).
    Chunks not embedded yet are embedded in the background."""
    # imported here: the web stack is not needed by the other commands
    from sourcebook.surfaces.server import check_host, run_server

    with errors_to_exit(), open_kb(kb) as base:
        authenticated = base.access.has_users()
        check_host(host, authenticated)
        where = f"[{host}]" if ":" in host else host
        console.print(
            f"Serving [bold]{escape(str(base.path))}[/] at http://{where}:{port} "
            f"(API docs: http://{where}:{port}/docs, OpenAI base URL: "
            f"http://{where}:{port}/v1, MCP: http://{where}:{port}/mcp)"
            + ("; every request needs an API key" if authenticated else "")
            + ("; watching every source for changes" if watch else "")
        )
        run_server(base, host, port, watch)


@app.command()
def mcp(
    kb: KbOption = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="SOURCEBOOK_API_KEY",
            help="read as this API key's user (their groups' documents only); "
            "default: the local user, who reads everything",
        ),
    ] = None,
) -> None:
    """Serve the knowledge base to an MCP client (Claude Desktop, an IDE, an agent) over
    stdin/stdout: tools search, ask, get_document and list_collections."""
    # imported here: the MCP SDK and the web stack are not needed by the other commands
    from sourcebook.surfaces.mcp_server import run_stdio
    from sourcebook.surfaces.server import LOCAL_USER as LOCAL_CALLER
    from sourcebook.surfaces.server import Caller

    with errors_to_exit(), open_kb(kb) as base:
        caller = LOCAL_CALLER
        if key is not None:
            user = base.access.authenticate(key.strip())
            if user is None:
                raise CliError(
                    "the API key is not valid (unknown or revoked); an admin creates one "
                    "with `sourcebook key create NAME`"
                )
            caller = Caller.of(user)
        # stdout carries the protocol: anything else goes to stderr
        errors.print(
            f"Sourcebook MCP server on stdio for {escape(str(base.path))} as {caller.name}"
        )
        run_stdio(base, caller)
