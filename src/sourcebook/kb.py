"""`KnowledgeBase`: the one object every surface (CLI, HTTP, MCP, Python) works through."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType
from typing import Literal

from sourcebook import deadline
from sourcebook.answer.calibration import judge_for
from sourcebook.answer.extractive import ExtractiveAnswerer
from sourcebook.answer.generation import PROMPT_VERSION, GroundedGenerator, Verifier, final_answer
from sourcebook.answer.llm import LLM, create_llm
from sourcebook.index.analyzer import analyze
from sourcebook.index.embedders import EMBEDDERS, CachedEmbedder, Embedder, Vectors, get_embedder
from sourcebook.ingest.chunker import contextual_text
from sourcebook.ingest.pipeline import (
    TEXT_VERSION,
    Ingestor,
    ProgressCallback,
    Source,
    absolute_path,
)
from sourcebook.models import (
    Answer,
    AnswerEvent,
    AnswerMode,
    DocumentInfo,
    InvalidInput,
    SearchHit,
    Status,
    SyncReport,
)
from sourcebook.retrieve.rerank import Reranker, idf_weights, load_reranker
from sourcebook.retrieve.retriever import HybridRetriever
from sourcebook.settings import DEFAULT_EMBEDDER, Settings
from sourcebook.store.access import AccessControl, check_name
from sourcebook.store.backends import configured_backends, open_store, record_backends
from sourcebook.store.embedded import Filters, StoreError, text_hash
from sourcebook.text import normalize

SyncState = Literal["indexed", "changed", "missing"]


def _is_under(path: str, root: str) -> bool:
    """Whether a document path is the source `root` or inside it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# Nice value of the answer threads: under contention the scheduler gives a search thread
# about three times their CPU share, and an idle machine runs them at full speed.
ANSWER_NICENESS = 5


