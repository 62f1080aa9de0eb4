"""`KnowledgeBase`: the one object every surface (CLI, HTTP, MCP, Python) works through."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, NamedTuple

from sourcebook import deadline
from sourcebook.models import (
    Answer,
    AnswerEvent,
    AnswerMode,
    DocumentInfo,
    DocumentLink,
    InvalidInput,
    PageRegion,
    SearchHit,
    Status,
    SyncReport,
)
from sourcebook.paths import PathNames, absolute_path
from sourcebook.settings import (
    DEFAULT_EMBEDDER,
    MAX_FILTER_CHARS,
    MAX_FILTER_TAGS,
    MAX_TEXT_LINES,
    Settings,
)
from sourcebook.store.access import AccessControl, check_name
from sourcebook.store.backends import configured_backends, open_store, record_backends
from sourcebook.store.embedded import Filters, StoreError, text_hash
from sourcebook.text import normalize

if TYPE_CHECKING:  # the models, answer, ingestion and retrieval stages load on first use
    from sourcebook.answer.llm import LLM
    from sourcebook.index.embedders import CachedEmbedder, Embedder, Vectors
    from sourcebook.ingest.pipeline import Ingestor, ProgressCallback, Source
    from sourcebook.retrieve.rerank import Reranker
    from sourcebook.retrieve.retriever import HybridRetriever

SyncState = Literal["indexed", "changed", "missing"]


def _named_hit(hit: SearchHit, names: PathNames) -> SearchHit:
    absolute = hit.absolute_path or hit.path  # a cached answer's hits are named already
    return hit.model_copy(update={"path": names.as_added(absolute), "absolute_path": absolute})


class EmbeddingWork(NamedTuple):
    """Chunk texts waiting for their vectors: text hash -> the text to embed (chunks
    sharing a text share its vector), how many chunks, and the last chunk's id."""

    texts: dict[str, str]
    chunks: int
    last_chunk: int


