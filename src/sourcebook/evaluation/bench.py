"""`sourcebook bench`: ingestion throughput and hybrid query latency, through `KnowledgeBase`.

What is measured (see benchmarks/README.md):

1. A bilingual corpus is written as Markdown files (five passages per file, each under its own
   `## ` heading, each passage small enough to be exactly one chunk): CMRC 2018 dev paragraphs
   (Chinese) and Cranfield abstracts (English) from a pool of a few thousand sentences, first as
   they are, then recombined deterministically (seeded choice of sentences, mostly from one
   "topic" paragraph) until the corpus has the wanted number of chunks.
2. Ingestion: a fresh knowledge base per embedding model, `kb.add([folder])` end to end
   (convert, chunk, embed, store, index), and the time spent inside the model alone.
3. Query latency at each store size for the default model. Embedding 100k chunks with
   multilingual-e5-small on 2 cores takes hours (~6.5 chunks/s), so these stores are built with
   `PrecomputedEmbedder`: a chunk's vector is the normalised mean of the *real* model's vectors
   of its sentences (computed once over the pool and cached). Queries are embedded by the real
   model, and search runs exactly the product's code path. Where time allows, a store of real
   chunk embeddings is built as well, to show the two agree.
4. The query phase of each store runs in a fresh process (what `sourcebook search` or a server
   would be), so its peak RSS is that of querying alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from sourcebook.index.embedders import (
    EMBEDDERS,
    Embedder,
    EmbedderOptions,
    Vectors,
    get_embedder,
)
from sourcebook.kb import KnowledgeBase
from sourcebook.settings import DEFAULT_EMBEDDER, Settings
from sourcebook.store.embedded import Filters
from sourcebook.text import count_tokens, normalize, sentence_spans

DATA_ENV = "SOURCEBOOK_DATA"
POOL_SENTENCES = 3_000  # half Chinese, half English; embedded once per model (cached)
PASSAGES_PER_FILE = 5
BODY_TOKENS = (80, 250)  # a passage body; with its heading it stays under chunk_tokens=300
TOPIC_SHARE = 0.7  # share of a recombined passage's sentences taken from its topic paragraph
INGEST_SAMPLE = {"multilingual-e5-small": 600, "use-multilingual": 3_000}
INGEST_SAMPLE_DEFAULT = 600
WARMUP_QUERIES = 10
LIMIT = 10
FILTER_GLOB = "*cmrc*"
TARGET_P95_MS = 50.0
VERIFY_MAX_CHUNKS = 10_000
VERIFY_BUDGET_S = 900.0  # largest real-embedding verification run we allow ourselves
SEED = 20_240_601

APPROXIMATION = (
    "Stores used for query latency are built with PrecomputedEmbedder: each chunk vector is the "
    "normalised mean of real {model} vectors of its sentences (cached once over a {pool}-sentence "
    "pool), so the vectors have the real model's geometry; queries are embedded by the real model "
    "and search runs exactly the product's code path (KnowledgeBase.search)."
)


# --------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Paragraph:
    """A source paragraph of the pool: its language, title and sentence ids."""

    language: str  # "zh" or "en"
    title: str
    sentences: tuple[int, ...]


@dataclass(frozen=True)
class Passage:
    language: str
    heading: str
    body: str
    sentences: tuple[int, ...]


@dataclass
class Pool:
    """The sentence pool every benchmark passage is built from, and the real queries."""

    sentences: list[str] = field(default_factory=list)
    paragraphs: list[Paragraph] = field(default_factory=list)
    queries_zh: list[str] = field(default_factory=list)
    queries_en: list[str] = field(default_factory=list)

    def digest(self) -> str:
        return hashlib.blake2b("\n".join(self.sentences).encode(), digest_size=8).hexdigest()


def data_folder() -> Path:
    """`$SOURCEBOOK_DATA`, else the `shared/data` folder beside the checkout."""
    if DATA_ENV in os.environ:
        return Path(os.environ[DATA_ENV])
    for parent in Path(__file__).resolve().parents:
        candidate = parent.parent / "shared" / "data"
        if (candidate / "cmrc2018").is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


_CRAN_DOC = re.compile(r"^\.I (\d+)\n(.*?)(?=^\.I |\Z)", re.S | re.M)
_CRAN_FIELD = re.compile(r"^\.([TAWB])\n(.*?)(?=^\.[TAWB]\n|\Z)", re.S | re.M)
_MARKDOWN_START = re.compile(r"^(?:[#|>`~]|[-*+]\s|\d+[.)]\s)")


def _clean_english(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ([.,;:?!)])", r"\1", text).replace("( ", "(")


def _usable(sentence: str) -> bool:
    return 5 <= count_tokens(sentence) <= 150 and not _MARKDOWN_START.match(sentence)


def load_pool(folder: Path, size: int = POOL_SENTENCES, seed: int = SEED) -> Pool:
    """Whole paragraphs (in seeded order) until each language has size/2 sentences."""
    rng = random.Random(seed)
    cmrc = json.loads((folder / "cmrc2018" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    zh_paragraphs: list[tuple[str, str, list[str]]] = []
    for article in cmrc["data"]:
        for paragraph in article["paragraphs"]:
            questions = [normalize(q["question"]).strip() for q in paragraph["qas"]]
            zh_paragraphs.append(
                (normalize(article["title"]).strip(), normalize(paragraph["context"]), questions)
            )
    cran = (folder / "cranfield" / "cran.all.1400").read_text(encoding="latin-1")
    en_paragraphs: list[tuple[str, str, list[str]]] = []
    for match in _CRAN_DOC.finditer(cran):
        fields = {m[1]: m[2] for m in _CRAN_FIELD.finditer(match[2])}
        body = _clean_english(fields.get("W", ""))
        title = _clean_english(fields.get("T", "")).rstrip(".").strip()
        if body:
            en_paragraphs.append((" ".join(title.split()[:10]) or f"doc {match[1]}", body, []))
    raw_queries = (folder / "cranfield" / "cran.qry").read_text(encoding="latin-1")
    queries_en = [
        _clean_english(m[2].split(".W\n", 1)[-1]) for m in _CRAN_DOC.finditer(raw_queries)
    ]

    pool = Pool()
    for language, paragraphs in (("zh", zh_paragraphs), ("en", en_paragraphs)):
        order = list(range(len(paragraphs)))
        rng.shuffle(order)
        taken = 0
        for index in order:
            if taken >= size // 2:
                break
            title, text, questions = paragraphs[index]
            ids = []
            for start, end in sentence_spans(text):
                sentence = " ".join(text[start:end].split())
                if _usable(sentence):
                    ids.append(len(pool.sentences))
                    pool.sentences.append(sentence)
            if ids:
                pool.paragraphs.append(Paragraph(language, title, tuple(ids)))
                taken += len(ids)
                pool.queries_zh.extend(questions)
    pool.queries_en = [q for q in queries_en if q]
    return pool


def _join(language: str, sentences: Sequence[str]) -> str:
    return ("" if language == "zh" else " ").join(sentences)


def generate_passages(pool: Pool, seed: int = SEED) -> Iterator[Passage]:
    """The pool's paragraphs as they are (cut to the budget), then endless distinct
    recombinations; the same seed always yields the same sequence."""
    rng = random.Random(seed)
    seen: set[str] = set()
    serial = 0

    def make(paragraph: Paragraph, ids: Sequence[int]) -> Passage | None:
        nonlocal serial
        body = _join(paragraph.language, [pool.sentences[i] for i in ids])
        if body in seen:
            return None
        seen.add(body)
        serial += 1
        return Passage(paragraph.language, f"{paragraph.title} #{serial}", body, tuple(ids))

    high = BODY_TOKENS[1]
    for paragraph in pool.paragraphs:
        part: list[int] = []
        tokens = 0
        for sid in paragraph.sentences:
            n = count_tokens(pool.sentences[sid])
            if part and tokens + n > high:
                if (made := make(paragraph, part)) is not None:
                    yield made
                part, tokens = [], 0
            part.append(sid)
            tokens += n
        if part and (made := make(paragraph, part)) is not None:
            yield made
    by_language: dict[str, list[int]] = {"zh": [], "en": []}
    topics: dict[str, list[Paragraph]] = {"zh": [], "en": []}
    for paragraph in pool.paragraphs:
        by_language[paragraph.language].extend(paragraph.sentences)
        topics[paragraph.language].append(paragraph)
    while True:  # half Chinese, half English
        paragraph = rng.choice(topics[rng.choice(("zh", "en"))])
        topic = list(paragraph.sentences)
        rng.shuffle(topic)
        others = by_language[paragraph.language]
        target = rng.randint(*BODY_TOKENS)
        ids: list[int] = []
        tokens = 0
        for _ in range(64):
            from_topic = bool(topic) and rng.random() < TOPIC_SHARE
            sid = topic.pop() if from_topic else rng.choice(others)
            if sid in ids:
                continue
            n = count_tokens(pool.sentences[sid])
            if ids and tokens + n > target:
                break
            if not ids and n > high:
                continue
            ids.append(sid)
            tokens += n
        if ids and (made := make(paragraph, ids)) is not None:
            yield made


def write_corpus(folder: Path, passages: Sequence[Passage]) -> int:
    """Markdown files of PASSAGES_PER_FILE passages of one language; returns the file count."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    groups: dict[str, list[Passage]] = {"zh": [], "en": []}
    files = 0

    def flush(language: str) -> None:
        nonlocal files
        files += 1
        name = "cmrc" if language == "zh" else "cran"
        sub = folder / f"{files // 1000:03d}"
        sub.mkdir(exist_ok=True)
        text = "\n\n".join(f"## {p.heading}\n\n{p.body}" for p in groups[language]) + "\n"
        (sub / f"{name}-{files:06d}.md").write_text(text, encoding="utf-8")
        groups[language] = []

    for passage in passages:
        groups[passage.language].append(passage)
        if len(groups[passage.language]) == PASSAGES_PER_FILE:
            flush(passage.language)
    for language in ("zh", "en"):
        if groups[language]:
            flush(language)
    return files


