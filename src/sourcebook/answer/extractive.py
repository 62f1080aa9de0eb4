"""Extractive answers: quote the evidence units that answer the question, with [n].

No language model is involved, so nothing can be invented: every piece of the answer is
an exact substring of a source (a sentence, a table row with its header, a list item with
its lead-in, a code line with its comment: `units.py`), and every source listed is one the
answer quotes. When the evidence is too weak the answer says so, in the question's language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache

import rjieba

from sourcebook.answer import expected, names
from sourcebook.answer.calibration import SIGNALS, Judge
from sourcebook.answer.units import AnswerUnit, answer_units, display_length, quote_text
from sourcebook.index.analyzer import analyze
from sourcebook.index.bilingual import glossary, greek_variants, phrase_variants
from sourcebook.index.embedders import Embedder, Vectors
from sourcebook.models import Answer, Citation, Language, SearchHit
from sourcebook.text import is_chinese, normalize

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_COMPOUND = re.compile(r"[-_.]")

NOT_FOUND = {
    "zh": "知识库中没有找到相关内容。",
    "en": "Not found in the knowledge base.",
}

# The question asks for several things: a whole short list may be the answer.
_SEVERAL = re.compile(
    r"分别|哪些|哪几|哪[两三四五六七八九十]|几种|几个|有什么|步骤|区别|不同|对比|优缺点|"
    r"\b(?:what are|which|list|steps|differences?|compare|versus|vs)\b"
    # "the two ways", "three kinds of", not "a power of two"
    r"|\b(?:two|three|four|five)\s+(?!of\b)[a-z]",
    re.IGNORECASE,
)
# "BatchNorm 和 LayerNorm", "beta1 and beta2", "A、B、C", "Q K V": the parts of a question
_JOINER = r"(?:\s*(?:、|,|，|/|和|与|及|以及|跟|还是|\band\b|\bor\b|\bvs\.?)\s*)"
_LATIN_TERM = r"[A-Za-z\u0370-\u03ff][\w\u0370-\u03ff.\-]*"
_PARTS = re.compile(rf"{_LATIN_TERM}(?:{_JOINER}{_LATIN_TERM})+")
_LETTER_PARTS = re.compile(r"(?<!\w)[A-Z\u0391-\u03c9]\d?(?:\s+[A-Z\u0391-\u03c9]\d?)+(?!\w)")
# a "why" question is answered by a line that gives a reason
_WHY = re.compile(r"\bwhy\b|为什么|为何|凭什么|什么原因|原因是", re.IGNORECASE)
_REASON = re.compile(
    r"\b(?:because|since|due to|so that|in order to|otherwise)\b"
    r"|因为|由于|所以|因此|为了|否则|导致",
    re.IGNORECASE,
)
# a question about code ("我那段 top-2 代码里…", "in the snippet") is answered by a code line
_ABOUT_CODE = re.compile(r"代码|\b(?:code|snippet)\b", re.IGNORECASE)
# "What is HNSW?", "HNSW 是什么", "什么是 HNSW": the answer defines the subject
_DEFINITION = re.compile(
    r"^\s*(?:what(?:'s|\s+is|\s+are)\s+(?:an?\s+|the\s+)?(?P<en>[^?？]+?)\s*[?？]?\s*$"
    r"|^\s*(?P<zh>[^？?]+?)\s*(?:是什么|是啥|指的是什么|指什么)"
    r"|^\s*什么是\s*(?P<zh2>[^？?]+?)\s*[?？]?\s*$)",
    re.IGNORECASE,
)
_FENCE_LINE = re.compile(r"^[ \t]*(?:```|~~~)")
# the stemmer keeps "slower" apart from "slow": a question asks "why slow", notes answer
# "20% slower"
_COMPARED = {
    "slow": ("slower", "slowest"), "fast": ("faster", "fastest"),
    "larg": ("larger", "largest"), "small": ("smaller", "smallest"),
    "low": ("lower", "lowest"), "high": ("higher", "highest"),
    "long": ("longer", "longest"), "short": ("shorter", "shortest"),
    "cheap": ("cheaper", "cheapest"), "quick": ("quicker", "quickest"),
    "deep": ("deeper", "deepest"), "wide": ("wider", "widest"),
    "big": ("bigger", "biggest"), "easi": ("easier", "easiest"),
    "hard": ("harder", "hardest"), "strong": ("stronger", "strongest"),
    "weak": ("weaker", "weakest"), "few": ("fewer", "fewest"),
    "great": ("greater", "greatest"),
}  # fmt: skip
# Words that frame a question rather than name what it asks about: how it asks ("how
# much", 多少, "what's"), hedges ("usually", 一般), generic verbs ("use", "take", "need"),
# and references to the notes themselves ("the table", "in the example", "according to").
# The answer seldom repeats them, least of all in the other language ("How much memory
# does 8-bit Adam save?" is answered by "8-bit Adam 把优化器状态压到…"), so coverage and the
# missing-term signals leave them out; retrieval still sees them.
_QUESTION_FRAME = """
    much many what's don't doesn't isn't aren't didn't use used using uses take takes need
    needs give gives given get gets only usually typically typical often also just example
    examples snippet table tables note notes section according listed list shown show shows
    mentioned described say says way ways kind kinds happen happens per number difference
    differences between compared compare
    多少 多大 多 几 哪 一般 通常 具体 分别 主要 笔记 里面 提到 示例 例子 表格 有没有 是不是
    区别 作用 问题 大概 大约
