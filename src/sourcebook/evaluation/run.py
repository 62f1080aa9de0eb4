"""`sourcebook eval`: run a dataset through the real pipeline and measure it.

The documents are written as Markdown files and ingested with `KnowledgeBase.add`, and
every query goes through `KnowledgeBase.search` / `ask`: the same code as the CLI, so the
numbers describe the product, not a re-implementation of it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sourcebook.evaluation import study_notes
from sourcebook.evaluation.datasets import EvalDataset, EvalQuery, load_named
from sourcebook.evaluation.metrics import (
    answer_f1,
    contains_answer,
    exact_match,
    mrr_at,
    ndcg_at,
    percentile,
    recall_at,
)
from sourcebook.kb import KnowledgeBase
from sourcebook.settings import DEFAULT_EMBEDDER, Settings
from sourcebook.store.embedded import Filters


@dataclass(frozen=True)
class RetrievalConfig:
    name: str
    retrieval: Literal["hybrid", "bm25", "dense"]
    fusion: Literal["rrf", "weighted"] = "rrf"
    reranker: str = "none"


DEFAULT_CONFIGS = (
    RetrievalConfig("bm25", "bm25"),
    RetrievalConfig("dense", "dense"),
    RetrievalConfig("hybrid-rrf", "hybrid"),
    RetrievalConfig("hybrid-weighted", "hybrid", "weighted"),
    RetrievalConfig("hybrid-rrf+rerank", "hybrid", "rrf", "learned"),
)

Progress = Callable[[str], None]


def build_kb(
    dataset: EvalDataset, settings: Settings, work: Path, progress: Progress | None = None
) -> KnowledgeBase:
    """Index the dataset once per (dataset, model, chunking). Later runs reuse it: `add`
    skips unchanged files by hash, and completes a build that was interrupted."""
    model = settings.embedder or DEFAULT_EMBEDDER
    key = f"{dataset.name}-{model}-c{settings.chunk_tokens}-o{settings.chunk_overlap}"
    folder, kb_path = work / key / "docs", work / key / "kb"
    settings = settings.model_copy(update={"kb": kb_path, "embedder": model})
    folder.mkdir(parents=True, exist_ok=True)
    for document in dataset.documents:
        path = folder / f"{document.id}.md"
        if not path.exists():
            body = f"# {document.title}\n\n{document.text}\n" if document.title else document.text
            path.write_text(body, encoding="utf-8")
    exists = (kb_path / "sourcebook.db").exists()
    kb = KnowledgeBase(kb_path, settings, create=not exists)
    if progress:
        progress(
            f"{'checking' if exists else 'indexing'} {len(dataset.documents)} documents "
            f"of {dataset.name} with {model}"
        )
    kb.add([folder])
    return kb


def _doc_id(path: str) -> str:
    return Path(path).stem


def evaluate_retrieval(
    kb: KnowledgeBase,
    dataset: EvalDataset,
    queries: Sequence[EvalQuery],
    configs: Sequence[RetrievalConfig],
) -> dict[str, dict[str, float]]:
    """Recall@1/5/10/20, MRR@10, nDCG@10 (binary, and graded where the data has grades)
    and latency, per configuration; documents ranked by their best chunk."""
    base = kb.settings
    results: dict[str, dict[str, float]] = {}
    for config in configs:
        kb.settings = base.model_copy(
            update={
                "retrieval": config.retrieval,
                "fusion": config.fusion,
                "reranker": config.reranker,
            }
        )
        sums: dict[str, float] = {}
        latencies = []
        for query in queries:
            started = time.perf_counter()
            hits = kb.search(query.text, limit=max(base.candidates, 50))
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = list(dict.fromkeys(_doc_id(h.path) for h in hits))
            scores = {
                "recall@1": recall_at(ranked, query.relevant, 1),
                "recall@5": recall_at(ranked, query.relevant, 5),
                "recall@10": recall_at(ranked, query.relevant, 10),
                "recall@20": recall_at(ranked, query.relevant, 20),
                "mrr@10": mrr_at(ranked, query.relevant, 10),
                "ndcg@10": ndcg_at(ranked, query.relevant, 10, graded=False),
            }
            if dataset.graded:
                scores["ndcg@10_graded"] = ndcg_at(ranked, query.relevant, 10, graded=True)
            for name, value in scores.items():
                sums[name] = sums.get(name, 0.0) + value
        count = max(1, len(queries))
        row = {name: round(value / count, 4) for name, value in sums.items()}
        row["p50_ms"] = round(percentile(latencies, 0.5), 2)
        row["p95_ms"] = round(percentile(latencies, 0.95), 2)
        results[config.name] = row
    kb.settings = base
    return results


def evaluate_answers(
    kb: KnowledgeBase, queries: Sequence[EvalQuery], unanswerable: bool = True
) -> dict[str, float]:
    """Answer quality on SQuAD-style questions, plus refusal on the same questions asked
    with their own paragraph excluded from retrieval (so they have no answer)."""
    contained = f1 = em = refused = sentences = length = 0.0
    cited = cited_good = 0
    bad_numbers = 0
    latencies: list[float] = []
    refused_unanswerable = 0
    for query in queries:
        started = time.perf_counter()
        answer = kb.ask(query.text)
        latencies.append((time.perf_counter() - started) * 1000)
        numbers = {c.n for c in answer.citations}
        bad_numbers += sum(1 for n in _cited_numbers(answer.text) if n not in numbers)
        if not answer.found:
            refused += 1
            continue
        text = _strip_citations(answer.text)
        contained += contains_answer(text, query.answers)
        f1 += answer_f1(text, query.answers)
        em += exact_match(text, query.answers)
        sentences += sum(len(c.quotes) for c in answer.citations)
        length += len(text)
        for citation in answer.citations:
            cited += 1
            cited_good += _doc_id(citation.hit.path) in query.relevant or contains_answer(
                citation.hit.text, query.answers
            )
    if unanswerable:
        for query in queries:
            own = next(iter(query.relevant))
            answer = kb.ask(query.text, Filters(exclude_glob=f"*/{own}.md"))
            refused_unanswerable += not answer.found
    count = max(1, len(queries))
    answered = max(1, count - int(refused))
    return {
        "questions": len(queries),
        "answer_contains_gold": round(contained / count, 4),
        "answer_contains_gold_when_answered": round(contained / answered, 4),
        "f1": round(f1 / count, 4),
        "exact_match": round(em / count, 4),
        "refusal_rate_answerable": round(refused / count, 4),
        "refusal_rate_unanswerable": round(refused_unanswerable / count, 4)
        if unanswerable
        else float("nan"),
        "citation_precision": round(cited_good / max(1, cited), 4),
        "citations_to_missing_sources": bad_numbers,
        "sentences_per_answer": round(sentences / answered, 2),
        "characters_per_answer": round(length / answered, 1),
        "ask_p50_ms": round(percentile(latencies, 0.5), 1),
        "ask_p95_ms": round(percentile(latencies, 0.95), 1),
    }


def evaluate_generation(kb: KnowledgeBase, queries: Sequence[EvalQuery]) -> dict[str, Any]:
    """Generated answers (settings' language model) through `ask(mode="generate")`: how
    much of what the model wrote its citations support, and what verification did. Works
    on any dataset (no gold answers needed); contains-gold is added where there are some."""
    drafts = supported = invalid = bad_numbers = fell_back = refused = contained = 0
    with_gold = 0
    latencies: list[float] = []
    for query in queries:
        started = time.perf_counter()
        answer = kb.ask(query.text, mode="generate")
        latencies.append((time.perf_counter() - started) * 1000)
        numbers = {c.n for c in answer.citations}
        bad_numbers += sum(1 for n in _cited_numbers(answer.text) if n not in numbers)
        refused += not answer.found
        if query.answers and answer.found:
            with_gold += 1
            contained += contains_answer(_strip_citations(answer.text), query.answers)
        check = answer.verification
        if check is None:  # refused before the model was asked
            continue
        drafts += len(check.sentences)
        supported += sum(s.supported for s in check.sentences)
        invalid += len(check.invalid_citations)
        fell_back += check.fell_back
    count = max(1, len(queries))
    return {
        "questions": len(queries),
        "model": kb.llm.name,
        "generated_sentences": drafts,
        "supported_sentence_share": round(supported / max(1, drafts), 4),
        "invalid_citations_in_drafts": invalid,
        "citations_to_missing_sources": bad_numbers,  # after verification: must be 0
        "fell_back_to_extractive": round(fell_back / count, 4),
        "refused": round(refused / count, 4),
        "answer_contains_gold": round(contained / max(1, with_gold), 4) if with_gold else None,
        "ask_p50_ms": round(percentile(latencies, 0.5), 1),
        "ask_p95_ms": round(percentile(latencies, 0.95), 1),
    }


def _cited_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


def _strip_citations(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text)


def run_eval(
    dataset_names: Sequence[str],
    split: str,
    models: Sequence[str],
    settings: Settings,
    work: Path,
    limit: int | None = None,
    answers: bool = True,
    progress: Progress | None = None,
    answer_limit: int | None = None,
    generate: bool = False,
) -> dict[str, Any]:
    """Every configuration on every dataset; answers with the first model's defaults, on
    the first `answer_limit` queries (each is asked twice, with and without its paragraph);
    `generate` adds generated answers (the configured language model) on those queries."""
    results: dict[str, Any] = {
        "split": split,
        "settings": settings.model_dump(
            mode="json",
            include={
                "chunk_tokens",
                "chunk_overlap",
                "candidates",
                "rrf_k",
                "rerank_depth",
                "evidence_chunks",
                "max_sentences",
            },
        ),
        "datasets": {},
    }
    for name in dataset_names:
        if name == study_notes.NAME:  # notes with gold facts and lines, asked through `ask`
            results["datasets"][name] = study_notes.evaluate_study_notes(
                split, settings, work, models[0], limit or answer_limit, progress
            )
            continue
        dataset = load_named(name)
        queries = dataset.split(split)[:limit] if limit else dataset.split(split)
        entry: dict[str, Any] = {"queries": len(queries), "retrieval": {}}
        for index, model in enumerate(models):
            kb = build_kb(dataset, settings.model_copy(update={"embedder": model}), work, progress)
            configs = [c for c in DEFAULT_CONFIGS if index == 0 or c.retrieval != "bm25"]
            for config_name, row in evaluate_retrieval(kb, dataset, queries, configs).items():
                label = config_name if config_name == "bm25" else f"{config_name} ({model})"
                entry["retrieval"][label] = row
            if index == 0 and answers and any(q.answers for q in queries):
                entry["answers"] = evaluate_answers(kb, queries[:answer_limit])
            if index == 0 and generate:
                entry["generated_answers"] = evaluate_generation(kb, queries[:answer_limit])
            kb.close()
        results["datasets"][dataset.name] = entry
    return results


def summarize(results: dict[str, Any]) -> str:
    """Markdown tables of the results, for the terminal and RESULTS.md."""
    lines: list[str] = []
    for name, entry in results["datasets"].items():
        if entry.get("kind") == study_notes.NAME:
            lines += [*study_notes.summarize_study_notes(entry), ""]
            continue
        rows = entry["retrieval"]
        metrics = list(next(iter(rows.values())))
        lines += [
            f"**{name}**, {results['split']} split, {entry['queries']} queries",
            "",
            "| config | " + " | ".join(metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for config, row in rows.items():
            lines.append(f"| {config} | " + " | ".join(str(row[m]) for m in metrics) + " |")
        for key, title in (("answers", "answer metric"), ("generated_answers", "generated")):
            if key in entry:
                lines += ["", f"| {title} | value |", "|---|---|"]
                lines += [f"| {k} | {v} |" for k, v in entry[key].items()]
        lines.append("")
    return "\n".join(lines)


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """Bar chart of nDCG@10 and MRR@10 per configuration and dataset; False when no
    dataset has retrieval figures (study-notes alone), and nothing is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = {name: e for name, e in results["datasets"].items() if "retrieval" in e}
    if not datasets:
        return False
    figure, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for axis, (name, entry) in zip(axes[0], datasets.items(), strict=True):
        configs = list(entry["retrieval"])
        positions = range(len(configs))
        for offset, metric in ((-0.2, "ndcg@10"), (0.2, "mrr@10")):
            values = [entry["retrieval"][c][metric] for c in configs]
            axis.bar([p + offset for p in positions], values, width=0.4, label=metric)
        axis.set_xticks(list(positions), configs, rotation=30, ha="right", fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_title(f"{name} ({results['split']} split)")
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