def mixed_queries(pool: Pool, count: int, seed: int = SEED) -> list[str]:
    """`count` distinct real questions, alternating Chinese (CMRC, about the pool's paragraphs)
    and English (Cranfield); they repeat only when more are asked for than exist."""
    rng = random.Random(seed + 1)
    zh = list(dict.fromkeys(pool.queries_zh))
    en = list(dict.fromkeys(pool.queries_en))
    rng.shuffle(zh)
    rng.shuffle(en)
    return [(zh[i // 2 % len(zh)] if i % 2 == 0 else en[i // 2 % len(en)]) for i in range(count)]


# ---------------------------------------------------------------------------- embedders


class TimedEmbedder:
    """Delegates to a real embedder and records the time spent inside it."""

    def __init__(self, model: Embedder) -> None:
        self.model = model
        self.name: str = model.name
        self.dim: int = model.dim
        self.passage_seconds = 0.0
        self.passages = 0
        self.query_seconds: list[float] = []
        self.query_vectors: dict[str, Vectors] = {}

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        vectors = self.model.embed_passages(texts)
        self.passage_seconds += time.perf_counter() - started
        self.passages += len(texts)
        return vectors

    def embed_query(self, text: str) -> Vectors:
        started = time.perf_counter()
        vector = self.model.embed_query(text)
        self.query_seconds.append(time.perf_counter() - started)
        self.query_vectors[text] = vector
        return vector


class PrecomputedEmbedder:
    """The `Embedder` protocol over cached real sentence vectors (for big benchmark stores).

    `embed_passages` returns, for a chunk, the normalised mean of the real model's vectors of
    its sentences; `embed_query` calls the real model, so query embedding costs what it costs
    in the product. Chunks whose sentences are not all in the pool (none, when the corpus
    comes from `generate_passages`) are embedded by the real model and counted in `fallbacks`.
    """

    def __init__(self, model: Embedder, sentences: Sequence[str], vectors: Vectors) -> None:
        if vectors.shape != (len(sentences), model.dim):
            raise ValueError("one vector of the model's dimension is needed per sentence")
        self.model = model
        self.name: str = model.name
        self.dim: int = model.dim
        self._vectors = vectors
        self._sentence_ids = {s: i for i, s in enumerate(sentences)}
        self._passages: dict[str, tuple[int, ...]] = {}
        self.fallbacks = 0

    def register(self, passages: Sequence[Passage]) -> None:
        for passage in passages:
            self._passages[_key(passage.body)] = passage.sentences

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        for row, text in enumerate(texts):
            ids = self._ids(text)
            if ids is None:
                missing.append(row)
                continue
            mean = self._vectors[list(ids)].mean(axis=0)
            out[row] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        if missing:
            self.fallbacks += len(missing)
            out[missing] = self.model.embed_passages([texts[i] for i in missing])
        return out

    def embed_query(self, text: str) -> Vectors:
        return self.model.embed_query(text)

    def _ids(self, text: str) -> tuple[int, ...] | None:
        lines = text.strip().split("\n")
        if lines and lines[0].startswith("#"):  # the heading line (not in the pool)
            lines = lines[1:]
        body = "\n".join(lines)
        ids = self._passages.get(_key(body))
        if ids is not None:
            return ids
        found = []
        for start, end in sentence_spans(body):
            sid = self._sentence_ids.get(" ".join(body[start:end].split()))
            if sid is None:
                return None
            found.append(sid)
        return tuple(found) or None


def _key(body: str) -> str:
    return " ".join(body.split())


def sentence_vectors(model: Embedder, pool: Pool, work: Path, console: Console) -> Vectors:
    """Real vectors of every pool sentence, cached as .npy in `work`."""
    cache = work / f"sentences-{model.name}-{pool.digest()}.npy"
    if cache.exists():
        cached = np.load(cache)
        if cached.shape == (len(pool.sentences), model.dim):
            console.print(f"  sentence vectors: cached ({cache.name})")
            return np.asarray(cached, dtype=np.float32)
    console.print(f"  embedding {len(pool.sentences)} pool sentences with {model.name} ...")
    started = time.perf_counter()
    parts = [
        model.embed_passages(pool.sentences[i : i + 32]) for i in range(0, len(pool.sentences), 32)
    ]
    vectors = np.vstack(parts).astype(np.float32)
    np.save(cache, vectors)
    console.print(f"  ... {time.perf_counter() - started:.0f} s")
    return vectors


# ------------------------------------------------------------------------------ measuring


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "mean": round(float(ms.mean()), 2),
    }


STAGES = ("filter", "embed", "bm25", "dense", "hits", "rerank", "other")


class StageClock:
    """Times the calls a real `kb.search` makes, by wrapping methods of its store and
    reranker on the instance (so the breakdown follows the product's code as it changes).

    filter = store.search_scope; bm25 = store.keyword_search (analysis included);
    dense = store.vector_search; hits = store.hits (SQL hydration); rerank = reranker.rerank
    plus store.keyword_statistics; embed = the model; other = the rest of the search
    (fusion, near-duplicate removal, building results).
    """

    def __init__(self, kb: KnowledgeBase, embedder: TimedEmbedder) -> None:
        self.spent: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._embedder = embedder
        store = kb.store
        for method, stage in (
            ("search_scope", "filter"),
            ("keyword_search", "bm25"),
            ("vector_search", "dense"),
            ("hits", "hits"),
            ("keyword_statistics", "rerank"),
        ):
            self._wrap(store, method, stage)
        reranker = kb.reranker
        if reranker is not None:
            self._wrap(reranker, "rerank", "rerank")

    def _wrap(self, owner: object, method: str, stage: str) -> None:
        original: Callable[..., Any] = getattr(owner, method)
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - started

        setattr(owner, method, timed)

    def search(
        self, kb: KnowledgeBase, query: str, filters: Filters | None
    ) -> tuple[float, dict[str, float], int, list[str]]:
        """(seconds, seconds per stage, model calls, hit texts) of one `kb.search`."""
        for stage in self.spent:
            self.spent[stage] = 0.0
        before = len(self._embedder.query_seconds)
        started = time.perf_counter()
        hits = kb.search(query, limit=LIMIT, filters=filters)
        total = time.perf_counter() - started
        model = self._embedder.query_seconds[before:]
        stages = dict(self.spent)
        stages["embed"] = sum(model)
        stages["other"] = max(0.0, total - sum(stages.values()))
        return total, stages, len(model), [_key(h.text) for h in hits]


def _measure_queries(
    kb_path: str, model: str, queries: list[str], warmup: list[str], threads: int | None
) -> dict[str, Any]:
    """The query phase, run in a fresh process.

    Each pass (unfiltered, filtered) opens its own `KnowledgeBase`, so the per-instance cache
    of query vectors never serves a measured query: every search embeds its query.
    """
    process = psutil.Process()
    settings = Settings(kb=Path(kb_path))
    timed = TimedEmbedder(get_embedder(model, EmbedderOptions(threads=threads)))
    result: dict[str, Any] = {}
    top: list[list[str]] = []
    peak = rss_ready = 0
    for label, filters in (("search", None), ("filtered", Filters(path_glob=FILTER_GLOB))):
        started = time.perf_counter()
        kb = KnowledgeBase(kb_path, settings, embedder=timed)
        result.setdefault("open_s", round(time.perf_counter() - started, 3))
        for query in warmup:
            kb.search(query, limit=LIMIT, filters=filters)
        rss_ready = rss_ready or process.memory_info().rss
        clock = StageClock(kb, timed)
        totals: list[float] = []
        embeds: list[float] = []
        calls: list[int] = []
        hit_counts: list[int] = []
        stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for query in queries:
            total, spent, model_calls, texts = clock.search(kb, query, filters)
            totals.append(total)
            embeds.append(spent["embed"])
            calls.append(model_calls)
            hit_counts.append(len(texts))
            for stage, seconds in spent.items():
                stages[stage].append(seconds)
            if filters is None:
                top.append(texts)
            peak = max(peak, process.memory_info().rss)
        result[label] = {
            "total": _percentiles(totals),
            "embed": _percentiles(embeds),
            "embed_calls_per_search": round(float(np.mean(calls)), 2),
            "retrieval": _percentiles([t - e for t, e in zip(totals, embeds, strict=True)]),
            "mean_hits": round(float(np.mean(hit_counts)), 2),
            "stages": {stage: _percentiles(values) for stage, values in stages.items()},
        }
        kb.close()
    result["ask"] = _measure_asks(kb_path, settings, timed, queries, warmup)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["rss_ready_mb"] = round(rss_ready / 1e6, 1)
    result["rss_peak_mb"] = round(max(peak, _peak_rss()) / 1e6, 1)
    result["top"] = top
    return result


def _measure_asks(
    kb_path: str, settings: Settings, embedder: Embedder, queries: list[str], warmup: list[str]
) -> dict[str, Any]:
    """Extractive answers (`kb.ask`: retrieval, answer units, judge) on a fresh
    `KnowledgeBase`, so no measured question's vectors are cached; the warm-up loads the
    models and the bilingual dictionary."""
    with KnowledgeBase(kb_path, settings, embedder=embedder) as kb:
        for query in warmup:
            kb.ask(query)
        totals: list[float] = []
        found = 0
        for query in queries:
            started = time.perf_counter()
            found += kb.ask(query).found
            totals.append(time.perf_counter() - started)
    return {"total": _percentiles(totals), "answered": round(found / max(1, len(queries)), 3)}


def _peak_rss() -> int:
    """This process's peak RSS in bytes (Linux VmHWM).

    Not `getrusage().ru_maxrss`: Linux carries that across exec, so a child started from a
    big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _in_fresh_process(
    kb_path: Path, model: str, queries: list[str], warmup: list[str], threads: int | None
) -> dict[str, Any]:
    """`_measure_queries` in a new interpreter (`python -m sourcebook.evaluation.bench`),
    JSON both ways."""
    request = json.dumps([str(kb_path), model, queries, warmup, threads], ensure_ascii=False)
    done = subprocess.run(
        [sys.executable, "-m", "sourcebook.evaluation.bench"],
        input=request,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the query process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _child_main() -> None:
    kb_path, model, queries, warmup, threads = json.loads(sys.stdin.read())
    result = _measure_queries(kb_path, model, queries, warmup, threads)
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


def _overlap(a: list[list[str]], b: list[list[str]]) -> float:
    shares = [len(set(x) & set(y)) / max(1, len(x)) for x, y in zip(a, b, strict=True) if x]
    return round(float(np.mean(shares)), 3) if shares else 0.0


def _ingest(
    kb_path: Path, folder: Path, settings: Settings, embedder: Embedder
) -> tuple[float, int, int]:
    """(seconds, chunks, documents) of `kb.add([folder])` into a fresh knowledge base."""
    if kb_path.exists():
        shutil.rmtree(kb_path)
    with KnowledgeBase.create(kb_path, settings, embedder=embedder) as kb:
        started = time.perf_counter()
        report = kb.add([folder])
        seconds = time.perf_counter() - started
        if report.failed:
            raise RuntimeError(f"benchmark files failed to index: {report.failed[:3]}")
        status = kb.status()
        return seconds, status.chunks, status.documents


# ---------------------------------------------------------------------------------- main


def run_benchmark(
    chunk_sizes: list[int],
    models: list[str] | None,
    queries: int,
    work: Path,
    console: Console,
    verify_max_chunks: int = VERIFY_MAX_CHUNKS,
    verify_budget_s: float = VERIFY_BUDGET_S,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns JSON-able results.

    `models`: ingestion is measured for each (default: every registered model); query latency
    for each given model, or for the default model when none is given.
    """
    unknown = [m for m in models or [] if m not in EMBEDDERS]
    if unknown:
        raise ValueError(f"unknown embedding model(s): {', '.join(unknown)}")
    if queries < 1 or any(n < 1 for n in chunk_sizes):
        raise ValueError("--queries and --chunks must be positive")
    began = time.perf_counter()
    work = work.resolve() / "bench"
    work.mkdir(parents=True, exist_ok=True)
    base = Settings()
    threads = base.threads
    ingest_models = list(models or EMBEDDERS)
    query_models = list(models or [DEFAULT_EMBEDDER])

    console.print(f"[bold]sourcebook bench[/] (work folder {work})")
    pool = load_pool(data_folder())
    zh_sentences = sum(len(p.sentences) for p in pool.paragraphs if p.language == "zh")
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": base.model_dump(mode="json", exclude={"kb"}),
        "corpus": {
            "pool_sentences": len(pool.sentences),
            "pool_sentences_zh": zh_sentences,
            "pool_paragraphs": len(pool.paragraphs),
            "passages_per_file": PASSAGES_PER_FILE,
            "body_tokens": list(BODY_TOKENS),
            "seed": SEED,
        },
        "ingestion": [],
        "query": [],
        "notes": [],
    }
    wanted = max([*chunk_sizes, *(INGEST_SAMPLE.get(m, 600) for m in ingest_models)])
    generator = generate_passages(pool)
    passages = [next(generator) for _ in range(wanted)]

    # --- ingestion throughput, real models -----------------------------------------------
    e5_rate: float | None = None
    for name in ingest_models:
        count = INGEST_SAMPLE.get(name, INGEST_SAMPLE_DEFAULT)
        folder = work / f"corpus-ingest-{count}"
        files = write_corpus(folder, passages[:count])
        timed = TimedEmbedder(get_embedder(name, EmbedderOptions(threads=threads)))
        console.print(f"ingesting {count} passages ({files} files) with {name} ...")
        settings = Settings(kb=work / f"kb-ingest-{name}", embedder=name)
        seconds, chunks, _ = _ingest(settings.kb, folder, settings, timed)
        embed_rate = timed.passages / timed.passage_seconds if timed.passage_seconds else 0.0
        other = seconds - timed.passage_seconds
        row: dict[str, Any] = {
            "model": name,
            "files": files,
            "chunks": chunks,
            "seconds": round(seconds, 2),
            "chunks_per_s": round(chunks / seconds, 1),
            "embed_seconds": round(timed.passage_seconds, 2),
            "embed_chunks_per_s": round(embed_rate, 1),
            "other_seconds": round(other, 2),
            "other_chunks_per_s": round(chunks / other, 1) if other > 0 else None,
        }
        results["ingestion"].append(row)
        if name == DEFAULT_EMBEDDER:
            e5_rate = embed_rate
        console.print(
            f"  {chunks} chunks in {seconds:.1f} s: {row['chunks_per_s']} chunks/s end to end, "
            f"model alone {row['embed_chunks_per_s']} chunks/s"
        )

    # --- query latency -----------------------------------------------------------------
    measured = mixed_queries(pool, queries + WARMUP_QUERIES)
    warmup, measured = measured[:WARMUP_QUERIES], measured[WARMUP_QUERIES:]
    for name in query_models:
        real = get_embedder(name, EmbedderOptions(threads=threads))
        vectors = sentence_vectors(real, pool, work, console)
        results["notes"].append(APPROXIMATION.format(model=name, pool=len(pool.sentences)))
        sizes = sorted(set(chunk_sizes))
        rate = e5_rate if name == DEFAULT_EMBEDDER else None
        verify = _verify_size(sizes, rate, verify_max_chunks, verify_budget_s)
        runs: list[tuple[int, str]] = [(n, "precomputed") for n in sizes]
        if verify:
            if verify not in sizes:
                runs.append((verify, "precomputed"))
            runs.append((verify, "real"))
            runs.sort(key=lambda r: (r[0], r[1] == "real"))
        else:
            results["notes"].append(
                "No store of real chunk embeddings was built: at the measured "
                f"{rate or 0:.1f} chunks/s it would take longer than {verify_budget_s:.0f} s."
            )
        tops: dict[int, list[list[str]]] = {}
        for size, kind in runs:
            embedder: Embedder = real
            if kind == "precomputed":
                embedder = PrecomputedEmbedder(real, pool.sentences, vectors)
            run = _query_run(
                embedder, size, kind, passages[:size], work, console, measured, warmup, threads
            )
            if kind == "precomputed":
                tops[size] = run.pop("top")
            else:
                run["top10_overlap_with_precomputed"] = _overlap(run.pop("top"), tops[size])
            results["query"].append(run)

    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["target"] = _target(results["query"])
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    _print(results, console)
    return results


def _verify_size(
    sizes: Sequence[int], rate: float | None, largest: int, budget_s: float
) -> int | None:
    """The store size to rebuild with real embeddings, if that fits the time budget."""
    if not rate or not sizes:
        return None
    size = min(min(sizes), largest, int(rate * budget_s))
    return size if size >= 500 else None


def _query_run(
    embedder: Embedder,
    size: int,
    kind: str,
    passages: Sequence[Passage],
    work: Path,
    console: Console,
    queries: list[str],
    warmup: list[str],
    threads: int | None,
) -> dict[str, Any]:
    folder = work / f"corpus-{size}"
    files = write_corpus(folder, passages)
    name = embedder.name
    kb_path = work / f"kb-{name}-{size}-{kind}"
    settings = Settings(kb=kb_path, embedder=name)
    if isinstance(embedder, PrecomputedEmbedder):
        embedder.register(passages)
    console.print(f"building {size:,}-chunk store, {kind} {name} vectors ({files} files) ...")
    seconds, chunks, documents = _ingest(kb_path, folder, settings, embedder)
    with KnowledgeBase(kb_path, settings, embedder=embedder) as kb:
        store_bytes = kb.status().store_bytes
    console.print(f"  built in {seconds:.1f} s; querying ({len(queries)} queries, new process) ...")
    measured = _in_fresh_process(kb_path, name, queries, warmup, threads)
    search = measured["search"]
    console.print(
        f"  search p50 {search['total']['p50']} ms, p95 {search['total']['p95']} ms "
        f"(query embedding p50 {search['embed']['p50']} ms); extractive ask p50 "
        f"{measured['ask']['total']['p50']} ms, p95 {measured['ask']['total']['p95']} ms"
    )
    row: dict[str, Any] = {
        "model": name,
        "vectors": kind,
        "chunks": chunks,
        "documents": documents,
        "build_seconds": round(seconds, 1),
        "build_chunks_per_s": round(chunks / seconds, 1),
        "store_mb": round(store_bytes / 1e6, 1),
        **measured,
    }
    if isinstance(embedder, PrecomputedEmbedder):
        row["embedding_fallbacks"] = embedder.fallbacks
    return row


def _target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    largest = [r for r in rows if r["model"] == DEFAULT_EMBEDDER]
    if not largest:
        return {}
    row = max(largest, key=lambda r: (r["chunks"], r["vectors"] == "real"))
    p95 = float(row["search"]["total"]["p95"])
    return {
        "p95_ms_limit": TARGET_P95_MS,
        "chunks": row["chunks"],
        "p95_ms": p95,
        "met": p95 <= TARGET_P95_MS,
    }


def _print(results: dict[str, Any], console: Console) -> None:
    table = Table(title="Ingestion (kb.add, end to end)")
    for column in ("model", "chunks", "seconds", "chunks/s", "model alone", "other stages"):
        table.add_column(column, justify="right")
    for row in results["ingestion"]:
        table.add_row(
            row["model"],
            str(row["chunks"]),
            f"{row['seconds']:.1f}",
            f"{row['chunks_per_s']:.1f}",
            f"{row['embed_chunks_per_s']:.1f}",
            str(row["other_chunks_per_s"]),
        )
    console.print(table)
    table = Table(title=f"Hybrid search latency, top-{LIMIT} (ms)")
    columns = (
        "chunks",
        "vectors",
        "build s",
        "store MB",
        "peak RSS MB",
        "search p50/p95/p99",
        "query embed p50/p95",
        "without embed p50/p95/p99",
        "filtered p50/p95/p99",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for row in results["query"]:
        search, filtered = row["search"], row["filtered"]
        table.add_row(
            f"{row['chunks']:,}",
            row["vectors"],
            f"{row['build_seconds']:.0f}",
            f"{row['store_mb']:.0f}",
            f"{row['rss_peak_mb']:.0f}",
            _triple(search["total"]),
            f"{search['embed']['p50']:.1f} / {search['embed']['p95']:.1f}",
            _triple(search["retrieval"]),
            _triple(filtered["total"]),
        )
    console.print(table)
    table = Table(title="Stage p50 ms (unfiltered | filtered)")
    stages = STAGES
    table.add_column("chunks", justify="right")
    table.add_column("vectors")
    for stage in stages:
        table.add_column(stage, justify="right")
    for row in results["query"]:
        plain, filtered = row["search"]["stages"], row["filtered"]["stages"]
        table.add_row(
            f"{row['chunks']:,}",
            row["vectors"],
            *(f"{plain[s]['p50']:.2f} | {filtered[s]['p50']:.2f}" for s in stages),
        )
    console.print(table)
    for note in results["notes"]:
        console.print(f"[dim]{note}[/]")
    target = results.get("target")
    if target:
        verdict = "[green]met[/]" if target["met"] else "[red]missed[/]"
        console.print(
            f"target p95 <= {target['p95_ms_limit']:.0f} ms at {target['chunks']:,} chunks: "
            f"{target['p95_ms']:.1f} ms, {verdict}"
        )
    console.print(f"total {results['total_seconds']:.0f} s")


def _triple(p: dict[str, float]) -> str:
    return f"{p['p50']:.1f} / {p['p95']:.1f} / {p['p99']:.1f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (for benchmarks/RESULTS.md)."""
    lines = [
        "| model | chunks | seconds | chunks/s end to end | model alone chunks/s |"
        " other stages chunks/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["ingestion"]:
        lines.append(
            f"| {row['model']} | {row['chunks']} | {row['seconds']:.1f} | "
            f"{row['chunks_per_s']:.1f} | {row['embed_chunks_per_s']:.1f} | "
            f"{row['other_chunks_per_s']} |"
        )
    lines += [
        "",
        "| chunks | chunk vectors | build s | store MB | peak RSS MB (query process) |"
        " search p50 / p95 / p99 ms | query embedding p50 / p95 ms |"
        " search without embedding p50 / p95 / p99 ms | filtered search p50 / p95 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["query"]:
        search, filtered = row["search"], row["filtered"]
        lines.append(
            f"| {row['chunks']:,} | {row['vectors']} | {row['build_seconds']:.0f} | "
            f"{row['store_mb']:.0f} | {row['rss_peak_mb']:.0f} | {_triple(search['total'])} | "
            f"{search['embed']['p50']:.1f} / {search['embed']['p95']:.1f} | "
            f"{_triple(search['retrieval'])} | {_triple(filtered['total'])} |"
        )
    stages = STAGES
    lines += [
        "",
        "| chunks | vectors | " + " | ".join(stages) + " |",
        "|---|---|" + "---|" * len(stages),
    ]
    for row in results["query"]:
        plain, filtered = row["search"]["stages"], row["filtered"]["stages"]
        cells = " | ".join(f"{plain[s]['p50']:.2f} / {filtered[s]['p50']:.2f}" for s in stages)
        lines.append(f"| {row['chunks']:,} | {row['vectors']} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _child_main()