"""
_CN_JOINERS = frozenset({"、", "和", "与", "及", "以及", "跟", "还是"})
_CONNECTIVES = {"and", "or", "vs", "vs.", "what", "is", "are", "the", "of", "how", "why"}


@dataclass(frozen=True)
class _Candidate:
    hit_index: int
    unit: AnswerUnit
    text: str  # the unit's quoted text (what is embedded and matched)
    tokens: frozenset[str]
    score: float
    coverage: float
    dense: float


@dataclass(frozen=True)
class _Question:
    """What the answerer needs to know about the question."""

    text: str
    language: Language
    terms: list[str]
    variants: dict[str, tuple[str, ...]]  # term → its spellings in the other language
    parts: list[list[str]]  # terms of each part of a multi-part question
    several: bool  # asks for several things (a list may answer it)
    subject: str = ""  # what a definition question asks about, lower-cased ("hnsw")
    why: bool = False  # asks for a reason
    about_code: bool = False  # asks about a piece of code


class ExtractiveAnswerer:
    """Select answer units within a budget (`max_units` units, `budget` characters, a
    latin word counting two).

    A unit scores by how much of the question (idf-weighted terms, or their translations
    when question and notes differ in language) it covers and by its embedding similarity to
    the question. The best one is always quoted; then the reason behind a "所以/so"
    conclusion, the clause after a "；", the list a "：" introduces, a unit for each part of a
    multi-part question not yet covered, and other units close in score, while the budget
    lasts. The `judge` decides from the evidence signals whether to answer at all.
    """

    def __init__(
        self,
        embedder: Embedder,
        max_units: int,
        judge: Judge,
        max_embedded_sentences: int = 8,
        budget: int = 120,
    ) -> None:
        self.embedder = embedder
        self.max_units = max_units
        self.judge = judge
        self.max_embedded_sentences = max_embedded_sentences
        self.budget = budget

    def answer(
        self,
        question: str,
        query_vector: Vectors,
        hits: Sequence[SearchHit],
        idf: dict[str, float],
        absent: frozenset[str] = frozenset(),
    ) -> Answer:
        """`absent`: question terms the knowledge base holds nowhere, in no spelling
        (`names.unspelled`). A question about a name the notes, the evidence or the
        composed answer do not hold is refused outright (`names`)."""
        asked = _understand(question, hits)
        if names.unknown_name(question, asked.language, absent) or names.unquotable_name(
            question, asked.language, hits
        ):
            return self._refused_by_rule(question, asked.language, hits, "unknown_name")
        candidates = self._candidates(asked, query_vector, hits, idf)
        best = max(
            (c for c in candidates if c.unit.kind != "list" or asked.several),
            key=lambda c: c.score,
            default=None,
        )
        chosen = _Composer(self, asked, candidates, idf).compose(best) if best else []
        said = _said(hits, chosen)
        if chosen and names.unanswered_name(question, said):
            return self._refused_by_rule(question, asked.language, hits, "unknown_name")
        # the kind asked for must be in what the answer quotes from the best unit's note:
        # a year in a unit added from another note does not date the thing asked about
        pieces = _pieces(hits, _same_note(hits, chosen, best)) if best else []
        if best and expected.missing_kind(question, pieces):
            return self._refused_by_rule(question, asked.language, hits, "unanswered_kind")
        signals = self.signals(asked, hits, candidates, best, chosen, idf)
        confidence = self.judge.confidence(signals)
        if best is None or confidence < self.judge.threshold:
            return self._not_found(question, asked.language, hits, confidence, signals)
        return self._compose(question, asked.language, hits, chosen, confidence, signals)

    def signals(
        self,
        asked: _Question,
        hits: Sequence[SearchHit],
        candidates: Sequence[_Candidate],
        best: _Candidate | None,
        chosen: Sequence[_Candidate],
        idf: dict[str, float],
    ) -> dict[str, float]:
        """The evidence measurements the answer/refuse decision is made from (see
        `calibration.Judge`): of the evidence, its `best` unit and the units the answer
        would quote (`chosen`); returned with the answer so a refusal can be explained."""
        if not hits or best is None:
            return dict.fromkeys(SIGNALS, 0.0)
        weights = [idf.get(t, 0.0) for t in asked.terms]
        highest = max(weights, default=0.0) or 1.0
        evidence = _evidence_by_hit(hits, candidates)
        # the chunk the answer quotes first, which need not be the top-ranked one
        top_tokens, top_text = evidence.get(best.hit_index, (frozenset(), ""))
        missing = [
            w
            for t, w in zip(asked.terms, weights, strict=True)
            if not _matches(t, asked.variants.get(t, ()), top_tokens, top_text)
        ]
        numbers = _NUMBER.findall(asked.text)
        rerank = [hit.scores.get("rerank", 0.0) for hit in hits[:2]]
        return {
            "top_dense": self.judge.rescale(max(hit.scores.get("dense", 0.0) for hit in hits)),
            "sentence_dense": self.judge.rescale(max(c.dense for c in candidates)),
            "sentence_coverage": best.coverage,
            # the answer's units together ("how many warmup steps and total steps": two
            # code lines, each covering half the question)
            "answer_coverage": sum(
                w
                for t, w in zip(asked.terms, weights, strict=True)
                if any(_matches(t, asked.variants.get(t, ()), c.tokens, c.text) for c in chosen)
            )
            / (sum(weights) or 1.0),
            "sentence_score": best.score,
            "chunk_coverage": 1.0 - sum(missing) / (sum(weights) or 1.0),
            "missing_term": _rarest_missing(asked, weights, [evidence.get(best.hit_index)])
            / highest,
            "evidence_missing": _rarest_missing(asked, weights, list(evidence.values())) / highest,
            "numbers_found": (
                sum(1 for n in numbers if n in top_text) / len(numbers) if numbers else 1.0
            ),
            "answer_numbers": (
                sum(1 for n in numbers if n in best.text) / len(numbers) if numbers else 1.0
            ),
            "rerank": rerank[0],
            "rerank_margin": rerank[0] - rerank[1] if len(rerank) > 1 else 1.0,
            # the language of the passage the answer would quote, not of the top hits
            # together (one English note among them would make a Chinese answer "English")
            "cross_language": float(asked.language != _passage_language(hits[best.hit_index])),
        }

    def _candidates(
        self,
        asked: _Question,
        query_vector: Vectors,
        hits: Sequence[SearchHit],
        idf: dict[str, float],
    ) -> list[_Candidate]:
        total = sum(idf.get(t, 0.0) for t in asked.terms) or 1.0
        found: list[tuple[int, AnswerUnit, str, frozenset[str], float]] = []
        for index, hit in enumerate(hits):
            for unit in answer_units(hit.text):
                text = normalize(unit.text(hit.text))
                # every unit of a section reads in the context of its heading, not only the
                # first line under it ("普朗特生于…" and "他卒于1953年" are both about him),
                # and a code line in that of its block's opening comment
                section = unit.section or (hit.heading_path[-1] if hit.heading_path else "")
                context = " ".join(
                    dict.fromkeys(x for x in (hit.title, section, unit.caption) if x)
                )
                matched = f"{normalize(context)}\n{text}" if context else text
                tokens = frozenset(analyze(matched))
                coverage = (
                    sum(
                        idf.get(t, 0.0)
                        for t in asked.terms
                        if _matches(t, asked.variants.get(t, ()), tokens, matched)
                    )
                    / total
                )
                found.append((index, unit, text, tokens, coverage))
        similarity = self._similarities(query_vector, found)
        candidates = []
        for (index, unit, text, tokens, coverage), dense in zip(found, similarity, strict=True):
            rank_weight = 1.0 / (1.0 + 0.15 * index)
            # slight preference for informative, not overly long units
            length_factor = 1.0 / (1.0 + max(0, len(text) - 200) / 400)
            score = (0.5 * coverage + 0.5 * self.judge.rescale(dense)) * rank_weight * length_factor
            if asked.subject and _defines(unit, text, asked.subject):
                score *= 1.3  # "HNSW 是一种…" answers "What is HNSW?" better than its drawbacks
            if asked.why and _REASON.search(text):
                score *= 1.15  # "It must be a power of two, because tl.arange only accepts…"
            if asked.about_code and unit.kind == "code":
                score *= 1.2  # "我那段 top-2 代码里 softmax…" asks about the code, not the prose
            candidates.append(_Candidate(index, unit, text, tokens, score, coverage, dense))
        return [self._whole_list_score(c, candidates, asked) for c in candidates]

    def _whole_list_score(
        self, candidate: _Candidate, candidates: list[_Candidate], asked: _Question
    ) -> _Candidate:
        """A whole list scores as its best item (it quotes it), favoured when the question
        asks for several things; one too long to be a short list is never chosen."""
        if candidate.unit.kind != "list":
            return candidate
        if display_length(candidate.text) > 2 * self.budget:
            return replace(candidate, score=0.0)
        spans = set(candidate.unit.spans)
        items = [
            c.score
            for c in candidates
            if c.hit_index == candidate.hit_index
            and c.unit.kind == "list_item"
            and set(c.unit.spans) <= spans
        ]
        factor = 1.1 if asked.several else 0.8
        return replace(candidate, score=max([candidate.score, *items]) * factor)

    def _similarities(
        self,
        query_vector: Vectors,
        found: list[tuple[int, AnswerUnit, str, frozenset[str], float]],
    ) -> list[float]:
        """Dense similarity for the most promising units (bounded: embedding a unit costs
        milliseconds); the others get the floor."""
        order = sorted(range(len(found)), key=lambda i: -found[i][4] / (1 + 0.15 * found[i][0]))
        chosen = order[: self.max_embedded_sentences]
        similarity = [self.judge.dense_floor] * len(found)
        if chosen:
            vectors = self.embedder.embed_passages([found[i][2] for i in chosen])
            for i, value in zip(chosen, vectors @ query_vector, strict=True):
                similarity[i] = float(value)
        return similarity

    def _compose(
        self,
        question: str,
        language: Language,
        hits: Sequence[SearchHit],
        chosen: list[_Candidate],
        confidence: float,
        signals: dict[str, float],
    ) -> Answer:
        """Sources in the order they were chosen (the best first), each source's quotes in
        the note's order; a quote is a span of the note, never rewritten."""
        spans: dict[int, set[tuple[int, int]]] = {}
        for candidate in chosen:
            spans.setdefault(candidate.hit_index, set()).update(candidate.unit.spans)
        citations: list[Citation] = []
        parts = []
        for hit_index, hit_spans in spans.items():
            hit = hits[hit_index]
            citation = Citation(n=len(citations) + 1, hit=hit)
            citations.append(citation)
            quoted = []
            for start, end in _outermost(hit_spans):
                text = quote_text(hit.text[start:end])
                offset = hit.text.index(text, start)
                citation.quotes.append(text)
                citation.quote_lines.append(_quote_lines(hit, offset, offset + len(text)))
                quoted.append(" ".join(line.strip() for line in text.split("\n")))
            parts.append(" ".join(quoted) + f" [{citation.n}]")
        text = " ".join(parts)  # "…显存。 [1] activations…": the marker stays readable
        return Answer(
            question=question,
            text=text,
            found=True,
            language=language,
            citations=citations,
            confidence=round(confidence, 4),
            signals={name: round(value, 4) for name, value in signals.items()},
        )

    def _refused_by_rule(
        self, question: str, language: Language, hits: Sequence[SearchHit], rule: str
    ) -> Answer:
        """Refused by a name rule (`names`: "unknown_name") or because the answer states
        nothing of the kind asked for (`expected`: "unanswered_kind"), before the judge
        weighs anything."""
        signals = {**dict.fromkeys(SIGNALS, 0.0), rule: 1.0}
        return self._not_found(question, language, hits, 0.0, signals)

    def _not_found(
        self,
        question: str,
        language: Language,
        hits: Sequence[SearchHit],
        confidence: float,
        signals: dict[str, float],
    ) -> Answer:
        nearest = [Citation(n=i + 1, hit=hit) for i, hit in enumerate(hits[:3])]
        return Answer(
            question=question,
            text=NOT_FOUND[language],
            found=False,
            language=language,
            citations=nearest,
            confidence=round(confidence, 4),
            signals={name: round(value, 4) for name, value in signals.items()},
        )


