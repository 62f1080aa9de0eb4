"""Names a question asks about, and whether the notes, the evidence or an answer hold them.

A question about a model, a version, a tool or a term of art the notes never name cannot
be answered from them, however close its other words come: "the vocabulary of LLaMA-3"
is not answered by "LLaMA-1/2 的词表是 32000", nor "DeepSpeed's default warmup" by a
passage on warmup that never names DeepSpeed. The extractive answerer refuses such a
question before its judge weighs the evidence (`Answer.signals["unknown_name"]`):

- `unknown_name`: a name no note holds in any spelling (from the store's term statistics);
- `unquotable_name`: a name none of the evidence chunks holds, so no quote can be about it;
- `unanswered_name`: a specific name (a model, a version, a size) the composed answer
  does not name.

A name counts as held in any spacing ("LLaMA-2 70B" is "LLaMA-2-70B") and in any of its
spellings: Greek (beta2 → β2), an acronym's singular (GPUs → GPU), a stem, a translation
from the glossary ("Chinese" → 中文, "VRAM" → 显存); and only as a whole word: "Adam" is
not named by "AdamW", nor "BERT" by "ColBERT".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from sourcebook.index.analyzer import analyze
from sourcebook.index.bilingual import glossary, greek_variants
from sourcebook.models import Language, SearchHit
from sourcebook.text import normalize

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# the latin words of a question, where names are looked for
_WORD_PIECE = re.compile(r"[A-Za-z0-9+]+")
VERSIONED = re.compile(r"\b[A-Za-z][A-Za-z0-9]*-\d[\w.]*")  # LLaMA-3, GPT-4, Qwen2-7B
# the specific names of a question: a model or version ("LLaMA-3-70B", "SD3.5", "bge-m3",
# "DiT-XL/2", "LLaMA-2 70B"), a chip ("H100"), a quantisation type ("Q4_0", "Q4_K_M"), a
# metric at a cut-off ("pass@10", "Recall@5"), a size ("100B", "8x7B", "128k") or a
# successor ("ZeRO++")
_SPECIFIC_NAME = re.compile(
    r"(?<![A-Za-z0-9.+/-])(?:[A-Za-z][A-Za-z.]*[A-Za-z][A-Za-z0-9.+/-]*\d[A-Za-z0-9.+/-]*"
    r"|[A-Z]\d+(?:_[A-Z0-9]+)+|[A-Z]\d{2,}|[A-Za-z]+@(?:\d+|k)"
    r"|\d+(?:\.\d+)?(?:x\d+)?[BbKkMm]"
    r"|[A-Za-z][A-Za-z0-9-]*[A-Za-z]\+\+?)(?![A-Za-z0-9+])"
)
_SEPARATORS = re.compile(r"[\s\-_.]+")
# latin words between Chinese ones: "的 interleaved pipeline 是"
_LATIN_RUN = re.compile(r"(?<![A-Za-z0-9'])[A-Za-z][A-Za-z0-9+]*(?:[ \t]+[A-Za-z][A-Za-z0-9+]*)*")
_PLURAL_NAME = re.compile(r"[A-Z][A-Za-z0-9]*[A-Z0-9]s")  # GPUs, LLMs


def question_names(question: str, language: Language, ordinary: bool = True) -> list[str]:
    """The words of the question written as names: a capital after the first letter or
    letters with digits ("OpenVINO", "SGLang", "HQQ", "GPT4o"), at least two letters; a
    capitalised word of three letters or more that does not start an English question
    ("Gemma", "Sophia"); a name with a version ("LLaMA-3"); and in a question with Chinese
    in it, a term of art: a latin word of three letters or more set among the Chinese
    alone or with one other ("Megatron-LM 的 interleaved pipeline", "tiktoken 比…"), not
    in an English clause ("…很慢, how to avoid it?"). Without `ordinary`, a latin word
    among the Chinese that is an ordinary dictionary word ("interleaved", "hidden size",
    "initial value") is left out: the notes may well say it in Chinese words the
    dictionary does not give."""
    first = (_WORD_PIECE.findall(question) or [""])[0] if language == "en" else ""
    names = []
    for piece in VERSIONED.findall(question) + _WORD_PIECE.findall(question):
        letters = sum(c.isalpha() for c in piece)
        if letters >= 2 and (
            any(c.isupper() for c in piece[1:])
            or (any(c.isdigit() for c in piece) and letters > 0)
            or (piece[0].isupper() and letters >= 3 and piece != first)
        ):
            names.append(piece)
    if _CJK.search(question):
        for run in _LATIN_RUN.findall(question):
            words = run.split()
            if len(words) <= 2:
                names += [
                    w
                    for w in words
                    if len(w) >= 3
                    and analyze(w)
                    and w not in names
                    and (ordinary or _term_of_art(w))
                ]
    return names


def unknown_name(question: str, language: Language, absent: frozenset[str]) -> str:
    """A name of the question (`question_names`) that no note contains in any spelling
    (`absent`: see `unspelled`), or "" ("LLaMA-3" where the notes have only LLaMA-2).
    Ordinary words are left to the judge: a paraphrase may say them."""
    if not absent:
        return ""
    for name in question_names(question, language):
        terms = analyze(name)  # "GPUs" → gpu
        if "-" in name:  # a versioned name is unknown when the whole of it is
            terms = terms[:1]
        if terms and all(t in absent for t in terms):
            return name
    return ""


def unspelled(
    absent: frozenset[str], frequencies: Callable[[list[str]], dict[str, int]]
) -> frozenset[str]:
    """The terms of `absent` (no note holds them) that no note holds in another spelling
    either: a translation ("VRAM" → 显存, "Sophia" → 圣索非亚) or a Greek letter ("beta2" →
    β2). `frequencies` gives the number of chunks holding each analysed token."""
    if not absent:
        return absent
    dictionary = glossary()
    spellings = {
        term: greek_variants(term) or (dictionary.variants(term) if dictionary else ())
        for term in absent
    }
    tokens = {v: analyze(v) for found in spellings.values() for v in found}
    counts = frequencies(sorted({t for found in tokens.values() for t in found}))
    return frozenset(
        term
        for term, found in spellings.items()
        if not any(tokens[v] and all(counts.get(t, 0) for t in tokens[v]) for v in found)
    )


def unquotable_name(question: str, language: Language, hits: Sequence[SearchHit]) -> str:
    """A name of the question (`question_names`) or a specific one (a model, a size, a
    successor) that no evidence chunk holds, or "". The answer can only quote those
    chunks, so it could not be about "LLaMA-3-70B" when they only speak of LLaMA-2-70B,
    about "ZeRO++" when they describe ZeRO, or about DeepSpeed's defaults when none of
    them names DeepSpeed."""
    specific: list[str] = _SPECIFIC_NAME.findall(question)
    names = list(dict.fromkeys(specific + question_names(question, language, ordinary=False)))
    if not names or not hits:
        return ""
    evidence = _plain(" ".join(f"{h.title} {h.text} {' '.join(h.heading_path)}" for h in hits))
    return next((n for n in names if not _holds(evidence, n)), "")


def _term_of_art(word: str) -> bool:
    """Whether a latin word is no ordinary dictionary word ("softmax", "tiktoken")."""
    dictionary = glossary()
    terms = analyze(word)
    return dictionary is None or not all(dictionary.is_common_word(t) for t in terms)


def unanswered_name(question: str, answer: str) -> str:
    """A specific name of the question (a model, a version, a size) that `answer` (the
    quoted units with their headings and their notes' titles) does not name, or "": "the
    vocabulary of LLaMA-3" is not answered by "LLaMA-1/2 的词表是 32000" just because
    LLaMA-3 is named elsewhere in the evidence."""
    names: list[str] = _SPECIFIC_NAME.findall(question)
    said = _plain(answer)
    return next((n for n in names if not _holds(said, n)), "")


def _holds(text: str, name: str) -> bool:
    """Whether `text` (`_plain`) names `name` in one of its spellings, in any spacing
    ("LLaMA-2 70B" is "LLaMA-2-70B") and as a whole: "Adam" is not "AdamW", nor "BERT"
    "ColBERT"; only a stem may run on ("interleav" in "interleaving")."""
    return any(pattern.search(text) for pattern in _patterns(name))


@lru_cache(maxsize=4096)
def _patterns(name: str) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for spelling, whole in _spellings(name):
        letters = _SEPARATORS.sub("", _plain(spelling))
        if letters:
            body = r"[\s\-_.]*".join(map(re.escape, letters))
            end = r"(?![a-z0-9])" if whole else ""
            patterns.append(re.compile(rf"(?<![a-z0-9]){body}{end}"))
    return tuple(patterns)


def _spellings(name: str) -> list[tuple[str, bool]]:
    """A name and its other spellings, each with whether it must stand whole: Greek
    (beta2 → β2), an acronym's singular (GPUs → GPU), translations ("Chinese" → 中文), and
    a stem, which may run on."""
    lowered = name.lower()
    spellings = [(s, True) for s in [name, *greek_variants(lowered)]]
    if _PLURAL_NAME.fullmatch(name):
        spellings.append((name[:-1], True))
    if name.isalpha() and name.islower():  # "heads", "interleaved": their stems
        spellings += [(stem, False) for stem in analyze(name)]
    if dictionary := glossary():  # as written, and as the analyser writes it (chines)
        for term in dict.fromkeys([lowered, *analyze(name)]):
            spellings += [(v, True) for v in dictionary.variants(term)]
    return spellings


def _plain(text: str) -> str:
    """Normalised, lower-case, × as x: what names are looked for in."""
    return str(normalize(text).lower().replace("×", "x"))
