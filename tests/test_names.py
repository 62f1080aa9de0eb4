"""Names a question asks about (`answer/names.py`): a question about a model, a version, a
tool or a term of art that the notes, the evidence or the composed answer do not name is
refused, in whatever spacing, spelling or language the notes write the name."""

from __future__ import annotations

import pytest

from hits import hit
from sourcebook.answer.extractive import _understand
from sourcebook.answer.names import unanswered_name, unknown_name, unquotable_name, unspelled


@pytest.mark.parametrize(
    ("question", "absent", "unknown"),
    [
        ("OpenVINO 怎么配置？", {"openvino", "配置"}, "OpenVINO"),
        ("How do I configure OpenVINO?", {"openvino"}, "OpenVINO"),
        ("How do I configure Openvino?", {"openvino", "configur"}, "Openvino"),  # capitalised
        ("Configure it how?", {"configur"}, ""),  # capitalised as an English question starts
        ("Which special tokens does Gemma use?", {"gemma"}, "Gemma"),
        ("What vocabulary size does LLaMA-3 have?", {"llama-3"}, "LLaMA-3"),  # notes: LLaMA-2
        ("What vocabulary size does LLaMA-2 have?", {"vocabulari"}, ""),
        ("How does the Sophia optimizer work?", {"sophia"}, "Sophia"),
        ("512x512 的图 latent 多大？", {"512x512"}, ""),  # one letter: not a name
        # an ordinary word no note holds in any spelling is still unknown
        ("Megatron 的 interleaved pipeline 怎么办？", {"interleav"}, "interleaved"),
    ],
)
def test_a_name_is_unknown_only_without_any_spelling_in_the_notes(
    question: str, absent: set[str], unknown: str
) -> None:
    assert unknown_name(question, _understand(question, []).language, frozenset(absent)) == unknown


def test_a_name_the_notes_write_in_another_spelling_is_not_absent() -> None:
    chunks = {"显存": 4, "显卡": 2, "β": 3, "2": 9}  # what the notes hold
    absent = frozenset({"vram", "gpu", "beta2", "sophia", "gemma"})  # as written, nowhere

    def frequencies(tokens: list[str]) -> dict[str, int]:
        return {t: chunks.get(t, 0) for t in tokens}

    # VRAM is 显存, GPU 显卡 and beta2 β2 there; Sophia (圣索非亚) and Gemma are not
    assert unspelled(absent, frequencies) == {"sophia", "gemma"}


@pytest.mark.parametrize(
    ("question", "evidence", "unquotable"),
    [
        ("How big is the KV cache of LLaMA-3-70B?", "LLaMA-2-70B 用 GQA，8 组 KV。", "LLaMA-3-70B"),
        ("How many KV groups does LLaMA-2 70B use?", "LLaMA-2-70B 用 GQA，8 组 KV。", ""),
        ("DeepSpeed ZeRO++ 做了哪些改进？", "ZeRO-3 把参数也切分到每张卡。", "ZeRO++"),
        ("In LoRA+, how much larger is B's learning rate?", "LoRA+ 给 B 更大的学习率。", ""),
        ("What is the KV cache of Mixtral 8x7B?", "Mixtral 是 MoE 模型。", "8x7B"),
        ("SD3.5 用什么架构？", "新的 MMDiT 架构", "SD3.5"),
        ("SD3.5 用什么架构？", "架构", ""),  # the heading names it (below)
        ("512x512 的图 latent 多大？", "512×512 的图像的 latent", ""),  # a size, not a name
        ("What is the latent of a 768-dim vector?", "768 维向量", ""),
        ("What warmup does DeepSpeed use by default?", "warmup 默认 2000 步", "DeepSpeed"),
        ("How does DDP average gradients across GPUs?", "DDP 在每张 GPU 上 all-reduce", ""),
        ("How does the Sophia optimizer work?", "AdamW 的更新", "Sophia"),
        ("What chunk size suits Chinese text?", "中文按 300 字切块", ""),  # 中文
        ("How many parameters does DiT-XL/2 have?", "FLUX.1 是 12B 参数的 DiT", "DiT-XL/2"),
        ("LLaMA-1/2 的词表多大？", "LLaMA-1/2 的词表是 32000", ""),
        ("tiktoken 比 tokenizers 快多少？", "tokenizers 是 Rust 写的", "tiktoken"),
        ("tiktoken 的 vocab 多大？", "tokenizers 的词表是 32000", "tiktoken"),
        # an ordinary English word among the Chinese may be written in Chinese words the
        # dictionary does not give ("hidden size" as d_model, "initial value" as 初始化)
        ("Megatron 的 interleaved pipeline 怎么办？", "Megatron 的 pipeline 气泡", ""),
        ("mamba-2.8b 是多少层、hidden size 多大？", "mamba-2.8b：64 层，d_model 2560", ""),
        ("build engine 很慢, how to avoid it?", "第一次 build engine 要几分钟", ""),  # a clause
    ],
)
def test_a_specific_name_no_evidence_holds_cannot_be_answered(
    question: str, evidence: str, unquotable: str
) -> None:
    heading = "SD3.5" if evidence == "架构" else ""
    hits = [hit(evidence, heading)]
    assert unquotable_name(question, _understand(question, hits).language, hits) == unquotable