class _Composer:
    """Picks the units of one answer around the best one (see `ExtractiveAnswerer`)."""

    def __init__(
        self,
        answerer: ExtractiveAnswerer,
        asked: _Question,
        candidates: list[_Candidate],
        idf: dict[str, float],
    ) -> None:
        self.answerer = answerer
        self.asked = asked
        self.candidates = candidates
        self.idf = idf
        self.chosen: list[_Candidate] = []

    def compose(self, best: _Candidate) -> list[_Candidate]:
        self.chosen = [best]
        whole = self._whole_list_of(best)
        if whole is not None:
            self.chosen = []
            if not self._add(whole, stretch=2.0):
                self.chosen = [best]
        if best.unit.conclusion:
            self._add(self._reason(best))
        self._follow(best)
        for part in self.asked.parts:
            if not any(self._covers(c, part) for c in self.chosen):
                covering = [c for c in self.candidates if self._covers(c, part)]
                if covering and self._add(max(covering, key=lambda c: c.score)):
                    self._follow(self.chosen[-1])
        for candidate in sorted(self.candidates, key=lambda c: -c.score):
            if candidate.score < 0.6 * best.score or len(self.chosen) >= self.answerer.max_units:
                break
            if candidate.unit.kind == "list" and not self.asked.several:
                continue
            whole = self._whole_list_of(candidate)
            if whole is None or not self._add(whole, stretch=2.0):
                self._add(candidate)
        return self.chosen

    def _whole_list_of(self, item: _Candidate) -> _Candidate | None:
        """The whole list an item belongs to, when the question is about what the lead-in
        says ("召回不到的时候怎么排查" and "召回不到：" above three steps), not about
        the item itself."""
        if item.unit.kind != "list_item" or len(item.unit.spans) < 2:
            return None
        lists = [
            c
            for c in self.candidates
            if c.hit_index == item.hit_index
            and c.unit.kind == "list"
            and c.unit.main == item.unit.spans[0]
            and item.unit.main in c.unit.spans
        ]
        if not lists:
            return None
        lead_in = normalize(lists[0].text.split("\n")[0])
        own = normalize(item.text.split("\n")[-1])
        if self._matched(lead_in) < max(self._matched(own), 1e-9):
            return None
        return lists[0]

    def _matched(self, text: str) -> float:
        tokens = frozenset(analyze(text))
        return sum(
            self.idf.get(t, 0.0)
            for t in self.asked.terms
            if _matches(t, self.asked.variants.get(t, ()), tokens, text)
        )

    def _add(self, candidate: _Candidate | None, stretch: float = 1.0) -> bool:
        """Add a unit if it brings something new and the answer stays within budget
        (`stretch` times it: a whole list a sentence introduces may run longer)."""
        if candidate is None or len(self.chosen) >= self.answerer.max_units:
            return False
        spans = {s for c in self.chosen for s in c.unit.spans}
        if set(candidate.unit.spans) <= spans:
            return False
        length = sum(display_length(c.text) for c in self.chosen)
        if length + display_length(candidate.text) > stretch * self.answerer.budget:
            return False
        self.chosen.append(candidate)
        return True

    def _follow(self, candidate: _Candidate) -> None:
        """A clause ending in "；" continues in the next one; a sentence ending in "："
        introduces what follows (the whole list when it is short, else the next unit)."""
        current = candidate
        for _ in range(2):
            if not (current.unit.open_clause or current.unit.introduces):
                return
            following = self._after(current)
            if current.unit.introduces:
                whole = [
                    c
                    for c in following
                    if c.unit.kind == "list" and c.unit.main == current.unit.main
                ]
                if whole and self._add(whole[0], stretch=2.0):
                    return
                following = [c for c in following if c.unit.kind != "list"]
            if not following or not self._add(following[0]):
                return
            current = following[0]

    def _after(self, candidate: _Candidate) -> list[_Candidate]:
        end = candidate.unit.main[1]
        return sorted(
            (
                c
                for c in self.candidates
                if c.hit_index == candidate.hit_index
                and (
                    c.unit.position >= end
                    or (c.unit.kind == "list" and c.unit.main == candidate.unit.main)
                )
            ),
            key=lambda c: (c.unit.position, c.unit.kind != "list"),
        )

    def _reason(self, conclusion: _Candidate) -> _Candidate | None:
        """The earlier unit of the same source that shares most (idf-weighted) terms with a
        "所以/因此/so" conclusion: the reason it draws on."""
        best: tuple[float, _Candidate] | None = None
        earlier = [
            c
            for c in self.candidates
            if c.hit_index == conclusion.hit_index
            and c.unit.position < conclusion.unit.position
            and c.unit.kind != "list"
        ]
        for distance, candidate in enumerate(sorted(earlier, key=lambda c: -c.unit.position)):
            shared = sum(self.idf.get(t, 1.0) for t in candidate.tokens & conclusion.tokens)
            value = shared / (1.0 + 0.2 * distance)
            if shared > 0 and (best is None or value > best[0]):
                best = (value, candidate)
        return best[1] if best else None

    def _covers(self, candidate: _Candidate, part: list[str]) -> bool:
        return all(
            _matches(t, self.asked.variants.get(t, ()), candidate.tokens, candidate.text)
            for t in part
        )


