"""End to end with the real default model on the sample notes: retrieval, citations,
sync of edits and deletions, bad files, refusal, filters."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sourcebook import Filters, KnowledgeBase

# (question, file the answer is in, a phrase of the answering sentence)
QUESTIONS = [
    ("LoRA 为什么能减少显存？", "llm/lora.md", "optimizer state"),
    ("LoRA 的 rank r 一般取多少？", "llm/lora.md", "通常取 8 或 16"),
    ("Adam 的默认 β2 是多少？", "training/optimizers.md", "β2=0.999"),
    (
        "What does ONNX Runtime's execution provider do?",
        "deploy/onnx-runtime.md",
        "execution provider",
    ),
    (
        "Why do Transformers use LayerNorm instead of BatchNorm?",
        "basics/batchnorm-vs-layernorm.md",
        "batch size",
    ),
    ("GPT-2 的词表有多大？", "llm/tokenization.md", "50257"),
    ("PagedAttention 的每个 block 存多少个 token？", "web/kv-cache-inference.html", "16 个 token"),
    (
        "What auxiliary loss coefficient does the Switch Transformer use for load balancing?",
        "papers/mixture-of-experts.pdf",
        "0.01",
    ),
    ("Mixtral 8x7B 每个 token 激活多少参数？", "papers/mixture-of-experts.pdf", "12.9B"),
    ("GradScaler 的默认 init_scale 是多少？", "training/mixed-precision.md", "65536"),
    (
        "What is the default prefetch_factor of a PyTorch DataLoader?",
        "basics/dataloader-tips.rst",
        "default is 2",
    ),
    (
        "torch.autograd.set_detect_anomaly 有什么用？",
        "misc/loss-nan-checklist.txt",
        "set_detect_anomaly",
    ),
]

# Known misses, kept visible (a question listed here must fail retrieval: the xfail is
# strict). "Mixtral 8x7B 每个 token 激活多少参数？" (a Chinese question over an English PDF)
# was one until the PDF was read with its structure (issue 14): its table rows and
# paragraphs now make chunks of one topic each, under their heading.
KNOWN_RETRIEVAL_MISSES: set[str] = set()
# Retrieved, but the answer is refused rather than guessed (none at present).
KNOWN_REFUSALS: set[str] = set()
TOP_THREE_CASES = [
    pytest.param(*case, marks=pytest.mark.xfail(strict=True, reason="known fusion miss"))
    if case[0] in KNOWN_RETRIEVAL_MISSES
    else case
    for case in QUESTIONS
]

OFF_TOPIC = [
    "红烧肉怎么做才好吃？",
    "Who won the 1998 FIFA World Cup final?",
    "明朝是哪一年建立的？",
]


@pytest.mark.parametrize(("question", "relative", "phrase"), TOP_THREE_CASES)
def test_right_note_is_in_the_top_three(
    notes_kb: KnowledgeBase, question: str, relative: str, phrase: str
) -> None:
    hits = notes_kb.search(question, limit=3)
    assert any(hit.path.endswith(relative) for hit in hits), [h.path for h in hits]
    assert all(hit.ranks and set(hit.ranks) <= {"bm25", "dense"} for hit in hits)


def test_right_note_first_and_fact_in_answer_for_most_questions(
    notes_kb: KnowledgeBase,
) -> None:
    """Quality floor on the sample notes (measured: 10 of 12 first, 10 of 12 answered;
    the misses are a Chinese question over an English PDF and a paraphrased answer)."""
    first = sum(
        notes_kb.search(q, limit=1)[0].path.endswith(relative) for q, relative, _ in QUESTIONS
    )
    answered = sum(phrase.lower() in notes_kb.ask(q).text.lower() for q, _, phrase in QUESTIONS)
    assert first >= 10 and answered >= 10, (first, answered)


@pytest.mark.parametrize(("question", "relative", "phrase"), QUESTIONS)
def test_answers_cite_exact_lines(
    notes_kb: KnowledgeBase, question: str, relative: str, phrase: str
) -> None:
    answer = notes_kb.ask(question)
    if question in KNOWN_RETRIEVAL_MISSES | KNOWN_REFUSALS:  # refuse, not guess
        assert not answer.found, answer.text
        return
    assert answer.found, answer.text
    numbers = {c.n for c in answer.citations}
    assert numbers == set(range(1, len(answer.citations) + 1))
    for citation in answer.citations:
        assert f"[{citation.n}]" in answer.text
        hit = citation.hit
        if hit.kind in ("markdown", "text", "rst"):  # lines of the file itself, verbatim
            lines = Path(hit.path).read_text(encoding="utf-8").split("\n")
            for quote, (first, last) in zip(citation.quotes, citation.quote_lines, strict=True):
                assert hit.line_start <= first <= last <= hit.line_end
                cited = " ".join(" ".join(lines[first - 1 : last]).split())
                assert " ".join(quote.split()) in cited


def test_answer_language_follows_question(notes_kb: KnowledgeBase) -> None:
    assert notes_kb.ask("LoRA 为什么能减少显存？").language == "zh"
    assert notes_kb.ask("What does ONNX Runtime's execution provider do?").language == "en"


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_questions_outside_the_notes_are_refused(notes_kb: KnowledgeBase, question: str) -> None:
    answer = notes_kb.ask(question)
    assert not answer.found, answer.text
    expected = (
        "知识库中没有找到相关内容" if answer.language == "zh" else "Not found in the knowledge base"
    )
    assert expected in answer.text
    assert answer.citations  # the nearest sources are still listed


def test_filters_apply_inside_retrieval(notes_kb: KnowledgeBase) -> None:
    only_training = notes_kb.search("显存", limit=10, filters=Filters(path_glob="*/training/*"))
    assert only_training and all("/training/" in h.path for h in only_training)
    # a filter that excludes the best match still returns the best *allowed* results
    tagged = notes_kb.search("LoRA rank", limit=3, filters=Filters(tags=("rag",)))
    assert tagged and all(h.path.endswith("rag-pipeline.md") for h in tagged)
    future = datetime.now(UTC) + timedelta(days=1)
    assert notes_kb.search("LoRA", filters=Filters(modified_after=future)) == []


def test_edit_and_delete_are_reflected_after_sync(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = kb_copy
    lora = notes / "llm" / "lora.md"
    lora.write_text(
        lora.read_text(encoding="utf-8").replace("通常取 8 或 16", "通常取 4 或 12"),
        encoding="utf-8",
    )
    (notes / "basics" / "batchnorm-vs-layernorm.md").unlink()
    time.sleep(0.01)
    report = kb.sync()
    assert (report.updated, report.removed) == (1, 1)
    assert 0 < report.chunks_embedded < report.chunks_added  # only changed chunks embedded
    assert "通常取 4 或 12" in kb.ask("LoRA 的 rank r 一般取多少？").text
    hits = kb.search("Why do Transformers use LayerNorm instead of BatchNorm?", limit=20)
    assert not any(h.path.endswith("batchnorm-vs-layernorm.md") for h in hits)
    keyword, vectors = kb.store.index_sizes()
    assert keyword == vectors == kb.status().chunks
    assert kb.sync().unchanged == kb.status().documents  # nothing left to do


def test_bad_files_are_reported_and_the_rest_is_indexed(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, notes = kb_copy
    bad = notes / "bad"
    bad.mkdir()
    (bad / "empty.md").write_text("")
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.4\n%garbage without objects")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (bad / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")  # a JPEG cut off after its marker
    (bad / "weights.safetensors").write_bytes(b"\x00" * 64)  # a format we do not read
    (bad / "good.md").write_text("# 新笔记\n\nSpeculative decoding 用小模型起草、大模型验证。\n")
    report = kb.sync()
    reasons = {Path(f.path).name: f.reason for f in report.failed}
    assert set(reasons) == {"empty.md", "corrupt.pdf", "binary.txt", "photo.jpg"}
    assert "corrupt PDF" in reasons["corrupt.pdf"] and "binary" in reasons["binary.txt"]
    assert "image" in reasons["photo.jpg"]
    assert [Path(s.path).name for s in report.skipped] == ["weights.safetensors"]
    assert report.added == 1
    assert kb.search("Speculative decoding 起草", limit=1)[0].path.endswith("good.md")


def test_remove_drops_documents_from_every_index(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = kb_copy
    before = kb.status().chunks
    removed = kb.remove([notes / "llm"])
    assert len(removed) == 6
    assert all("/llm/" not in h.path for h in kb.search("LoRA 显存", limit=20))
    keyword, vectors = kb.store.index_sizes()
    assert keyword == vectors == kb.status().chunks < before
    assert kb.sync().removed == 0  # a removed folder is no longer a source


def test_opening_with_another_model_names_the_reindex_command(
    notes_kb: KnowledgeBase,
) -> None:
    from sourcebook import Settings, StoreError

    other = (
        "use-multilingual"
        if notes_kb.store.embedder_name != "use-multilingual"
        else ("multilingual-e5-small")
    )
    with pytest.raises(StoreError, match=f"sourcebook reindex --model {other}"):
        KnowledgeBase(notes_kb.path, Settings(kb=notes_kb.path, embedder=other))


def test_near_duplicate_passages_take_one_place(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = kb_copy
    original = (notes / "training" / "optimizers.md").read_text(encoding="utf-8")
    (notes / "copy-of-optimizers.md").write_text(original, encoding="utf-8")
    edited = original.replace("Adam 默认", "Adam 的默认值:", 1) + "\n补充一句。\n"
    (notes / "edited-optimizers.md").write_text(edited, encoding="utf-8")
    kb.sync()
    hits = kb.search("Adam 的默认 β2 是多少？", limit=5)
    # the three files hold the same passages at the same places: each passage once
    places = [(tuple(h.heading_path), h.line_start) for h in hits]
    assert len(set(places)) == len(places), [h.location for h in hits]


def test_reindex_switches_the_embedding_model(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, _ = kb_copy
    chunks = kb.status().chunks
    assert kb.reindex("use-multilingual") == chunks
    assert kb.status().embedder == "use-multilingual"
    assert kb.store.index_sizes() == (chunks, chunks)
    assert kb.search("Adam 的默认 β2 是多少？", limit=3)[0].path.endswith("optimizers.md")
    reopened = KnowledgeBase(kb.path)  # the new identity is what the store now records
    assert reopened.store.embedder_name == "use-multilingual"
    reopened.close()