@pytest.mark.parametrize(
    ("question", "answer", "unanswered"),
    [
        ("What's the bf16 peak of an H100?", "On an A100 the bf16 peak is 312 TFLOPS", "H100"),
        ("H100 上 FP16 利用率多少？", "FlashAttention-3：H100 上 FP16 约 75%", ""),
        (
            "What's the file size of a 7B model at Q4_0?",
            "| type | 7B file size | | Q4_K_M | 4.1 GB |",
            "Q4_0",
        ),
        ("Q4_K_M 的 7B 文件多大？", "| type | 7B file size | | Q4_K_M | 4.1 GB |", ""),
        ("What does Q4_K_M trade off?", "q4_k_m is the popular default", ""),  # any case
        # a metric at a cut-off: pass@10 is neither pass@1 nor pass@100
        ("Which temperature suits pass@10?", "采样温度：pass@1 用 0.2，pass@100 用 0.8", "pass@10"),
        ("pass@1 用什么温度？", "采样温度：pass@1 用 0.2，pass@100 用 0.8", ""),
        ("Codex-12B 的 pass@100 是多少？", "Codex-12B 的 pass@1 是 28.8%", "pass@100"),
        ("How is Recall@10 computed?", "recall@10：前 10 个结果里命中的比例", ""),
    ],
)
def test_a_chip_quantisation_type_or_cut_off_the_answer_does_not_name_is_no_answer(
    question: str, answer: str, unanswered: str
) -> None:
    assert unanswered_name(question, answer) == unanswered


def test_an_answer_that_does_not_name_the_model_asked_about_is_no_answer() -> None:
    # LLaMA-3 is in the evidence, but the quoted line is about LLaMA-1/2
    question = "What is the vocabulary size of the LLaMA-3 tokenizer?"
    assert unanswered_name(question, "LLaMA-1/2 的词表是 32000，中文字很少。") == "LLaMA-3"
    assert not unanswered_name(question, "LLaMA-3 换了新的分词器。")
    assert not unanswered_name(question, "换了新的分词器。 LLaMA-3 笔记")  # the note's title
    # the answer names it in another spelling
    assert not unanswered_name("Adam's default beta2?", "Adam 默认 β2=0.999。")


def test_a_name_is_matched_in_any_spacing_and_spelling() -> None:
    hits = [hit("LLaMA-2-70B 用 8 组 KV；DDP 在每张 GPU 上放一份；中文按 300 字切块")]
    for question in (
        "How many KV groups does LLaMA-2 70B use?",
        "How does DDP sync GPUs?",
        "What chunk size suits Chinese text?",
    ):
        assert not unquotable_name(question, "en", hits), question


def test_a_name_is_held_only_as_a_whole_word() -> None:
    hits = [hit("ColBERT 做 late interaction；torch.optim.AdamW(lr=3e-4)；QLoRA 用 NF4")]
    assert unquotable_name("BERT 的词表多大？", "zh", hits) == "BERT"
    assert unquotable_name("What does LoRA train?", "en", hits) == "LoRA"
    assert unquotable_name("What is the default lr of Adam?", "en", hits) == "Adam"
    assert not unquotable_name("What lr does AdamW use here?", "en", hits)
    # a stem may run on: "interleaved" asked, "interleaving" written
    stems = [hit("Megatron 用 interleaving 的 1F1B 调度")]
    assert not unquotable_name("Megatron 的 interleaved 调度是什么？", "zh", stems)