def _yield_to_searches() -> None:
    if sys.platform == "linux":  # Linux: a thread id sets that thread's nice value only
        # not permitted (unusual: raising one's own nice value is): normal priority
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ANSWER_NICENESS)


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
            if name not in EMBEDDERS:
                raise StoreError(
                    f"unknown embedding model {name!r}; choose one of: {', '.join(EMBEDDERS)}"
                )
            model = (name, EMBEDDERS[name].dim)
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
            self._embedder = get_embedder(self.store.embedder_name, self.settings.threads)
        return self._embedder

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
        if self._cached is None or self._cached.inner is not self.embedder:
            self._cached = CachedEmbedder(self.embedder)
        return self._cached

    @property
    def llm(self) -> LLM:
        """The language model of the generate mode (`SOURCEBOOK_LLM_*`), made on first use."""
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
    ) -> SyncReport:
        """Index files and folders and remember them as sources for `sync`. A file that
        cannot be read any more leaves the indexes, unless `keep_unreadable` (the upload
        route, which puts the indexed version of such a file back)."""
        sources = [
            Source(
                absolute_path(p),
                tuple(include),
                tuple(exclude) + tuple(self.settings.exclude),
            )
            for p in paths
        ]
        with self.store.writing():
            for source in sources:
                if source.root.exists():
                    self.store.add_source(str(source.root), include, exclude)
            report = self._ingestor().run(sources, True, progress, keep_unreadable)
            report.cached_answers_purged = self.store.purge_cached_answers()
            return report

    def register_source(self, path: str | Path) -> None:
        """Remember a folder as a source without indexing it now: the upload route does
        this before it writes files into its folder, so that a process killed between
        the two leaves files the next `sync` indexes, never files no source covers."""
        with self.store.writing():
            self.store.add_source(str(absolute_path(path)), (), ())

    def sync(self, progress: ProgressCallback | None = None) -> SyncReport:
        """Re-read every source: new and changed files are indexed, deleted ones removed."""
        sources = [
            Source(Path(path), tuple(include), tuple(exclude) + tuple(self.settings.exclude))
            for path, include, exclude in self.store.sources()
        ]
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
            return report

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
        if name not in EMBEDDERS:
            raise StoreError(
                f"unknown embedding model {name!r}; choose one of: {', '.join(EMBEDDERS)}"
            )
        with self.store.writing():
            self.store.begin_reembedding(name, EMBEDDERS[name].dim)
            self._reembed(progress)
        return self.store.counts()[1]

    def _reembed(self, progress: ProgressCallback | None = None) -> None:
        """Continue the re-embedding in progress to its end (under the write lock)."""
        state = self.store.reembedding()
        if state is None:
            return
        embedder = get_embedder(state.model, self.settings.threads)
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
        return Ingestor(self.store, self.embedder, self.settings)

    # --- reading -------------------------------------------------------------------------

    def search(
        self, query: str, limit: int = 10, filters: Filters | None = None
    ) -> list[SearchHit]:
        """Hybrid (BM25 + dense) search; filters apply before ranking is cut off."""
        self._check_question(query, "query")
        vector = self._query_vector(query) if self.settings.retrieval != "bm25" else None
        deadline.check("ranking")
        return self._retriever().retrieve(query, limit, filters, vector)

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
        if self._mode(mode) == "generate":
            return final_answer(self.ask_stream(question, filters, "generate"))
        hits, query_vector = self._evidence(question, filters)
        return self._extractive(question, query_vector, hits)

    def ask_stream(
        self, question: str, filters: Filters | None = None, mode: AnswerMode | None = None
    ) -> Iterator[AnswerEvent]:
        """The answer as events: in generate mode the model's text as it is produced
        ("token"), then the verified answer ("answer"); otherwise only the answer.

        A generated answer is cached (settings.answer_cache) under the question, the
        evidence chunks and their documents' versions, the model and the answer settings;
        a cached answer comes as the answer event alone, with `cached` set.
        """
        generate = self._mode(mode) == "generate"
        hits, query_vector = self._evidence(question, filters)
        if not generate:
            yield AnswerEvent(type="answer", answer=self._extractive(question, query_vector, hits))
            return
        key, content_hashes = self._answer_key(question, hits)
        if self.settings.answer_cache:
            cached = self.store.cached_answer(key)
            if cached is not None:
                answer = Answer.model_validate_json(cached).model_copy(update={"cached": True})
                yield AnswerEvent(type="answer", answer=answer)
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
            if event.answer is not None and self.settings.answer_cache:
                self.store.put_cached_answer(key, event.answer.model_dump_json(), content_hashes)
            yield event

    def _mode(self, mode: AnswerMode | None) -> AnswerMode:
        chosen = mode or self.settings.answer_mode
        if chosen not in ("extractive", "generate"):
            raise ValueError(f"unknown answer mode {chosen!r}; use 'extractive' or 'generate'")
        return chosen

    def _evidence(self, question: str, filters: Filters | None) -> tuple[list[SearchHit], Vectors]:
        self._check_question(question)
        query_vector = self._query_vector(question)
        deadline.check("ranking")
        hits = self._retriever().retrieve(
            question, self.settings.evidence_chunks, filters, query_vector
        )
        return hits, query_vector

    def _extractive(self, question: str, query_vector: Vectors, hits: list[SearchHit]) -> Answer:
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
        future = self._answer_workers().submit(answerer.answer, question, query_vector, hits, idf)
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
        return idf_weights(*self.store.keyword_statistics(terms))

    def _answer_key(self, question: str, hits: Sequence[SearchHit]) -> tuple[str, list[str]]:
        """The answer-cache key, and the content hashes of the evidence documents (an
        edited or removed document changes its hash: a miss, and `sync` purges the row)."""
        documents = {hit.path: self.store.document(hit.path) for hit in hits}
        content_hashes = [d.content_hash for d in documents.values() if d is not None]
        s = self.settings
        identity = {
            "prompt": PROMPT_VERSION,
            "question": " ".join(normalize(question).casefold().split()),
            "evidence": [
                [hit.chunk_id, d.content_hash if (d := documents[hit.path]) else None]
                for hit in hits
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
        return self.cached_embedder.embed_query(normalize(text))

    def _retriever(self) -> HybridRetriever:
        return HybridRetriever(self.store, self.cached_embedder, self.settings, self.reranker)

    @property
    def reranker(self) -> Reranker | None:
        """The configured reranker, loaded once per setting."""
        if self._reranker_for != self.settings.reranker:
            self._reranker = load_reranker(self.settings.reranker, self.settings.threads)
            self._reranker_for = self.settings.reranker
        return self._reranker

    def documents(self, groups: frozenset[str] | None = None) -> list[DocumentInfo]:
        """The indexed documents; with `groups`, only those a reader in them may read."""
        documents = self.store.documents()
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
        existence is not confirmed either)."""
        key = str(absolute_path(path))
        text = self.store.document_text(key)
        if text is not None and groups is not None:
            document = self.store.document(key)
            if document is None or document.id in self.store.unreadable_documents(groups):
                text = None
        if text is None:
            raise KeyError(f"{path} is not in the knowledge base")
        if line_start is None and line_end is None:
            return text
        lines = text.split("\n")
        start = max(1, line_start or 1)
        end = min(len(lines), line_end or len(lines))
        return "\n".join(lines[start - 1 : end])

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
        try:
            stat = Path(document.path).stat()
            # `modified` went through a datetime: microseconds, not the file system's ns
            same_time = abs(stat.st_mtime - document.modified.timestamp()) < 1e-3
            if stat.st_size == document.size and same_time:
                return "indexed"
            data = Path(document.path).read_bytes()
        except OSError:
            return "missing"
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()  # as the ingestor hashes
        return "indexed" if digest == document.content_hash else "changed"

    def resync(self, path: str | Path) -> SyncReport:
        """Re-read one indexed document: re-indexed if its file changed, removed if the
        file is gone. Unlike `add`, this does not make the file a source of its own."""
        key = absolute_path(path)
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
            return report

    @property
    def can_generate(self) -> bool:
        """Whether a language model is configured for generate mode (without loading it)."""
        s = self.settings
        return self._llm is not None or s.llm_backend == "openai" or s.llm_gguf is not None

    def status(self, groups: frozenset[str] | None = None) -> Status:
        """The knowledge base's numbers; with `groups`, the documents and chunks count
        only what a reader in them may read (the others' existence is not revealed)."""
        documents, chunks = self.store.counts(groups)
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
        )

    def sources(self, groups: frozenset[str] | None = None) -> list[str]:
        """The files and folders added (what `sync` re-reads); with `groups`, only those
        holding a document a reader in them may read: a source's path alone (a restricted
        file added on its own) says what it holds."""
        paths = [path for path, _, _ in self.store.sources()]
        if groups is None:
            return paths
        readable = sorted(d.path for d in self.documents(groups))

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