def _understand(question: str, hits: Sequence[SearchHit]) -> _Question:
    normalized = normalize(question)
    language: Language = "zh" if is_chinese(normalized) else "en"
    tokens = analyze(normalized)
    frame = _frame_terms()
    terms = [t for t in dict.fromkeys(tokens) if t not in frame] or list(dict.fromkeys(tokens))
    evidence = normalize(" ".join(hit.text for hit in hits))
    # a term is also looked for in the other language when the evidence is written in it
    # (a Chinese note full of English terms is both); the dictionary loads on first need
    wanted = {"zh": bool(_CJK.search(evidence)), "en": bool(_LATIN_WORD.search(evidence))}
    phrases = phrase_variants(tokens) if wanted["zh"] else {}
    variants: dict[str, tuple[str, ...]] = {}
    for term in terms:
        found = greek_variants(term) or _COMPARED.get(term, ())
        other = "en" if _CJK.search(term) else "zh"
        if not found and wanted[other] and (dictionary := glossary()) is not None:
            found = tuple(dict.fromkeys(phrases.get(term, ()) + dictionary.variants(term)))
        if found:
            variants[term] = found
    return _Question(
        text=normalized,
        language=language,
        terms=terms,
        variants=variants,
        parts=_parts(normalized),
        several=bool(_SEVERAL.search(normalized)) or len(_parts(normalized)) > 1,
        subject=_subject(normalized),
        why=bool(_WHY.search(normalized)),
        about_code=bool(_ABOUT_CODE.search(normalized)),
    )


