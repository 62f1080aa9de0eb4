"""The kind of value a question asks for, and whether a composed answer can hold it.

A question that asks for a default, a year, a duration, an amount, a version or the name
of an option is only answered by text that states one. The closest passage in the notes
often holds everything else: "What is the default efSearch of IndexHNSWFlat?" finds
`index.hnsw.efSearch = 64` in an example, "How long does AWQ take to quantize a 70B
model?" finds what AWQ does to a 70B model, "Who proposed WSD, and in what year?" finds
what WSD is. Their words, and the embeddings of question and passage, match; only the
kind of the answer is missing. The extractive answerer refuses such a question after
composing the answer (`Answer.signals["unanswered_kind"]`).

Each kind is a pattern for the question and one for the answer, in English and Chinese;
the answer's pattern is broad on purpose (any year or month for a duration, any numeral
for an amount): the rule refuses only when the answer states nothing of the kind at all.
A digit inside a name ("Qwen2", "H100", "LLaMA-1/2", "q4_k_m") is not an amount, nor is
the 一 of 一个/一般/一种.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_EN_NUMERAL = (
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twice|double|half"
    r"|dozens?|hundreds?|thousands?|millions?|billions?)\b"
)

# a number that stands alone: a digit that starts a word ("7B", "0.999", "3x", "m=16",
# "top-2"), not one inside a name
_NUMBER = r"(?<![A-Za-z0-9_./+\-])\d|\btop-\d"
# Chinese numerals, but not 一 alone: 一个, 一般, 一种, 进一步 and 一块载入 state no amount,
# while 一张卡 and 一倍 do
_ZH_NUMERAL = r"[二两三四五六七八九十百千万亿半]|一[万千百亿倍半张]|[十百千万]一"

# a name in code: snake_case, a command-line flag, camelCase (not "vLLM")
_IDENTIFIER = re.compile(r"[A-Za-z]\w*_\w+|--?[a-z][\w-]+|\b[a-z]{2,}[A-Z]\w*")

# a line of a shell command continued on the next ("--flag 0.9 \\  # 默认 0.9")
_CONTINUED = re.compile(r"\\[ \t]*(?:#.*)?$")

# kind → (what asks for it, what states one)
_KINDS: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "default": (
        re.compile(r"\bdefaults?\b|默认|缺省", re.IGNORECASE),
        re.compile(r"\bdefaults?\b|默认|缺省|不设置?时|不指定时", re.IGNORECASE),
    ),
    "year": (
        re.compile(
            r"\b(?:what|which) year\b|\bwhen was\b.*\b(?:published|released|proposed)\b"
            r"|哪一?年(?!级)|年份",
            re.IGNORECASE,
        ),
        re.compile(r"(?<![\d.])(?:1[5-9]|20)\d\d(?![\d.])|年|\byears?\b", re.IGNORECASE),
    ),
    # "how long does it take", not "how long is the context"; "多久调用一次" asks how often;
    # training runs are timed in steps and epochs too
    "duration": (
        re.compile(
            r"\bhow long\b(?=.*\b(?:take|takes|took|last|lasts|run|runs|train|trains)\b)"
            r"|\bhow much time\b|\b(?:GPU|wall[- ]clock) hours\b|多长时间|多久(?!.{0,8}一次)|耗时",
            re.IGNORECASE,
        ),
        re.compile(
            r"小时|分钟|秒|天|周|月|年|世纪|步|轮"
            r"|\b(?:hours?|minutes?|seconds?|days?|weeks?|months?|years?|steps?|epochs?)\b"
            r"|\d\s*(?:ms|s|h|min)\b",
            re.IGNORECASE,
        ),
    ),
    # "what tile size", "what nprobe value", "what is the largest" ask for a number too
    "amount": (
        re.compile(
            r"\bhow (?:many|much|big|large)\b|多少|几个|几倍|多大"
            r"|\bwhat (?:[\w-]+ ){0,2}(?:value|size|number|count)s?\b"
            r"|\bwhat(?:'s| is| are) the (?:largest|smallest|maximum|minimum|max|min)\b",
            re.IGNORECASE,
        ),
        re.compile(rf"{_NUMBER}|{_ZH_NUMERAL}|{_EN_NUMERAL}", re.IGNORECASE),
    ),
    # a version: "12.x", "2.1.0", "v2", "LLaMA-3", "3 版"
    "version": (
        re.compile(
            r"\b(?:which|what) (?:[\w-]+ ){0,2}versions?\b|哪个版本|什么版本|哪一版|版本号",
            re.IGNORECASE,
        ),
        re.compile(r"\d+\.(?:\d+|x)\b|\bv\d+\b|[A-Za-z]-\d|\d+\s*版"),
    ),
    # the name of an option, a flag, a parameter: an identifier ("trt_engine_cache_enable",
    # "--max-model-len", "efSearch", "CUDA_VISIBLE_DEVICES")
    "identifier": (
        re.compile(
            r"\b(?:option|flag|parameter|argument|setting|config|variable)(?: key)? names?\b"
            r"|参数名|选项名|叫什么参数|哪个环境变量",
            re.IGNORECASE,
        ),
        _IDENTIFIER,
    ),
}


def missing_kind(question: str, pieces: Sequence[str]) -> str:
    """The kind of value the question asks for ("default", "year", "duration", "amount",
    "version", "identifier") that the answer states nowhere, or "". `pieces`: each span
    the answer quotes (a sentence, a list item, a line of a command), with the headings
    and title it reads under. The default of an option the question names in code
    ("batch_size", "--max-model-len") must be stated in a piece that names it: "gsm8k
    任务默认 5-shot" states no default batch_size, nor "# 默认 0.9" on the line of
    `--gpu-memory-utilization` the default of `--max-model-len`."""
    answer = " ".join(pieces)
    for kind, (asks, states) in _KINDS.items():
        if asks.search(question) and not states.search(answer):
            return kind
    options = [name.lstrip("-").lower() for name in _IDENTIFIER.findall(question)]
    if options and _KINDS["default"][0].search(question):
        states = _KINDS["default"][1]
        settings = [setting for piece in pieces for setting in _settings(piece)]
        if not any(
            states.search(line) and all(o in line.lower() for o in options) for line in settings
        ):
            return "default"
    return ""


def _settings(piece: str) -> list[str]:
    """A quoted piece split where it sets options one by one: each line of a shell command
    continued with a backslash sets its own; any other piece is one."""
    settings = [""]
    for line in piece.split("\n"):
        settings[-1] = f"{settings[-1]}\n{line}" if settings[-1] else line
        if _CONTINUED.search(line):
            settings.append("")
    return [s for s in settings if s]
