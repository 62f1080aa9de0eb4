"""The kind of value a question asks for (`answer/expected.py`): a question that asks for a
default, a year, a duration, an amount, a version or an option's name is not answered by a
quote that states none."""

from __future__ import annotations

import pytest

from sourcebook.answer.expected import missing_kind
from sourcebook.kb import KnowledgeBase


@pytest.mark.parametrize(
    ("question", "answer", "missing"),
    [
        # a default: an example's setting is not the default
        ("What's the default efSearch of IndexHNSWFlat?", "index.hnsw.efSearch = 64", "default"),
        ("Qdrant 里 HNSW 的默认 M 是多少？", "直接 HNSW，M=16，efConstruction=200", "default"),
        ("What is the default beta2 of Adam?", "Adam 默认 β1=0.9, β2=0.999", ""),
        ("Adam 的默认 β2 是多少？", "By default beta2 is 0.999.", ""),
        # a year
        ("Who proposed WSD, and in what year?", "WSD：warmup、恒定、快速衰减", "year"),
        ("海宁西站哪一年启用？", "海宁西站于2010年启用", ""),
        ("陈荣捷卒于哪一年？", "陈荣捷卒于一九九四年", ""),
        # a duration, in time or in training steps; not a length, not a frequency
        ("How long does AWQ take to quantize a 70B model?", "a 70B model at 4 bits", "duration"),
        ("QLoRA 微调 65B 模型花了多长时间？", "一张 48GB 的 GPU 就微调了 65B 的模型", "duration"),
        ("How long does the warmup last?", "固定 2000 步", ""),
        ("How long does building the engine take?", "第一次构建 engine 可能要几分钟", ""),
        ("How long is the context window?", "上下文 8192", ""),
        ("这个函数多久调用一次？", "每个 step 调用", ""),
        # an amount
        ("How large should the parent chunk be?", "命中后把它所在的大块交给 LLM", "amount"),
        ("Mamba 比 attention 快多少？", "Mamba 是线性复杂度", "amount"),
        ("How many heads does the base model use?", "h=8, d_k=64", ""),
        (
            "What is the largest BLOCK_SIZE?",
            "BLOCK_SIZE = triton.next_power_of_2(n_cols)",
            "amount",
        ),
        ("What is the maximum context length?", "上下文长度最多 32k", ""),
        ("现存多少头？", "现存约六百五十头", ""),
        ("How much smaller is the int8 model?", "about half the size", ""),
        ("What tile size does FlashAttention use?", "FlashAttention 把 Q、K、V 切成小块", "amount"),
        ("What nprobe value should I start with?", "nprobe 越大召回越高", "amount"),
        ("How many experts does each token go to?", "top-2 routing: 每个 token 选两个", ""),
        ("How many experts are active per token?", "Mixtral uses top-2 routing", ""),
        # a digit inside a name is no amount; 一 of 一个/一般 is none either
        (
            "How much does Q4_K_M raise perplexity?",
            "llama-perplexity -m qwen2-7b-q4_k_m.gguf",
            "amount",
        ),
        ("候选词表一般要准备多大？", "先准备一个很大的候选词表（T5、LLaMA-1/2）", "amount"),
        ("How big is the vocabulary?", "LLaMA-3 的词表是 128k", ""),
        ("学习率一般设多少？", "一般设成 2e-4", ""),
        ("LoRA 微调要几张卡？", "LoRA 微调一张卡就够", ""),
        (
            "序列并行能省多少激活显存？",
            "序列并行把 LayerNorm 沿序列维度切开，进一步省激活显存",
            "amount",
        ),
        # a version
        (
            "Which CUDA version does flash-attn need?",
            "需要 Ampere 及以上的 GPU（A100、H100）",
            "version",
        ),
        ("onnxruntime 1.18 要哪个版本的 cuDNN？", "| 1.18.1 | 12.x | 9.x |", ""),
        ("Which version of FlashAttention supports FP8?", "FlashAttention-3 支持 FP8", ""),
        # the name of an option
        ("What's the option name for the engine cache?", "一定要开 engine cache", "identifier"),
        ("What's the provider option name for the cache?", "trt_engine_cache_enable: True", ""),
        ("vLLM 限制最大上下文的参数名是什么？", "--max-model-len 8192", ""),
        (
            "What's the env variable name that hides GPUs?",
            "看不到 GPU 时先查环境变量",
            "identifier",
        ),
        # "which parameter matters most" asks for a parameter, not for its name in code
        ("LoRA 训练时最重要的是哪个参数？", "最重要的是秩 r", ""),
        # no kind asked for
        ("Why does LoRA save memory?", "冻结的权重不需要梯度", ""),
    ],
)
def test_an_answer_must_state_the_kind_of_value_asked_for(
    question: str, answer: str, missing: str
) -> None:
    assert missing_kind(question, [answer]) == missing


@pytest.mark.parametrize(
    ("question", "pieces", "missing"),
    [
        # the default of an option named in code must be stated where the option is
        (
            "lm-eval 的 batch_size default 是多少？",
            ["--batch_size auto", "gsm8k 任务默认 5-shot"],
            "default",
        ),
        (
            "What's the default value of --max-model-len?",
            ["--max-model-len 8192", "默认 0.9"],
            "default",
        ),
        (
            "What's the default value of --max-model-len?",
            ["--gpu-memory-utilization 0.90 \\   # 默认 0.9\n    --max-model-len 8192 \\"],
            "default",
        ),
        # each line of a command continued with "\\" sets its own option; a list item with
        # its continuation line is one piece
        (
            "What is the default prefetch_factor?",
            [
                "* ``prefetch_factor`` is the number of batches each worker loads in advance;\n"
                "  the default is 2."
            ],
            "",
        ),
        (
            "vLLM 的 --gpu-memory-utilization 默认是多少？",
            ["--gpu-memory-utilization 0.90  # 默认 0.9"],
            "",
        ),
        ("What's the default efSearch?", ["efSearch = 64", "HNSW 的 efSearch 默认 16"], ""),
        # without an option named in code, a default anywhere in the answer's note will do
        ("What's DDP's default bucket size?", ["DDP 会把梯度分桶", "bucket 默认 25 MB"], ""),
    ],
)
def test_the_default_of_an_option_is_stated_where_the_option_is(
    question: str, pieces: list[str], missing: str
) -> None:
    assert missing_kind(question, pieces) == missing


def test_a_question_whose_answer_states_no_year_is_refused(notes_kb: KnowledgeBase) -> None:
    # the notes name AdamW's authors, never a year
    answer = notes_kb.ask("In which year was AdamW proposed?")
    assert not answer.found and answer.signals.get("unanswered_kind") == 1.0
    assert notes_kb.ask("What is the default beta2 of Adam?").found