@cache
def _frame_terms() -> frozenset[str]:
    """`_QUESTION_FRAME` as the analyser writes it ("many" → mani, "what's" → s)."""
    return frozenset(t for word in _QUESTION_FRAME.split() for t in analyze(word))


def _said(hits: Sequence[SearchHit], chosen: Sequence[_Candidate]) -> str:
    """What an answer names: its units, their sections and code blocks' captions, their
    chunks' headings and titles."""
    return " ".join(f"{c.text} {_read_under(hits, c)}" for c in chosen)


def _pieces(hits: Sequence[SearchHit], chosen: Sequence[_Candidate]) -> list[str]:
    """Each span the answer quotes (a line of a command, a list item with its continuation
    lines), with what its unit reads under."""
    return [
        f"{normalize(hits[c.hit_index].text[start:end])} {_read_under(hits, c)}"
        for c in chosen
        for start, end in c.unit.spans
    ]


def _read_under(hits: Sequence[SearchHit], candidate: _Candidate) -> str:
    """What a unit reads under: its section, its code block's caption, its chunk's
    headings and its note's title."""
    hit = hits[candidate.hit_index]
    unit = candidate.unit
    return f"{unit.section} {unit.caption} {hit.title} " + " ".join(hit.heading_path)


def _same_note(
    hits: Sequence[SearchHit], chosen: Sequence[_Candidate], best: _Candidate
) -> list[_Candidate]:
    """The chosen units quoted from the note the best one comes from."""
    return [c for c in chosen if hits[c.hit_index].doc_id == hits[best.hit_index].doc_id]


