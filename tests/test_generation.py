"""Generated answers: evidence packing, prompts, verification of what a model wrote, the
fallback, streaming events and the answer cache.

What a model writes is fixed here by `ScriptedLLM` (a reply chosen by the test) so that
verification is tested on exactly the mistakes it must catch; retrieval, embeddings,
idf and the store are the real ones. The real models (llama.cpp, the OpenAI-compatible
server) are exercised in test_llm.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sourcebook import KnowledgeBase, Settings
from sourcebook.answer.calibration import judge_for
from sourcebook.answer.extractive import NOT_FOUND
from sourcebook.answer.generation import (
    Evidence,
    GroundedGenerator,
    Verifier,
    build_messages,
    pack_evidence,
    split_cited,
)
from sourcebook.answer.llm import Message
from sourcebook.evaluation.datasets import EvalQuery
from sourcebook.evaluation.run import evaluate_generation
from sourcebook.models import Answer, Language, SearchHit
from sourcebook.retrieve.rerank import idf_weights
from sourcebook.text import count_tokens, sentence_spans

PREFETCH = "What is the default prefetch_factor of a PyTorch DataLoader?"
LORA_RANK = "LoRA 的 rank r 一般取多少？"


class ScriptedLLM:
    """Replies with fixed text, word by word, and counts how often it was asked."""

    def __init__(self, reply: str, name: str = "scripted") -> None:
        self.reply = reply
        self.name = name
        self.calls: list[list[Message]] = []

    def stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float
    ) -> Iterator[str]:
        self.calls.append(list(messages))
        yield from re.findall(r"\S+\s*", self.reply)

    def complete(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> str:
        return "".join(self.stream(messages, max_tokens, temperature))

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)


def generating_kb(path: Path, llm: ScriptedLLM, **settings: object) -> KnowledgeBase:
    options: dict[str, object] = {"answer_mode": "generate", "answer_cache": False}
    options.update(settings)
    return KnowledgeBase(path, Settings(kb=path, **options), llm=llm)


def generator_for(kb: KnowledgeBase, llm: ScriptedLLM) -> GroundedGenerator:
    verifier = Verifier(
        kb.embedder,
        lambda terms: idf_weights(*kb.store.keyword_statistics(terms)),
        judge_for(kb.store.embedder_name, False).rescale,
    )
    return GroundedGenerator(llm, verifier, 1536, 128, 0.0)


def cited_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


def assert_citations_consistent(answer: Answer) -> None:
    """Every [n] in the text is a listed source, and sources are numbered 1..k."""
    numbers = [c.n for c in answer.citations]
    assert numbers == list(range(1, len(numbers) + 1))
    assert set(cited_numbers(answer.text)) <= set(numbers)


def hit_containing(hits: Sequence[SearchHit], phrase: str) -> SearchHit:
    return next(hit for hit in hits if phrase in hit.text)


# --- evidence and prompt -----------------------------------------------------------------


def test_evidence_is_packed_best_first_in_whole_sentences_within_the_budget(
    notes_kb: KnowledgeBase,
) -> None:
    hits = notes_kb.search(PREFETCH, limit=5)
    budget = 160
    packed = pack_evidence(hits, budget, count_tokens)
    assert packed and [e.n for e in packed] == list(range(1, len(packed) + 1))
    ranks = [hits.index(e.hit) for e in packed]
    assert ranks == sorted(ranks)  # best evidence first, order kept
    assert sum(count_tokens(e.render()) for e in packed) <= budget
    for item in packed:
        assert item.hit.text.startswith(item.text)
        sentence_ends = {end for _, end in sentence_spans(item.hit.text)}
        assert len(item.text) in sentence_ends  # never half a sentence
    assert any(len(e.text) < len(e.hit.text.rstrip()) for e in packed)  # the budget did cut
    whole = pack_evidence(hits, 100_000, count_tokens)
    assert [e.text for e in whole] == [hit.text.rstrip() for hit in hits]


@pytest.mark.parametrize(
    ("question", "language", "phrases"),
    [
        (PREFETCH, "en", ("square brackets, like [1]", "Answer in English")),
        (LORA_RANK, "zh", ("方括号写出它所依据的资料编号", "用中文")),
    ],
)
def test_prompt_numbers_labelled_sources_in_the_question_language(
    notes_kb: KnowledgeBase, question: str, language: Language, phrases: tuple[str, ...]
) -> None:
    hits = notes_kb.search(question, limit=3)
    evidence = pack_evidence(hits, 2000, count_tokens)
    system, user = build_messages(question, evidence)
    for phrase in (*phrases, NOT_FOUND[language]):
        assert phrase in system["content"]
    for item in evidence:
        hit = item.hit
        label = f"[{item.n}] {hit.title}"
        assert label in user["content"]
        assert f"{Path(hit.path).name}:{hit.line_start}-{hit.line_end}" in user["content"]
    assert user["content"].rstrip().endswith(question)


def test_citation_markers_belong_to_the_sentence_they_follow() -> None:
    sentences = split_cited(
        "LoRA freezes the weights. [1] It trains A and B [2, 3]. Uncited claim.\n"
        "- Rank is 8 or 16 [1][2]\n"
        "LoRA 冻结原始权重。【2】只训练 A 和 B。[1]"
    )
    assert [(s.text, s.citations) for s in sentences] == [
        ("LoRA freezes the weights.", (1,)),
        ("It trains A and B.", (2, 3)),
        ("Uncited claim.", ()),
        ("Rank is 8 or 16", (1, 2)),
        ("LoRA 冻结原始权重。", (2,)),
        ("只训练 A 和 B。", (1,)),
    ]


# --- verification ------------------------------------------------------------------------


def test_a_citation_of_a_source_that_does_not_exist_is_caught(notes_kb: KnowledgeBase) -> None:
    """Three sources are given; the model cites [9]: nothing verifiable remains, so the
    extractive answer comes back, with a notice."""
    llm = ScriptedLLM("The default prefetch_factor is 2 [9].")
    with generating_kb(notes_kb.path, llm, evidence_chunks=3) as kb:
        answer = kb.ask(PREFETCH)
        extractive = kb.ask(PREFETCH, mode="extractive")
    prompt = llm.calls[0][1]["content"]
    assert "[3] " in prompt and "[4] " not in prompt
    verification = answer.verification
    assert verification is not None
    assert verification.invalid_citations == [9]
    assert verification.sentences[0].reason == "cites only sources that do not exist"
    assert verification.fell_back and verification.notice
    assert answer.mode == "generate" and answer.found
    assert answer.text == extractive.text and "[9]" not in answer.text
    assert_citations_consistent(answer)


def test_supported_sentence_kept_unsupported_removed_and_sources_renumbered(
    notes_kb: KnowledgeBase,
) -> None:
    hits = notes_kb.search(PREFETCH, limit=5)
    prefetch = hit_containing(hits, "prefetch_factor")
    others = [h for h in hits if h is not prefetch][:2]
    evidence = pack_evidence([*others, prefetch], 2000, count_tokens)
    assert evidence[2].hit is prefetch
    reply = (
        "Each worker loads prefetch_factor batches in advance, two by default [3]. "
        "The Eiffel Tower is in Paris [1]. "
        "The default prefetch_factor is 4 [3]. "
        "DataLoader is the usual bottleneck."
    )
    llm = ScriptedLLM(reply)
    fallback = notes_kb.ask(PREFETCH)
    answer = generator_for(notes_kb, llm).verify(reply, PREFETCH, evidence, fallback)
    verification = answer.verification
    assert verification is not None and not verification.fell_back
    kept, eiffel, wrong_number, uncited = verification.sentences
    assert kept.supported and kept.lexical >= 0.6
    assert not eiffel.supported and eiffel.reason == "not supported by [1]"
    assert not wrong_number.supported and wrong_number.reason == "4 does not appear in [3]"
    assert not uncited.supported and uncited.reason == "cites no source"
    assert len(verification.removed) == 3 and verification.notice
    assert answer.text == (
        "Each worker loads prefetch_factor batches in advance, two by default. [1]"
    )
    assert [c.hit.chunk_id for c in answer.citations] == [prefetch.chunk_id]
    (citation,) = answer.citations
    assert "prefetch_factor" in citation.quotes[0]
    first, last = citation.quote_lines[0]
    lines = notes_kb.document_text(prefetch.path, first, last)
    assert "prefetch_factor" in lines  # the cited lines are the quoted evidence sentence
    assert_citations_consistent(answer)


def test_chinese_sentences_are_verified_against_chinese_evidence(notes_kb: KnowledgeBase) -> None:
    hits = notes_kb.search(LORA_RANK, limit=5)
    rank = hit_containing(hits, "通常取 8 或 16")
    evidence = [Evidence(1, rank, rank.text)]
    reply = (
        "LoRA 的 rank r 通常取 8 或 16。[1] 复杂任务可以加大到 128。[1] "
        "LoRA 由谷歌在 2019 年提出。[1]"
    )
    answer = generator_for(notes_kb, ScriptedLLM(reply)).verify(
        reply, LORA_RANK, evidence, notes_kb.ask(LORA_RANK)
    )
    assert answer.language == "zh" and answer.found
    assert answer.verification is not None
    supported = [s.supported for s in answer.verification.sentences]
    assert supported == [True, False, False]
    assert answer.text == "LoRA 的 rank r 通常取 8 或 16。 [1]"
    assert answer.verification.notice == "删除了 2 句引用来源不支持的内容。"


@pytest.mark.parametrize("question", [PREFETCH, LORA_RANK])
def test_a_model_saying_not_found_gives_a_not_found_answer(
    notes_kb: KnowledgeBase, question: str
) -> None:
    language = "zh" if question == LORA_RANK else "en"
    llm = ScriptedLLM(NOT_FOUND[language])
    with generating_kb(notes_kb.path, llm) as kb:
        answer = kb.ask(question)
    assert llm.calls, "the evidence is strong enough that the model is asked"
    assert not answer.found and answer.mode == "generate"
    assert answer.text == NOT_FOUND[language] and answer.language == language
    assert answer.citations and answer.verification is not None
    assert not answer.verification.fell_back


@pytest.mark.parametrize(
    "question", ["What is the capital of Australia?", "今天北京的天气怎么样？"]
)
def test_weak_evidence_is_not_found_without_asking_the_model(
    notes_kb: KnowledgeBase, question: str
) -> None:
    llm = ScriptedLLM("Canberra [1].")
    with generating_kb(notes_kb.path, llm) as kb:
        answer = kb.ask(question)
    assert not llm.calls
    assert not answer.found and answer.mode == "generate" and answer.verification is None


def test_tokens_stream_before_the_verified_answer(notes_kb: KnowledgeBase) -> None:
    reply = "Each worker loads prefetch_factor batches in advance, two by default [1]."
    with generating_kb(notes_kb.path, ScriptedLLM(reply)) as kb:
        events = list(kb.ask_stream(PREFETCH))
    *tokens, final = events
    assert len(tokens) > 5 and all(e.type == "token" and e.answer is None for e in tokens)
    assert final.type == "answer" and final.answer is not None
    assert "".join(e.text for e in tokens) == reply
    assert final.answer.verification is not None
    assert final.answer.verification.draft == reply
    assert final.answer.text.endswith("two by default. [1]")
    assert not final.answer.verification.removed


def test_extractive_mode_streams_only_the_answer(notes_kb: KnowledgeBase) -> None:
    (event,) = list(notes_kb.ask_stream(PREFETCH))
    assert event.type == "answer" and event.answer is not None
    assert event.answer.mode == "extractive" and event.answer.verification is None


# --- the answer cache --------------------------------------------------------------------


def test_cached_answer_is_reused_until_its_document_changes(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    base, notes = kb_copy
    reply = "Each worker loads prefetch_factor batches in advance, two by default [1]."
    llm = ScriptedLLM(reply)
    with generating_kb(base.path, llm, answer_cache=True) as kb:
        first = kb.ask(PREFETCH)
        # the same question typed differently (spacing); a cased encoder may rank other
        # evidence for other capitalisation, and then the cache must miss
        again = kb.ask("  What is the default prefetch_factor of a  PyTorch DataLoader? ")
        assert not first.cached and again.cached and len(llm.calls) == 1
        assert again.text == first.text

        assert kb.sync().cached_answers_purged == 0  # nothing changed: still cached
        assert kb.ask(PREFETCH).cached

        tips = notes / "basics" / "dataloader-tips.rst"
        tips.write_text(tips.read_text().replace("default is 2", "default is 3"))
        assert kb.sync().cached_answers_purged == 1
        edited = kb.ask(PREFETCH)
        assert not edited.cached and len(llm.calls) == 2
        assert "default is 3" in llm.calls[1][1]["content"]  # the model saw the new text

    other_model = ScriptedLLM(reply, name="another model")
    with generating_kb(base.path, other_model, answer_cache=True) as kb:
        assert not kb.ask(PREFETCH).cached and other_model.calls

        tips.unlink()
        assert kb.sync().cached_answers_purged == 2
        assert not kb.ask(PREFETCH).cached


def test_eval_reports_support_and_no_missing_citations_after_verification(
    notes_kb: KnowledgeBase,
) -> None:
    """`sourcebook eval --generate` numbers: what the drafts cited, what verification
    kept, and that no final answer cites a source it does not list."""
    llm = ScriptedLLM("The default is 2 [9]. The Eiffel Tower is in Paris [1].")
    queries = [
        EvalQuery("q1", PREFETCH, {}),
        EvalQuery("q2", "What does ONNX Runtime's execution provider do?", {}),
    ]
    with generating_kb(notes_kb.path, llm, evidence_chunks=3) as kb:
        row = evaluate_generation(kb, queries)
    assert row["model"] == "scripted" and row["generated_sentences"] == 4
    assert row["supported_sentence_share"] == 0.0
    assert row["invalid_citations_in_drafts"] == 2
    assert row["citations_to_missing_sources"] == 0
    assert row["fell_back_to_extractive"] == 1.0 and row["refused"] == 0.0
