"""Keyword analysis for BM25: one token stream for Chinese, English and mixed text.

Chinese runs are segmented with jieba (the Rust port `rjieba`, same dictionary and tokens,
25x faster); latin words are lower-cased and Snowball-stemmed; stop words and punctuation
are dropped. Index and query go through the same function, so they always agree.
"""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

from sourcebook.text import normalize

_stemmer = Stemmer.Stemmer("english")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Identifiers and numbers such as set_detect_anomaly, torch.float16, 0.999, gpt-4:
# indexed whole as well as by their parts, so an exact mention ranks first.
_COMPOUND = re.compile(r"^[^\W_]+(?:[._\-][^\W_]+)+$", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# "GPUs", "LLMs": the plural of an acronym is the acronym (the stemmer keeps "gpus")
_PLURAL_ACRONYM = re.compile(r"^[A-Z][A-Z0-9]+s$")

# Short lists on purpose: common function words only, so that queries such as
# "what is the KV cache" keep their content words and nothing else.
ENGLISH_STOPWORDS = frozenset(
    """a an and are as at be been but by can could do does did for from had has have how
    i if in into is it its may might must not of on or our shall should so such than that
    the their them then there these they this those to was we were what when where which
    while who whom why will with would you your""".split()
)
CHINESE_STOPWORDS = frozenset(
    """的 了 和 是 在 也 就 都 而 及 与 或 之 其 这 那 这个 那个 一个 什么 怎么 怎样 如何
    为什么 吗 呢 吧 啊 哪些 哪个 是否 有 被 把 对 从 中 上 下 里 我 你 他 她 它 我们 你们
    他们 请问 可以 能 会 要 如果 因为 所以 但是 并且 以及 还是""".split()
)


def analyze(text: str) -> list[str]:
    """Tokens for BM25: NFKC-normalised, segmented, lower-cased, stemmed, without stop
    words (the stored text keeps the file's characters: "（，）" and "(,)" match)."""
    # imported here: loading jieba's dictionary takes a while, and commands that never
    # analyse text (`status`, `show`) should not wait for it
    import rjieba

    tokens: list[str] = []
    for piece in rjieba.cut(normalize(text)):
        tokens.extend(_piece_tokens(piece))
    return tokens


@lru_cache(maxsize=50_000)
def _piece_tokens(piece: str) -> tuple[str, ...]:
    """The tokens of one segment (a word, an identifier, a space, punctuation): cached,
    since the same pieces recur all the time and the regular expressions were most of
    the cost of indexing. 50,000 pieces hold every piece of CMRC's and Cranfield's
    passages together (~48,000); a larger cache only grows with one-off identifiers (the
    codes of a 200 MB CSV took a 500,000-piece cache past 150 MB)."""
    tokens = [piece.lower()] if _COMPOUND.match(piece) else []
    for word in _WORD.findall(piece):
        token = _normalize_word(word)
        if token:
            tokens.append(token)
    return tuple(tokens)


def stem_word(word: str) -> str:
    """The stem an English word is indexed under (lower-cased, Snowball)."""
    return str(_stemmer.stemWord(word.lower()))


@lru_cache(maxsize=50_000)
def _normalize_word(word: str) -> str:
    if _CJK.search(word):
        return "" if word in CHINESE_STOPWORDS else word
    if _PLURAL_ACRONYM.match(word):
        word = word[:-1]
    lower = word.lower()
    if lower in ENGLISH_STOPWORDS:
        return ""
    return str(_stemmer.stemWord(lower))