def _subject(question: str) -> str:
    """The first word of what a definition question asks about ("IVF index" → "ivf")."""
    match = _DEFINITION.match(question)
    if not match:
        return ""
    subject = next(g for g in match.groups() if g)
    words = subject.split()
    return words[0].lower() if words else ""


def _parts(question: str) -> list[list[str]]:
    """The analysed terms of each enumerated part ("Q K V 分别是什么" → [q], [k], [v])."""
    parts: list[list[str]] = []
    groups: list[list[str]] = []
    for pattern in (_PARTS, _LETTER_PARTS):
        for match in pattern.finditer(question):
            pieces = re.split(_JOINER if pattern is _PARTS else r"\s+", match.group(0))
            groups.append([p for p in pieces if p and p.lower() not in _CONNECTIVES])
    # Chinese: the words on either side of 、/和/与 (as jieba segments them)
    words = [w for w in rjieba.cut(question) if w.strip()]
    joined = [i for i, w in enumerate(words) if w in _CN_JOINERS and 0 < i < len(words) - 1]
    if joined:
        groups.append([words[j] for i in joined for j in (i - 1, i + 1) if _CJK.search(words[j])])
    for group in groups:
        if len(group) < 2:
            continue
        for word in group:
            terms = analyze(word) or [word.lower()]
            if terms not in parts:
                parts.append(terms)
    return parts if len(parts) > 1 else []


