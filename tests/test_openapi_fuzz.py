"""Property-based requests against the server's own OpenAPI schema (schemathesis), on the
ASGI app directly, over a writable copy of the sample notes with the real model.

Every operation of /openapi.json gets a bounded, derandomised set of generated requests,
valid ones and ones that break the schema; none may answer with a 5xx (but the documented
503 of a generated answer without a language model), and every response
must match what the schema declares for it (status code, content type, body). Left out:
the two routes that can answer with server-sent events (`POST /api/ask/stream`,
`POST /v1/chat/completions`), whose 200 is an open-ended stream, and /mcp and the web
pages, which are not in the schema.

The operations are looped over inside one test: schemathesis's pytest integration for a
schema built from a fixture (`schemathesis.pytest.from_fixture`) reads a private pytest
attribute that pytest 9 no longer has.
"""

from __future__ import annotations

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
from sourcebook.server import create_app

STREAMING = r"^/(api/ask/stream|v1/chat/completions)$"
MAX_EXAMPLES = 15  # per operation and generation mode


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
    "GET /api/search",
    "POST /api/ask",
    "GET /api/collections",
    "GET /v1/models",
}


def test_api_fuzz_no_server_errors_and_schema_conformance(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(kb)).exclude(
        path_regex=STREAMING
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == EXPECTED

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
                calls[label] = _fuzz(operation, mode)
            except (Exception, BaseExceptionGroup) as exc:  # all reported below
                failures[label] = f"{type(exc).__name__}: {exc}"

    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert all(calls.values()), calls  # every operation was actually exercised


def _fuzz(operation: APIOperation, mode: GenerationMode) -> int:
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
        case.call_and_validate(checks=CHECKS)

    run()
    return count