def _is_under(path: str, root: str) -> bool:
    """Whether a document path is the source `root` or inside it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# Seconds between index updates while `embed_pending` runs: vectors become searchable in
# steps, without rewriting the vector file after every batch.
EMBED_FLUSH_SECONDS = 5.0

# Nice value of the answer threads: under contention the scheduler gives a search thread
# about three times their CPU share, and an idle machine runs them at full speed.
ANSWER_NICENESS = 5


def _yield_to_searches() -> None:
    if sys.platform == "linux":  # Linux: a thread id sets that thread's nice value only
        # not permitted (unusual: raising one's own nice value is): normal priority
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ANSWER_NICENESS)


# the kinds of documents whose text may hold [[wiki-links]] (notes, not sheets or PDFs)
_LINKED_KINDS = frozenset({"markdown", "text", "rst", "html", "notebook"})


class KnowledgeBase:
    """A knowledge base in one folder: add sources, keep them in sync, search and ask.

    >>> kb = KnowledgeBase.create("notes.kb")          # doctest: +SKIP
    >>> kb.add(["~/notes"])                              # doctest: +SKIP
    >>> kb.ask("LoRA 为什么能减少显存？").text             # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path | None = None,
        settings: Settings | None = None,
        create: bool = False,
        embedder: Embedder | None = None,
        llm: LLM | None = None,
    ) -> None:
        """Open the knowledge base in `path` (default: settings.kb).

        `embedder` replaces the registered model of the same name (benchmarks and tests
        use it to supply precomputed vectors); its `name` must match the store's model.
        `llm` replaces the language model the settings configure (generate mode).
        """
        self.settings = settings or Settings()
        self.path = Path(path) if path is not None else self.settings.kb
        model = None
        if embedder is not None:
            model = (embedder.name, embedder.dim)
        elif create or self.settings.embedder:
            name = self.settings.embedder or DEFAULT_EMBEDDER
            model = (name, self._model_dimension(name))
        self.backends = configured_backends(
            self.path, self.settings.database_url, self.settings.search_uri
        )
        self.store = open_store(
            self.path,
            self.backends,
            model,
            create=create,
            exact_vector_search_below=self.settings.exact_vector_search_below,
        )
        if create:
            record_backends(self.path, self.backends)
        self._embedder: Embedder | None = embedder
        self._reranker: Reranker | None = None
        self._cached: CachedEmbedder | None = None
        self._answer_pool: ThreadPoolExecutor | None = None
        self._answer_pool_lock = threading.Lock()
        self._reranker_for: str | None = None
        self._llm = llm
        self._access: AccessControl | None = None

    @classmethod
    def create(
        cls, path: str | Path, settings: Settings | None = None, embedder: Embedder | None = None
    ) -> KnowledgeBase:
        return cls(path, settings, create=True, embedder=embedder)

    @property
    def embedder(self) -> Embedder:
        """The knowledge base's embedding model, loaded on first use."""
        if self._embedder is None:
            embedder = self._load_embedder(self.store.embedder_name)
            if embedder.dim != self.store.dim:
                raise StoreError(
                    f"{embedder.name} now makes {embedder.dim}-dimensional vectors but this "
                    f"knowledge base holds {self.store.dim}-dimensional ones: serve the model "
                    "it was built with, or rebuild it with `sourcebook reindex --model ...`"
                )
            self._embedder = embedder
        return self._embedder

    def _load_embedder(self, name: str) -> Embedder:
        from sourcebook.index.embedders import EmbedderOptions, get_embedder

        try:
            return get_embedder(name, EmbedderOptions.from_settings(self.settings))
        except (ValueError, RuntimeError) as error:  # unknown name, server down, no cache
            raise StoreError(str(error)) from error

    def _model_dimension(self, name: str) -> int:
        from sourcebook.index.embedders import EmbedderOptions, check_model_name, model_dimension

        try:
            check_model_name(name)
            return model_dimension(name, EmbedderOptions.from_settings(self.settings))
        except (ValueError, RuntimeError) as error:
            raise StoreError(str(error)) from error

    def warm_up(self) -> None:
        """Load the models, and with access rules in use build what a reader's restricted
        searches need, before the first request (what `sourcebook serve` does at start)."""
        _ = self.embedder, self.reranker
        if self.store.document_groups():
            self.store.prepare_filtered_search()

    @property
    def cached_embedder(self) -> CachedEmbedder:
        """The embedding model behind a cache of question and answer-sentence vectors
        (what every search and answer uses; ingestion uses `embedder`)."""
        from sourcebook.index.embedders import CachedEmbedder

        if self._cached is None or self._cached.inner is not self.embedder:
            self._cached = CachedEmbedder(self.embedder)
        return self._cached

    @property
    def llm(self) -> LLM:
        """The language model of the generate mode (`SOURCEBOOK_LLM_*`), made on first use."""
        from sourcebook.answer.llm import create_llm

        if self._llm is None:
            self._llm = create_llm(self.settings)
        return self._llm

    # --- writing -------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | Path],
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        progress: ProgressCallback | None = None,
        keep_unreadable: bool = False,
        wait: bool = True,
        embed_progress: ProgressCallback | None = None,
    ) -> SyncReport:
        """Index files and folders and remember them as sources for `sync`. A file that
        cannot be read any more leaves the indexes, unless `keep_unreadable` (the upload
        route, which puts the indexed version of such a file back).

        Every document is keyword-searchable as soon as it is stored; then, with `wait`
        (the default), the chunks are embedded before this returns (`embed_progress`
        follows it). Without it they are embedded later by whichever comes next: a
        background embedder (`watch`, `serve`), `sync`, `add` or `embed_pending`."""
        from sourcebook.ingest.pipeline import Source

        sources = [
            Source(
                absolute_path(p),
                tuple(include),
                tuple(exclude) + tuple(self.settings.exclude),
            )
            for p in paths
        ]
        with self.store.writing():
            for source, given in zip(sources, paths, strict=True):
                if source.root.exists():
                    self.store.add_source(str(source.root), include, exclude, str(given))
            report = self._ingestor().run(sources, True, progress, keep_unreadable)
            report.cached_answers_purged = self.store.purge_cached_answers()
            return self._finish_embedding(report, wait, embed_progress)

    def _finish_embedding(
        self, report: SyncReport, wait: bool, progress: ProgressCallback | None
    ) -> SyncReport:
        """After a run (under the write lock): make what was stored keyword-searchable for
        every process now, then embed the chunks still without a vector if `wait`."""
        started = time.perf_counter()
        self.store.flush()
        if wait:
            report.chunks_embedded += self.embed_pending(progress)
        done, total = self.store.embedding_progress()
        report.chunks_waiting = total - done
        report.seconds = round(report.seconds + time.perf_counter() - started, 3)
        return report

    def register_source(self, path: str | Path) -> None:
        """Remember a folder as a source without indexing it now: the upload route does
        this before it writes files into its folder, so that a process killed between
        the two leaves files the next `sync` indexes, never files no source covers."""
        with self.store.writing():
            self.store.add_source(str(absolute_path(path)), (), (), str(path))

    def sync(
        self,
        progress: ProgressCallback | None = None,
        wait: bool = True,
        embed_progress: ProgressCallback | None = None,
    ) -> SyncReport:
        """Re-read every source: new and changed files are indexed, deleted ones removed;
        then (with `wait`) every chunk still without a vector is embedded."""
        from sourcebook.ingest.pipeline import TEXT_VERSION

        sources = self._sources()
        with self.store.writing():
            report = self._ingestor().run(
                [s for s in sources if s.root.exists()], prune=True, progress=progress
            )
            # every document has now been read by the current converters
            self.store.set_meta_value("text_version", TEXT_VERSION)
            # a re-embedding a killed `reindex` left unfinished (new chunks too)
            self._reembed(progress)
            present = [str(s.root) for s in sources if s.root.exists()]
            for document in self.store.documents():
                # under a source folder or file that went away, or under no source at
                # all (indexed by an older version under a link's target, say)
                if not any(_is_under(document.path, root) for root in present):
                    self.store.remove_document(document.path)
                    report.removed += 1
                    report.chunks_removed += document.chunks
            report.cached_answers_purged = self.store.purge_cached_answers()
            return self._finish_embedding(report, wait, embed_progress)

    def update_paths(self, paths: Collection[str | Path]) -> SyncReport:
        """Re-read just these files and folders (what a watcher saw change): see
        `Ingestor.reconcile`. Renamed files keep their documents. Returns once the
        changes are keyword-searchable; the chunks are embedded later (`embed_pending`,
        or a background embedder). Vectors of removed text stay cached, so a folder that
        goes away and comes back is not embedded again (`sync` collects them)."""
        sources = self._sources()
        with self.store.writing():
            report = self._ingestor().reconcile([absolute_path(p) for p in paths], sources)
            if report.removed or report.updated or report.renamed:
                report.cached_answers_purged = self.store.purge_cached_answers()
            return report

    def _sources(self) -> list[Source]:
        from sourcebook.ingest.pipeline import Source

        return [
            Source(Path(path), tuple(include), tuple(exclude) + tuple(self.settings.exclude))
            for path, include, exclude in self.store.sources()
        ]

    # --- embedding: stored chunks get their vectors --------------------------------------

    def embed_pending(self, progress: ProgressCallback | None = None) -> int:
        """Embed every chunk text that has no vector yet (a run that did not wait, or was
        killed); returns how many texts were embedded. Vectors become searchable as they
        are stored (the indexes are brought up to date every few seconds)."""
        embedded = after = 0
        with self.store.writing():
            done, total = self.store.embedding_progress()
            flushed = time.monotonic()
            while work := self.texts_to_embed(self.settings.embed_batch, after):
                if progress:
                    progress(done, total, "")
                after = work.last_chunk
                vectors = self.embedder.embed_passages(list(work.texts.values()))
                self.store.put_vectors(dict(zip(work.texts, vectors, strict=True)))
                embedded += len(work.texts)
                done = min(total, done + work.chunks)
                if time.monotonic() - flushed > EMBED_FLUSH_SECONDS:
                    self.store.flush()
                    flushed = time.monotonic()
            if progress and embedded:
                progress(total, total, "")
        return embedded

    def texts_to_embed(self, limit: int, after: int = 0) -> EmbeddingWork | None:
        """The texts of up to `limit` chunks without a vector, after chunk id `after`
        (continue with `last_chunk`; nothing left: None)."""
        from sourcebook.ingest.chunker import contextual_text

        rows = self.store.texts_to_embed(limit, after)
        if not rows:
            return None
        texts = {
            digest: contextual_text(title, heading_path, text)
            for _, digest, title, heading_path, text in rows
        }
        return EmbeddingWork(texts, len(rows), rows[-1][0])

    def save_vectors(self, vectors: dict[str, Vectors]) -> None:
        """Store vectors computed for `texts_to_embed` (by text hash) and make them
        searchable (a background embedder; takes the write lock for the moment it needs)."""
        with self.store.writing():
            self.store.put_vectors(vectors)

    def embedding_progress(self) -> tuple[int, int]:
        """(chunks with a vector, all chunks): the others are found by keyword only."""
        return self.store.embedding_progress()

    def remove(self, paths: Sequence[str | Path]) -> list[str]:
        """Forget files or whole folders (and stop syncing them). Returns removed paths.
        Each path is removed with its documents in one transaction (all or nothing)."""
        removed: list[str] = []
        with self.store.writing():
            for raw in paths:
                target = str(absolute_path(raw))
                under = [d.path for d in self.store.documents() if _is_under(d.path, target)]
                self.store.remove_source_and_documents(target, under)
                removed.extend(under)
            self.store.purge_cached_answers()
        return removed

    def reindex(self, model: str | None = None, progress: ProgressCallback | None = None) -> int:
        """Re-embed every chunk, with another model if given (default: the model of a
        re-embedding that was interrupted, else the current one); returns the chunk
        count. Resumable: the new vectors are kept as they are computed, and searches use
        the old ones until every chunk has a new one."""
        pending = self.store.reembedding()
        name = model or (pending.model if pending else self.store.embedder_name)
        dim = self._model_dimension(name)
        with self.store.writing():
            self.store.begin_reembedding(name, dim)
            self._reembed(progress)
        return self.store.counts()[1]

    def _reembed(self, progress: ProgressCallback | None = None) -> None:
        """Continue the re-embedding in progress to its end (under the write lock)."""
        from sourcebook.ingest.chunker import contextual_text

        state = self.store.reembedding()
        if state is None:
            return
        embedder = self._load_embedder(state.model)
        done = state.done
        while part := self.store.pending_contexts(self.settings.embed_batch):
            if progress:
                progress(done, state.total, "")
            texts = [contextual_text(title, path, text) for _, title, path, text in part]
            vectors = embedder.embed_passages(texts)
            self.store.put_pending_vectors(
                {row[0]: v for row, v in zip(part, vectors, strict=True)}
            )
            done += len(part)
        self.store.finish_reembedding()
        self._embedder = embedder
        self._cached = None  # vectors of the old model must not be reused

    def _ingestor(self) -> Ingestor:
        from sourcebook.ingest.pipeline import Ingestor

        return Ingestor(self.store, self.settings)

    # --- reading -------------------------------------------------------------------------

    def search(
        self, query: str, limit: int = 10, filters: Filters | None = None
    ) -> list[SearchHit]:
        """Hybrid (BM25 + dense) search; filters apply before ranking is cut off."""
        self._check_question(query, "query")
        check_filters(filters)
        vector = self._query_vector(query) if self.settings.retrieval != "bm25" else None
        deadline.check("ranking")
        return self._named(self._retriever().retrieve(query, limit, filters, vector))

    def _check_question(self, text: str, what: str = "question") -> None:
        """Refuse what no search should spend time on: nothing, more than
        `max_question_chars`, or text that is not valid Unicode (a lone surrogate, which
        no tokenizer, database or response can encode)."""
        if not text.strip():
            raise ValueError(f"the {what} is empty")
        limit = self.settings.max_question_chars
        if len(text) > limit:
            raise InvalidInput(
                f"the {what} is {len(text):,} characters long; the limit is {limit:,} "
                "(SOURCEBOOK_MAX_QUESTION_CHARS): ask about one thing at a time"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"the {what} is not valid Unicode (a lone surrogate at character "
                f"{exc.start}); send UTF-8 text"
            ) from exc

    def ask(
        self, question: str, filters: Filters | None = None, mode: AnswerMode | None = None
    ) -> Answer:
        """An answer with [n] citations, or an explicit "not found".

        `mode` (default: settings.answer_mode): "extractive" quotes evidence sentences;
        "generate" has the configured language model write the answer and verifies it
        (see `ask_stream`).
        """
        from sourcebook.answer.generation import final_answer

        if self._mode(mode) == "generate":
            return final_answer(self.ask_stream(question, filters, "generate"))
        hits, query_vector = self._evidence(question, filters)
        return self._named_answer(self._extractive(question, query_vector, hits))

    def ask_stream(
        self, question: str, filters: Filters | None = None, mode: AnswerMode | None = None
    ) -> Iterator[AnswerEvent]:
        """The answer as events: in generate mode the model's text as it is produced
        ("token"), then the verified answer ("answer"); otherwise only the answer.

        A generated answer is cached (settings.answer_cache) under the question, the
        evidence chunks and their documents' versions, the model and the answer settings;
        a cached answer comes as the answer event alone, with `cached` set.
        """
        from sourcebook.answer.calibration import judge_for
        from sourcebook.answer.generation import GroundedGenerator, Verifier

        generate = self._mode(mode) == "generate"
        hits, query_vector = self._evidence(question, filters)
        if not generate:
            answer = self._named_answer(self._extractive(question, query_vector, hits))
            yield AnswerEvent(type="answer", answer=answer)
            return
        key, content_hashes = self._answer_key(question, hits)
        if self.settings.answer_cache:
            cached = self.store.cached_answer(key)
            if cached is not None:
                answer = Answer.model_validate_json(cached).model_copy(update={"cached": True})
                yield AnswerEvent(type="answer", answer=self._named_answer(answer))
                return
        fallback = self._extractive(question, query_vector, hits)
        generator = GroundedGenerator(
            self.llm,
            Verifier(
                self.cached_embedder, self._idf, judge_for(self.store.embedder_name, False).rescale
            ),
            self.settings.llm_context_tokens,
            self.settings.llm_max_tokens,
            self.settings.llm_temperature,
        )
        for event in generator.stream(question, hits, fallback):
            if event.answer is not None:
                if self.settings.answer_cache:
                    answer_json = event.answer.model_dump_json()
                    self.store.put_cached_answer(key, answer_json, content_hashes)
                event = event.model_copy(update={"answer": self._named_answer(event.answer)})
            yield event

    # --- paths as the user added them (paths.py) ----------------------------------------

    def path_names(self) -> PathNames:
        """How documents are named on every surface: as their source was added."""
        return PathNames(self.store.source_names())

    def resolve_path(self, path: str | Path) -> str:
        """The absolute (store) path of a document named either way: as added, as an
        absolute path, or relative to the current folder."""
        here = str(absolute_path(path))
        candidates = [here, *self.path_names().candidates(str(path))]
        return next((c for c in candidates if self.store.document(c) is not None), here)

    def _named(self, hits: list[SearchHit]) -> list[SearchHit]:
        names = self.path_names()
        return [_named_hit(hit, names) for hit in hits]

    def _named_answer(self, answer: Answer) -> Answer:
        names = self.path_names()
        citations = [
            c.model_copy(update={"hit": _named_hit(c.hit, names)}) for c in answer.citations
        ]
        return answer.model_copy(update={"citations": citations})

    def _mode(self, mode: AnswerMode | None) -> AnswerMode:
        chosen = mode or self.settings.answer_mode
        if chosen not in ("extractive", "generate"):
            raise ValueError(f"unknown answer mode {chosen!r}; use 'extractive' or 'generate'")
        return chosen

    def _evidence(self, question: str, filters: Filters | None) -> tuple[list[SearchHit], Vectors]:
        self._check_question(question)
        check_filters(filters)
        query_vector = self._query_vector(question)
        deadline.check("ranking")
        hits = self._retriever().retrieve(
            question, self.settings.evidence_chunks, filters, query_vector
        )
        return hits, query_vector

    def _extractive(self, question: str, query_vector: Vectors, hits: list[SearchHit]) -> Answer:
        from sourcebook.answer.calibration import judge_for
        from sourcebook.answer.extractive import ExtractiveAnswerer
        from sourcebook.answer.names import unspelled
        from sourcebook.index.analyzer import analyze
        from sourcebook.retrieve.rerank import idf_weights

        total, frequencies = self.store.keyword_statistics(analyze(question))
        # the trained judge reads the built-in reranker's score; other rerankers get the rule
        trained = self.settings.trained_judge and self.settings.reranker == "learned"
        judge = judge_for(self.store.embedder_name, trained)
        answerer = ExtractiveAnswerer(
            self.cached_embedder,
            self.settings.max_sentences,
            judge.with_threshold(self.settings.min_confidence),
            self.settings.answer_embedded_sentences,
            self.settings.answer_budget,
        )
        idf = idf_weights(total, frequencies)
        deadline.check("answering")
        absent = unspelled(
            frozenset(term for term, count in frequencies.items() if count == 0),
            lambda tokens: self.store.keyword_statistics(tokens)[1],
        )
        future = self._answer_workers().submit(
            answerer.answer, question, query_vector, hits, idf, absent
        )
        try:
            return future.result(timeout=deadline.remaining())
        except FutureTimeout:
            future.cancel()  # still queued: never started; running: finishes unseen
            deadline.check("the answer was ready")
            raise

    def _answer_workers(self) -> ThreadPoolExecutor:
        """The threads extractive answers are computed in: `settings.answer_workers` of them,
        at a lower CPU priority. Embedding an answer's candidate sentences keeps a core busy
        for a hundred milliseconds or more; a burst of questions must neither take every
        core nor delay the searches running beside them (a server)."""
        with self._answer_pool_lock:
            if self._answer_pool is None:
                workers = self.settings.answer_workers or max(1, (os.cpu_count() or 1) // 2)
                self._answer_pool = ThreadPoolExecutor(
                    workers, "sourcebook-answer", initializer=_yield_to_searches
                )
            return self._answer_pool

    def _idf(self, terms: Sequence[str]) -> dict[str, float]:
        from sourcebook.retrieve.rerank import idf_weights

        return idf_weights(*self.store.keyword_statistics(terms))

    def _answer_key(self, question: str, hits: Sequence[SearchHit]) -> tuple[str, list[str]]:
        """The answer-cache key, and the content hashes of the evidence documents (an
        edited or removed document changes its hash: a miss, and `sync` purges the row)."""
        from sourcebook.answer.generation import PROMPT_VERSION

        # hits shown to the caller carry the path as added; the store knows absolute paths
        keys = [hit.absolute_path or hit.path for hit in hits]
        documents = {key: self.store.document(key) for key in keys}
        content_hashes = [d.content_hash for d in documents.values() if d is not None]
        s = self.settings
        identity = {
            "prompt": PROMPT_VERSION,
            "question": " ".join(normalize(question).casefold().split()),
            "evidence": [
                [hit.chunk_id, d.content_hash if (d := documents[key]) else None]
                for hit, key in zip(hits, keys, strict=True)
            ],
            "mode": "generate",
            "model": self.llm.name,
            "embedder": self.store.embedder_name,
            "settings": [
                s.llm_context_tokens,
                s.llm_max_tokens,
                s.llm_temperature,
                s.max_sentences,
                s.answer_budget,
                s.min_confidence,
                s.trained_judge,
                s.reranker,
            ],
        }
        return text_hash(json.dumps(identity, ensure_ascii=False, sort_keys=True)), content_hashes

    def _query_vector(self, text: str) -> Vectors:
        # runs of spaces and line breaks carry no meaning in a question, but the encoder's
        # tokenizer would see them: the same question typed twice gets the same vector
        return self.cached_embedder.embed_query(" ".join(normalize(text).split()))

    def _retriever(self) -> HybridRetriever:
        from sourcebook.retrieve.retriever import HybridRetriever

        return HybridRetriever(self.store, self.cached_embedder, self.settings, self.reranker)

    @property
    def reranker(self) -> Reranker | None:
        """The configured reranker, loaded once per setting."""
        from sourcebook.retrieve.rerank import load_reranker

        if self._reranker_for != self.settings.reranker:
            self._reranker = load_reranker(self.settings.reranker, self.settings.threads)
            self._reranker_for = self.settings.reranker
        return self._reranker

    def documents(self, groups: frozenset[str] | None = None) -> list[DocumentInfo]:
        """The indexed documents; with `groups`, only those a reader in them may read."""
        names = self.path_names()
        documents = [
            d.model_copy(update={"path": names.as_added(d.path), "absolute_path": d.path})
            for d in self.store.documents()
        ]
        if groups is None:
            return documents
        unreadable = self.store.unreadable_documents(groups)
        return [d for d in documents if d.id not in unreadable]

    def document_text(
        self,
        path: str | Path,
        line_start: int | None = None,
        line_end: int | None = None,
        groups: frozenset[str] | None = None,
    ) -> str:
        """The indexed text of a document, or lines [line_start, line_end] of it. With
        `groups`, a document the reader may not read is reported as not there (its
        existence is not confirmed either). `path` as added or absolute."""
        key = self.resolve_path(path)
        text = self.store.document_text(key, line_start, line_end)
        if text is not None and groups is not None:
            document = self.store.document(key)
            if document is None or document.id in self.store.unreadable_documents(groups):
                text = None
        if text is None:
            raise KeyError(f"{path} is not in the knowledge base")
        return text

    def document_lines(
        self,
        path: str | Path,
        line_start: int | None = None,
        line_end: int | None = None,
        groups: frozenset[str] | None = None,
        limit: int = MAX_TEXT_LINES,
    ) -> tuple[str, bool]:
        """Lines [line_start, line_end] of a document (all from line_start without
        `line_end`), cut at `limit` lines so that a request's cost stays bounded however
        long the document (a streamed CSV has millions of lines); and whether it was cut."""
        first = line_start or 1
        last = first + limit if line_end is None else min(line_end, first + limit)
        lines = self.document_text(path, first, last, groups).split("\n")
        if len(lines) <= limit:
            return "\n".join(lines), False
        return "\n".join(lines[:limit]), True

    def links(self, path: str | Path, groups: frozenset[str] | None = None) -> list[DocumentLink]:
        """The wiki-links (`[[note]]`) of a document, each with the document it names, if
        one is indexed (and, with `groups`, readable: a note the reader may not read is
        not named either). `path` as added or absolute."""
        from sourcebook.retrieve.links import resolve_links

        key = self.resolve_path(path)
        self.document_text(key, 1, 1, groups)  # KeyError when absent or unreadable
        document = self.store.document(key)
        if document is None or document.kind not in _LINKED_KINDS:
            return []  # the web view asks of every document: never read a 200 MB CSV for it
        text = self.document_text(key, groups=groups)
        return resolve_links(text, key, self.documents(groups))

    def page_regions(
        self,
        path: str | Path,
        line_start: int,
        line_end: int,
        groups: frozenset[str] | None = None,
    ) -> list[PageRegion]:
        """Where lines [line_start, line_end] of a PDF or an image are on their pages (the
        boxes of the lines, in text order); empty for formats without positions."""
        key = str(absolute_path(path))
        self.document_text(key, 1, 1, groups)  # KeyError when absent or not readable
        pages, boxes = self.store.document_layout(key)
        if not pages or not boxes:
            return []
        return [
            PageRegion(page=pages[i], box=box)
            for i in range(max(0, line_start - 1), min(line_end, len(boxes)))
            if (box := boxes[i]) is not None
        ]

    def page_image(
        self, path: str | Path, page: int, width: int = 1000, groups: frozenset[str] | None = None
    ) -> bytes:
        """Page `page` of a PDF (or an image) as a PNG `width` pixels wide, drawn from the
        file as it is now; raises KeyError when the document is absent or not readable and
        PageError when it has no such page."""
        key = str(absolute_path(path))
        self.document_text(key, 1, 1, groups)
        document = self.store.document(key)
        assert document is not None
        from sourcebook.ingest.pages import page_png  # pypdfium2 and Pillow: on first use

        return page_png(Path(key), document.kind, page, width)

    def document_by_id(
        self, doc_id: int, groups: frozenset[str] | None = None
    ) -> DocumentInfo | None:
        """The indexed document with this id (it keeps its id when its file changes and
        is re-indexed); None also when a reader in `groups` may not read it."""
        return next((d for d in self.documents(groups) if d.id == doc_id), None)

    # --- teams: who may read what --------------------------------------------------------

    @property
    def access(self) -> AccessControl:
        """Users, groups, API keys and the audit log (`access.py`), opened on first use."""
        if self._access is None:
            self._access = self.store.access_control()
        return self._access

    def set_access_rule(self, pattern: str, groups: Sequence[str]) -> None:
        """Only members of `groups` (and admins) may read documents whose path matches
        the glob `pattern`; no groups removes the rule. Applies to the documents indexed
        now and to those indexed later. A document matched by several rules may be read
        by the groups of each."""
        if not pattern.strip():
            raise ValueError("the path pattern is empty")
        check_filters(Filters(path_glob=pattern))
        for group in groups:
            check_name("group", group)
        if not groups and pattern not in self.store.access_rules():
            raise KeyError(f"there is no access rule for {pattern!r}")
        self.store.set_access_rule(pattern, groups)

    def documents_matching(self, pattern: str) -> list[DocumentInfo]:
        """The documents whose path matches a glob (as an access rule or --path does)."""
        matching = set(self.store.allowed_documents(Filters(path_glob=pattern)) or ())
        return [d for d in self.store.documents() if d.id in matching]

    def access_rules(self) -> dict[str, list[str]]:
        """Path glob -> the groups that may read the documents it matches."""
        return self.store.access_rules()

    def set_document_groups(self, path: str | Path, groups: Sequence[str]) -> None:
        """Give one document (indexed or about to be) its own groups, which replace the
        rules for it; no groups: the rules apply to it again."""
        for group in groups:
            check_name("group", group)
        self.store.set_document_grants(str(absolute_path(path)), groups)

    def document_groups(self) -> dict[str, list[str]]:
        """Path -> the groups that may read it, for every document with groups (a
        document not listed is readable by everyone)."""
        return self.store.document_groups()

    def sync_state(self, document: DocumentInfo) -> SyncState:
        """Whether a document's file still holds what was indexed: "indexed" (yes),
        "changed" (`sync` would re-index it) or "missing" (`sync` would remove it).
        Only a file whose size or time differs is read, to compare its content hash."""
        file = Path(document.absolute_path or document.path)
        try:
            stat = file.stat()
            # `modified` went through a datetime: microseconds, not the file system's ns
            same_time = abs(stat.st_mtime - document.modified.timestamp()) < 1e-3
            if stat.st_size == document.size and same_time:
                return "indexed"
            data = file.read_bytes()
        except OSError:
            return "missing"
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()  # as the ingestor hashes
        return "indexed" if digest == document.content_hash else "changed"

    def resync(self, path: str | Path, wait: bool = True) -> SyncReport:
        """Re-read one indexed document: re-indexed if its file changed, removed if the
        file is gone. Unlike `add`, this does not make the file a source of its own.
        `wait`: as for `add`."""
        from sourcebook.ingest.pipeline import Source

        key = Path(self.resolve_path(path))
        document = self.store.document(str(key))
        if document is None:
            raise KeyError(f"{path} is not in the knowledge base")
        with self.store.writing():
            if key.is_file():
                report = self._ingestor().run([Source(key)], prune=False)
            else:
                self.store.remove_document(document.path)
                report = SyncReport(removed=1, chunks_removed=document.chunks)
            report.cached_answers_purged = self.store.purge_cached_answers()
            return self._finish_embedding(report, wait, None)

    @property
    def can_generate(self) -> bool:
        """Whether a language model is configured for generate mode (without loading it)."""
        s = self.settings
        return self._llm is not None or s.llm_backend == "openai" or s.llm_gguf is not None

    def status(self, groups: frozenset[str] | None = None) -> Status:
        """The knowledge base's numbers; with `groups`, the documents and chunks count
        only what a reader in them may read (the others' existence is not revealed)."""
        documents, chunks = self.store.counts(groups)
        embedded, total = self.store.embedding_progress()
        return Status(
            path=str(self.path.resolve()),
            embedder=self.store.embedder_name,
            documents=documents,
            chunks=chunks,
            sources=self.sources(groups),
            store_bytes=self.store.size_bytes(),
            index_consistent=self.store.is_consistent(),
            reembedding=(
                f"re-embedding {state.done} of {state.total} with {state.model}"
                " (`sourcebook reindex` continues it; searches use the current vectors)"
                if (state := self.store.reembedding())
                else None
            ),
            # a restricted reader is not told about chunks it may not read
            chunks_waiting=total - embedded if groups is None else 0,
            embedding=(
                f"embedding {embedded:,} of {total:,} chunks ({total - embedded:,} waiting: "
                "found by keyword search only until then)"
                if embedded < total and groups is None
                else None
            ),
            indexed_in_part=self.store.partial_documents() if groups is None else [],
        )

    def sources(self, groups: frozenset[str] | None = None) -> list[str]:
        """The files and folders added (what `sync` re-reads); with `groups`, only those
        holding a document a reader in them may read: a source's path alone (a restricted
        file added on its own) says what it holds."""
        paths = [path for path, _, _ in self.store.sources()]
        if groups is None:
            return paths
        readable = sorted(d.absolute_path for d in self.documents(groups))

        def holds_readable(root: str) -> bool:
            # the first path >= root is root itself, else the first >= "root/" is inside
            for probe in (root, root.rstrip(os.sep) + os.sep):
                i = bisect.bisect_left(readable, probe)
                if i < len(readable) and _is_under(readable[i], root):
                    return True
            return False

        return [p for p in paths if holds_readable(p)]

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        if self._answer_pool is not None:
            # answers still queued are dropped; the running ones (bounded) finish
            self._answer_pool.shutdown(cancel_futures=True)
        if self._access is not None:
            self._access.close()
        self.store.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def check_filters(filters: Filters | None) -> None:
    """Refuse filters whose matching alone would be costly (see MAX_FILTER_CHARS)."""
    if filters is None:
        return
    if len(filters.tags) > MAX_FILTER_TAGS:
        raise InvalidInput(f"{len(filters.tags)} tags; the limit is {MAX_FILTER_TAGS}")
    named = [("path glob", filters.path_glob), ("exclude glob", filters.exclude_glob)]
    for what, value in [*named, *(("tag", t) for t in filters.tags)]:
        if value is not None and len(value) > MAX_FILTER_CHARS:
            raise InvalidInput(
                f"the {what} is {len(value):,} characters long; the limit is {MAX_FILTER_CHARS}"
            )