def _defines(unit: AnswerUnit, text: str, subject: str) -> bool:
    """Whether a unit starts with the subject (or is the first line under a heading that
    does), the way a definition does."""
    if unit.kind not in ("sentence", "heading_line", "key_value", "list_item"):
        return False
    if unit.kind == "list_item" and len(unit.spans) > 1:
        text = text.split("\n")[-1]
    main = quote_text(text).lower()
    return main.startswith(subject) or unit.heading.lower().startswith(subject)


def _evidence_by_hit(
    hits: Sequence[SearchHit], candidates: Sequence[_Candidate]
) -> dict[int, tuple[frozenset[str], str]]:
    """What each hit says, as the answer could quote it: its title and headings and the
    text of its units (an empty bullet or an open to-do is not evidence of anything)."""
    found: dict[int, tuple[set[str], list[str]]] = {}
    for candidate in candidates:
        tokens, texts = found.setdefault(candidate.hit_index, (set(), []))
        tokens.update(candidate.tokens)
        texts.append(candidate.text)
    evidence = {}
    for index, (tokens, texts) in found.items():
        hit = hits[index]
        context = normalize(" ".join([hit.title, *hit.heading_path]))
        evidence[index] = (frozenset(tokens | set(analyze(context))), " ".join([context, *texts]))
    return evidence


