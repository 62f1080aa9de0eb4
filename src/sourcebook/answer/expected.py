"""The kind of value a question asks for, and whether a composed answer can hold it.

A question that asks for a default, a year, a duration or an amount is only answered by
text that states one. The closest passage in the notes often holds everything else: "What
is the default efSearch of IndexHNSWFlat?" finds `index.hnsw.efSearch = 64` in an
example, "How long does AWQ take to quantize a 70B model?" finds what AWQ does to a 70B
model, "Who proposed WSD, and in what year?" finds what WSD is. Their words, and the
embeddings of question and passage, match; only the kind of the answer is missing. The
extractive answerer refuses such a question after composing the answer
(`Answer.signals["unanswered_kind"]`).

Each kind is a pattern for the question and one for the answer, in English and Chinese;
the answer's pattern is broad on purpose (any year or month for a duration, any numeral
for an amount): the rule refuses only when the answer states nothing of the kind at all.
"""

from __future__ import annotations

import re

_EN_NUMERAL = (
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twice|double|half"
    r"|dozens?|hundreds?|thousands?|millions?|billions?)\b"
)

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
    "amount": (
        re.compile(r"\bhow (?:many|much|big|large)\b|多少|几个|几倍|多大", re.IGNORECASE),
        re.compile(rf"\d|[一二两三四五六七八九十百千万亿半]|{_EN_NUMERAL}", re.IGNORECASE),
    ),
}


def missing_kind(question: str, answer: str) -> str:
    """The kind of value the question asks for ("default", "year", "duration", "amount")
    that `answer` (the quoted units with their headings and titles) states nowhere, or
    ""."""
    for kind, (asks, states) in _KINDS.items():
        if asks.search(question) and not states.search(answer):
            return kind
    return ""
