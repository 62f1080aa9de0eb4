"""`KnowledgeBase`: the one object every surface (CLI, HTTP, MCP, Python) works through."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .analyzer import analyze
from .answerer import ExtractiveAnswerer
from .calibration import calibration_for
from .chunker import contextual_text
from .embedders import EMBEDDERS, Embedder, Vectors, get_embedder
from .ingest import Ingestor, ProgressCallback, Source
from .models import Answer, DocumentInfo, SearchHit, Status, SyncReport
from .rerank import Reranker, idf_weights, load_reranker
from .retriever import HybridRetriever
from .settings import DEFAULT_EMBEDDER, Settings
from .store import EmbeddedStore, Filters, StoreError


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
    ) -> None:
        """Open the knowledge base in `path` (default: settings.kb).

        `embedder` replaces the registered model of the same name (benchmarks and tests
        use it to supply precomputed vectors); its `name` must match the store's model.
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
        self.store = EmbeddedStore(
            self.path,
            model,
            create=create,
            exact_vector_search_below=self.settings.exact_vector_search_below,
        )
        self._embedder: Embedder | None = embedder
        self._reranker: Reranker | None = None
        self._query_vectors: dict[str, Vectors] = {}
        self._reranker_for: str | None = None

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

    # --- writing -------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | Path],
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        progress: ProgressCallback | None = None,
    ) -> SyncReport:
        """Index files and folders and remember them as sources for `sync`."""
        sources = [
            Source(
                Path(p).expanduser().resolve(),
                tuple(include),
                tuple(exclude) + tuple(self.settings.exclude),
            )
            for p in paths
        ]
        with self.store.writing():
            for source in sources:
                if source.root.exists():
                    self.store.add_source(str(source.root), include, exclude)
            return self._ingestor().run(sources, prune=True, progress=progress)

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
            for source in sources:
                if not source.root.exists():  # a whole source folder or file went away
                    for document in self.store.documents():
                        if document.path == str(source.root) or document.path.startswith(
                            str(source.root).rstrip("/") + "/"
                        ):
                            self.store.remove_document(document.path)
                            report.removed += 1
                            report.chunks_removed += document.chunks
            return report

    def remove(self, paths: Sequence[str | Path]) -> list[str]:
        """Forget files or whole folders (and stop syncing them). Returns removed paths."""
        removed: list[str] = []
        with self.store.writing():
            for raw in paths:
                target = str(Path(raw).expanduser().resolve())
                self.store.remove_source(target)
                prefix = target.rstrip("/") + "/"
                for document in self.store.documents():
                    if document.path == target or document.path.startswith(prefix):
                        self.store.remove_document(document.path)
                        removed.append(document.path)
        return removed

    def reindex(self, model: str | None = None) -> int:
        """Re-embed every chunk, with another model if given; returns the chunk count."""
        name = model or self.store.embedder_name
        if name not in EMBEDDERS:
            raise StoreError(
                f"unknown embedding model {name!r}; choose one of: {', '.join(EMBEDDERS)}"
            )
        embedder = get_embedder(name, self.settings.threads)
        with self.store.writing():
            self.store.set_embedder(name, embedder.dim)
            self._embedder = embedder
            self._query_vectors.clear()  # vectors of the old model must not be reused
            contexts = self.store.chunk_contexts()
            batch = self.settings.embed_batch
            for start in range(0, len(contexts), batch):
                part = contexts[start : start + batch]
                texts = [contextual_text(title, path, text) for _, title, path, text in part]
                vectors = embedder.embed_passages(texts)
                self.store.put_vectors({row[0]: v for row, v in zip(part, vectors, strict=True)})
        self.store.rebuild_indexes()
        return self.store.counts()[1]

    def _ingestor(self) -> Ingestor:
        return Ingestor(self.store, self.embedder, self.settings)

    # --- reading -------------------------------------------------------------------------

    def search(
        self, query: str, limit: int = 10, filters: Filters | None = None
    ) -> list[SearchHit]:
        """Hybrid (BM25 + dense) search; filters apply before ranking is cut off."""
        if not query.strip():
            raise ValueError("the query is empty")
        vector = self._query_vector(query) if self.settings.retrieval != "bm25" else None
        return self._retriever().retrieve(query, limit, filters, vector)

    def ask(self, question: str, filters: Filters | None = None) -> Answer:
        """An extractive answer with [n] citations, or an explicit "not found"."""
        if not question.strip():
            raise ValueError("the question is empty")
        query_vector = self._query_vector(question)
        hits = self._retriever().retrieve(
            question, self.settings.evidence_chunks, filters, query_vector
        )
        total, frequencies = self.store.keyword_statistics(analyze(question))
        calibration = calibration_for(self.store.embedder_name)
        threshold = self.settings.min_confidence
        answerer = ExtractiveAnswerer(
            self.embedder,
            self.settings.max_sentences,
            calibration.dense_floor,
            calibration.dense_ceiling,
            calibration.threshold if threshold is None else threshold,
        )
        return answerer.answer(question, query_vector, hits, idf_weights(total, frequencies))

    def _query_vector(self, text: str) -> Vectors:
        """Query embeddings, remembered for repeated questions (a chat asks follow-ups,
        the evaluation compares configurations on the same query)."""
        vector = self._query_vectors.pop(text, None)
        if vector is None:
            vector = self.embedder.embed_query(text)
        self._query_vectors[text] = vector
        while len(self._query_vectors) > 512:
            self._query_vectors.pop(next(iter(self._query_vectors)))
        return vector

    def _retriever(self) -> HybridRetriever:
        return HybridRetriever(self.store, self.embedder, self.settings, self.reranker)

    @property
    def reranker(self) -> Reranker | None:
        """The configured reranker, loaded once per setting."""
        if self._reranker_for != self.settings.reranker:
            self._reranker = load_reranker(self.settings.reranker)
            self._reranker_for = self.settings.reranker
        return self._reranker

    def documents(self) -> list[DocumentInfo]:
        return self.store.documents()

    def document_text(
        self, path: str | Path, line_start: int | None = None, line_end: int | None = None
    ) -> str:
        """The indexed text of a document, or lines [line_start, line_end] of it."""
        key = str(Path(path).expanduser().resolve())
        text = self.store.document_text(key)
        if text is None:
            raise KeyError(f"{path} is not in the knowledge base")
        if line_start is None and line_end is None:
            return text
        lines = text.split("\n")
        start = max(1, line_start or 1)
        end = min(len(lines), line_end or len(lines))
        return "\n".join(lines[start - 1 : end])

    def status(self) -> Status:
        documents, chunks = self.store.counts()
        return Status(
            path=str(self.path.resolve()),
            embedder=self.store.embedder_name,
            documents=documents,
            chunks=chunks,
            sources=[path for path, _, _ in self.store.sources()],
            store_bytes=self.store.size_bytes(),
            index_consistent=self.store.is_consistent(),
        )

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
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