def _rarest_missing(
    asked: _Question,
    weights: list[float],
    evidence: Sequence[tuple[frozenset[str], str] | None],
) -> float:
    """The idf of the rarest question term found in none of `evidence`; an ordinary
    dictionary word ("usually", 通常) counts a quarter of a name (Adafactor, GPTQ) unless it
    is an English word in a Chinese question ("interleaved" there is a term), and a
    compound whose own words are question terms is judged by them (`_judged_by_parts`)."""
    dictionary = glossary()
    present = [e for e in evidence if e is not None]
    missing = [
        (t, w)
        for t, w in zip(asked.terms, weights, strict=True)
        if not any(_matches(t, asked.variants.get(t, ()), tokens, text) for tokens, text in present)
    ]

    def ordinary(term: str) -> bool:
        # a latin word inside a Chinese question is a term of art ("interleaved")
        code_switched = asked.language == "zh" and not _CJK.search(term)
        return bool(dictionary and dictionary.is_common_word(term)) and not code_switched

    return max(
        (
            w * (0.25 if ordinary(t) else 1.0)
            for t, w in missing
            if not _judged_by_parts(t, asked.terms)
        ),
        default=0.0,
    )


def _judged_by_parts(term: str, terms: Sequence[str]) -> bool:
    """Whether a compound ("768-dim", "per-sample", "intra_op_num_threads") is made of words
    that are question terms themselves: notes write it apart or inside a longer name
    ("so.intra_op_num_threads"), so its own absence says nothing its words do not."""
    if not _COMPOUND.search(term) or _NUMBER.fullmatch(term) or names.VERSIONED.fullmatch(term):
        return False  # a version ("1.21", "llama-3") is not its numbers and name apart
    parts = analyze(_COMPOUND.sub(" ", term))
    return bool(parts) and all(p in terms for p in parts)


def _matches(term: str, variants: tuple[str, ...], tokens: frozenset[str], text: str) -> bool:
    if term in tokens:
        return True
    # Chinese words and Greek letters are looked up in the text (segmentation cuts "β2")
    return any(v in tokens or (not v.isascii() and v in text) for v in variants)


def _language(text: str) -> Language:
    """Chinese when it has at least as many Chinese characters as latin words (Chinese
    notes are full of English terms)."""
    return "zh" if len(_CJK.findall(text)) >= len(_LATIN_WORD.findall(text)) else "en"


def _passage_language(hit: SearchHit) -> Language:
    """The language a passage is written in: of its title, headings and prose, not of its
    code (a Chinese note's Python snippet is still a Chinese note)."""
    prose: list[str] = []
    in_code = False
    for line in hit.text.split("\n"):
        if _FENCE_LINE.match(line):
            in_code = not in_code
        elif not in_code:
            prose.append(line)
    return _language(" ".join([hit.title, *hit.heading_path, *prose]))


def _outermost(spans: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans in text order without those inside another one."""
    ordered = sorted(spans, key=lambda s: (s[0], -s[1]))
    kept: list[tuple[int, int]] = []
    for start, end in ordered:
        if kept and start >= kept[-1][0] and end <= kept[-1][1]:
            continue
        kept.append((start, end))
    return kept


def _quote_lines(hit: SearchHit, start: int, end: int) -> tuple[int, int]:
    if hit.kind == "html":  # extracted lines were mapped to tags' lines: cite the chunk
        return hit.line_start, hit.line_end
    first = hit.line_start + hit.text.count("\n", 0, start)
    last = hit.line_start + hit.text.count("\n", 0, max(start, end - 1))
    return min(first, hit.line_end), min(last, hit.line_end)
