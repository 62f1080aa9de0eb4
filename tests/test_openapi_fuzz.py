"""Property-based requests against the server's own OpenAPI schema (schemathesis), on the
ASGI app directly, over a writable copy of the sample notes with the real model.

Every operation of /openapi.json gets a bounded, derandomised set of generated requests,
valid ones and ones that break the schema; none may answer with a 5xx (but the documented
503 of a generated answer without a language model), and every response
must match what the schema declares for it (status code, content type, body). The two
routes that can answer with server-sent events (`POST /api/ask/stream`,
`POST /v1/chat/completions`) are fuzzed the same way, but their 200 body (an event stream)
is checked by parsing its events rather than against a JSON schema. /mcp and the web
pages are not in the schema (tests/test_mcp.py, tests/test_web.py).

The operations are looped over inside one test: schemathesis's pytest integration for a
schema built from a fixture (`schemathesis.pytest.from_fixture`) reads a private pytest
attribute that pytest 9 no longer has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sourcebook import KnowledgeBase
from sourcebook.models import Answer
from sourcebook.surfaces.server import create_app

STREAMING = r"^/(api/ask/stream|v1/chat/completions)$"
MAX_EXAMPLES = 15  # per operation and generation mode

# the Host schemathesis sends to an ASGI app; a loopback server answers only named hosts
ASGI_HOST = "testserver"


def no_server_error(ctx: Any, response: Response, case: schemathesis.Case) -> bool | None:
    """`not_a_server_error`, except the 503 an operation declares for a generated answer
    asked of a knowledge base without a language model (the sample one has none)."""
    declared = str(response.status_code) in case.operation.definition.raw.get("responses", {})
    if response.status_code == 503 and declared and NO_MODEL in response.text:
        return None
    return not_a_server_error(ctx, response, case)


NO_MODEL = "the generative answer mode needs a model"
CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# the operations the schema must keep offering (a route dropped from it is not fuzzed)
EXPECTED = {
    "GET /api/health",
    "GET /api/status",
    "GET /api/documents",
    "POST /api/documents",
    "DELETE /api/documents/{doc_id}",
    "POST /api/documents/{doc_id}/sync",
    "GET /api/documents/{doc_id}/text",
    "GET /api/documents/{doc_id}/links",
    "GET /api/documents/{doc_id}/regions",
    "GET /api/documents/{doc_id}/pages/{page}",
    "GET /api/search",
    "POST /api/ask",
    "GET /api/collections",
    "GET /v1/models",
}


def test_api_fuzz_no_server_errors_and_schema_conformance(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(kb, hosts=[ASGI_HOST])
    ).exclude(path_regex=STREAMING)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == EXPECTED
    _fuzz_all(operations, CHECKS)


def well_formed_events(ctx: Any, response: Response, case: schemathesis.Case) -> bool | None:
    """A 200 event stream is a sequence of `data:` events, each a JSON object, and the
    last one the answer (`/api/ask/stream`: an `answer` event) or `[DONE]` (OpenAI)."""
    if (
        response.status_code != 200
        or "text/event-stream" not in response.headers.get("content-type", [""])[0]
    ):
        return None
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    assert blocks, "an empty event stream"
    data = [
        line.removeprefix("data: ")
        for block in blocks
        for line in block.splitlines()
        if line.startswith("data: ")
    ]
    assert len(data) == len(blocks), f"events without data: {blocks}"
    for item in data[:-1]:
        assert isinstance(json.loads(item), dict), item
    if case.operation.path == "/api/ask/stream":
        assert blocks[-1].startswith("event: answer"), blocks[-1]
        Answer.model_validate_json(data[-1])
    else:
        assert data[-1] == "[DONE]", data[-1]
    return True


def test_streaming_routes_fuzz_no_server_errors_and_well_formed_events(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(kb, hosts=[ASGI_HOST])
    ).include(path_regex=STREAMING)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"POST /api/ask/stream", "POST /v1/chat/completions"}
    _fuzz_all(operations, [no_server_error, status_code_conformance, well_formed_events])


def _fuzz_all(operations: list[APIOperation], checks: list[Any]) -> None:
    """Fuzz every operation (valid requests, and ones breaking the schema where there is
    input to break); every failure is collected and reported at once."""
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    for operation in operations:
        raw = operation.definition.raw
        takes_input = bool(raw.get("parameters") or raw.get("requestBody"))
        # a request without parameters or body cannot break the schema: no negative cases
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * takes_input
        for mode in modes:
            label = f"{operation.label} [{mode.value}]"
            try:
                calls[label] = _fuzz(operation, mode, checks)
            except (Exception, BaseExceptionGroup) as exc:  # all reported below
                failures[label] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert all(calls.values()), calls  # every operation was actually exercised


def _fuzz(operation: APIOperation, mode: GenerationMode, checks: list[Any]) -> int:
    """Run the checks on generated requests for one operation; the number of requests."""
    count = 0

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        nonlocal count
        count += 1
        case.call_and_validate(checks=checks)

    run()
    return count
