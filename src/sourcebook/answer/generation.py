"""Generated answers that stay grounded: prompt with numbered evidence, stream the reply,
then verify every sentence against the sources it cites before anyone relies on it.

The model sees only the best evidence that fits a token budget, numbered [1]..[k], and is
told to cite [n] after each sentence and to say "not found" when the evidence does not
answer. Whatever it writes is then checked: citations must name listed sources, and each
sentence must be supported by the evidence it cites (its idf-weighted terms and numbers
are found there, or it is close in meaning and shares enough terms). Unsupported
sentences are removed and listed; when nothing verifiable remains, the extractive answer
is returned instead, with a notice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sourcebook.answer.extractive import NOT_FOUND
from sourcebook.answer.llm import LLM, Message
from sourcebook.index.analyzer import analyze
from sourcebook.index.embedders import Embedder
from sourcebook.models import (
    Answer,
    AnswerEvent,
    Citation,
    Language,
    SearchHit,
    SentenceSupport,
    Verification,
)
from sourcebook.text import is_chinese, normalize, sentence_spans

# Part of the answer cache key: a changed prompt must not reuse old answers.
PROMPT_VERSION = 1

# Support thresholds, measured on the sample notes (tests/test_generation.py): sentences
# copied or reworded from their source cover 0.5-1.0 of their idf-weighted terms, a
# claim the source does not make 0-0.35 even on the same topic. Cosine scales differ by
# embedding model, so closeness is compared after the model's rescaling (calibration.py:
# 0 = unrelated, 1 = as close as passages get); 0.6 is a cosine of ~0.85 for e5-small,
# whose unrelated sentences score 0.70-0.82 and reworded ones 0.85-0.92 here.
LEXICAL_SUPPORT = 0.6  # enough shared terms on their own
PARAPHRASE_LEXICAL = 0.3  # fewer shared terms, but close in meaning:
EMBEDDING_SUPPORT = 0.6  # rescaled cosine of the sentence and a cited chunk

IdfLookup = Callable[[Sequence[str]], dict[str, float]]
Rescale = Callable[[float], float]  # an embedding model's cosine → 0..1

_MARKER = re.compile(r"[\[【]\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*[\]】]")
_LEADING_MARKERS = re.compile(r"^(?:\s*[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】])+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NOT_FOUND_PHRASES = (
    "not found in the knowledge base",
    "the knowledge base does not",
    "知识库中没有找到",
    "知识库中没有相关",
)

INSTRUCTIONS: dict[Language, str] = {
    "en": (
        "You answer questions using only the numbered evidence from the user's notes.\n"
        "- Use only facts stated in the evidence; add nothing from your own knowledge.\n"
        "- After every sentence, write the number of the evidence it comes from in "
        "square brackets, like [1].\n"
        f"- If the evidence does not answer the question, reply only: {NOT_FOUND['en']}\n"
        "- Answer in English, briefly."
    ),
    "zh": (
        "你只根据用户笔记中编号的资料回答问题。\n"
        "- 只使用资料中写明的事实，不要加入资料以外的知识。\n"
        "- 每句话后面用方括号写出它所依据的资料编号，例如 [1]。\n"
        f"- 如果资料不能回答这个问题，只回答：{NOT_FOUND['zh']}\n"
        "- 用中文简要回答。"
    ),
}
_EVIDENCE_HEADER: dict[Language, tuple[str, str]] = {
    "en": ("Evidence:", "Question:"),
    "zh": ("资料：", "问题："),
}
_FELL_BACK: dict[Language, str] = {
    "en": "The generated answer could not be verified against the sources, so the "
    "extractive answer is shown instead.",
    "zh": "生成的回答未能通过来源核对，改为显示摘录式回答。",
}
_REMOVED: dict[Language, str] = {
    "en": "Removed {count} sentence(s) that the cited sources do not support.",
    "zh": "删除了 {count} 句引用来源不支持的内容。",
}


def language_of(text: str) -> Language:
    return "zh" if is_chinese(text) else "en"


@dataclass(frozen=True)
class Evidence:
    """A numbered piece of evidence: whole leading sentences of a retrieved chunk."""

    n: int
    hit: SearchHit
    text: str  # hit.text[:len(text)], so offsets (and cited lines) are the chunk's

    @property
    def label(self) -> str:
        return source_label(self.hit)

    def render(self) -> str:
        return f"[{self.n}] {self.label}\n{self.text}"


def source_label(hit: SearchHit) -> str:
    """Title, heading path and file:lines: what the model needs to tell sources apart."""
    headings = " > ".join(hit.heading_path)
    where = f"{Path(hit.path).name}:{hit.line_start}-{hit.line_end}"
    if headings and headings != hit.title:
        return f"{hit.title} · {headings} ({where})"
    return f"{hit.title} ({where})"


def pack_evidence(
    hits: Sequence[SearchHit], budget: int, count_tokens: Callable[[str], int]
) -> list[Evidence]:
    """Best evidence first, within `budget` tokens of the model's tokenizer.

    A chunk that does not fit whole contributes its leading sentences that do (never half
    a sentence); a later, shorter chunk may still fit after one that did not.
    """
    packed: list[Evidence] = []
    remaining = budget
    for hit in hits:
        header = count_tokens(f"[{len(packed) + 1}] {source_label(hit)}\n") + 2
        spans = sentence_spans(hit.text)
        end = 0
        used = header
        for start, stop in spans:
            # separators between sentences cost about a token each
            cost = count_tokens(hit.text[start:stop]) + 1
            if used + cost > remaining:
                break
            used += cost
            end = stop
        if end == 0:
            continue
        packed.append(Evidence(len(packed) + 1, hit, hit.text[:end]))
        remaining -= used
    return packed


def build_messages(question: str, evidence: Sequence[Evidence]) -> list[Message]:
    language = language_of(question)
    evidence_title, question_title = _EVIDENCE_HEADER[language]
    sources = "\n\n".join(item.render() for item in evidence)
    return [
        {"role": "system", "content": INSTRUCTIONS[language]},
        {
            "role": "user",
            "content": f"{evidence_title}\n\n{sources}\n\n{question_title} {question}",
        },
    ]


@dataclass(frozen=True)
class CitedSentence:
    """A sentence of the model's reply, without its markers, and the numbers it cites."""

    text: str
    citations: tuple[int, ...]


def split_cited(reply: str) -> list[CitedSentence]:
    """Sentences of a reply with the [n] markers that belong to each.

    A marker written after the sentence's full stop ("… memory. [1] Next …") belongs to the
    sentence before it, not to the one it happens to precede.
    """
    text = normalize(reply)
    text = re.sub(r"([.!?。！？])(?=[\[【]\s*\d)", r"\1 ", text)
    # A model does not wrap its lines: each line ends a sentence (unlike in Markdown notes).
    segments = [line[a:b] for line in text.split("\n") for a, b in sentence_spans(line)]
    sentences: list[tuple[str, list[int]]] = []
    for segment in segments:
        leading = _LEADING_MARKERS.match(segment)
        if leading and sentences:
            sentences[-1][1].extend(_numbers(leading.group(0)))
            segment = segment[leading.end() :]
        numbers = _numbers(segment)
        body = _clean(_MARKER.sub(" ", segment))
        if not any(c.isalnum() for c in body):
            if sentences:
                sentences[-1][1].extend(numbers)
            continue
        sentences.append((body, numbers))
    return [CitedSentence(body, tuple(dict.fromkeys(ns))) for body, ns in sentences]


def _numbers(segment: str) -> list[int]:
    return [int(n) for group in _MARKER.findall(segment) for n in re.split(r"[,，、\s]+", group)]


def _clean(sentence: str) -> str:
    text = " ".join(sentence.split())
    text = re.sub(r"\s+([.,;:!?。，；：！？])", r"\1", text)
    return re.sub(r"^(?:[-*+]|\d+[.)])\s+", "", text)


def says_not_found(reply: str) -> bool:
    flat = " ".join(normalize(reply).casefold().split())
    return any(phrase in flat for phrase in _NOT_FOUND_PHRASES)


class Verifier:
    """Checks each sentence of a reply against the evidence it cites.

    Support is lexical and semantic, not logical: a sentence that reuses its source's
    words and numbers but reverses a causal claim can pass. What cannot pass is a
    sentence about something its sources do not mention, a number they do not contain,
    a missing citation, or a citation of a source that was never given.
    """

    def __init__(self, embedder: Embedder, idf: IdfLookup, rescale: Rescale) -> None:
        self.embedder = embedder
        self.idf = idf
        self.rescale = rescale

    def check(
        self, sentences: Sequence[CitedSentence], evidence: Sequence[Evidence]
    ) -> list[SentenceSupport]:
        by_number = {item.n: item for item in evidence}
        terms = [list(dict.fromkeys(analyze(s.text))) for s in sentences]
        idf = self.idf(sorted({t for ts in terms for t in ts}))
        cited = sorted({n for s in sentences for n in s.citations if n in by_number})
        evidence_terms = {n: set(analyze(_context(by_number[n]))) for n in cited}
        vectors = self.embedder.embed_passages([_context(by_number[n]) for n in cited])
        evidence_vectors = dict(zip(cited, vectors, strict=True))
        sentence_vectors = self.embedder.embed_passages([s.text for s in sentences])
        results = []
        seen: set[str] = set()
        for sentence, sentence_terms, vector in zip(
            sentences, terms, sentence_vectors, strict=True
        ):
            valid = [n for n in sentence.citations if n in by_number]
            support = SentenceSupport(
                text=sentence.text, citations=list(sentence.citations), supported=False
            )
            if not sentence.citations:
                support.reason = "cites no source"
            elif not valid:
                support.reason = "cites only sources that do not exist"
            else:
                present = set().union(*(evidence_terms[n] for n in valid))
                total = sum(idf.get(t, 0.0) for t in sentence_terms)
                found = sum(idf.get(t, 0.0) for t in sentence_terms if t in present)
                support.lexical = round(found / total, 4) if total else 0.0
                support.embedding = round(
                    max(float(np.dot(vector, evidence_vectors[n])) for n in valid), 4
                )
                support.reason = self._reason(sentence.text, support, valid, by_number)
                if support.reason is None and sentence.text in seen:
                    support.reason = "repeats an earlier sentence"
                support.supported = support.reason is None
            seen.add(sentence.text)
            results.append(support)
        return results

    def _reason(
        self, text: str, support: SentenceSupport, valid: list[int], by_number: dict[int, Evidence]
    ) -> str | None:
        cited = "".join(f"[{n}]" for n in valid)
        numbers = {m for n in valid for m in _NUMBER.findall(normalize(_context(by_number[n])))}
        missing = [n for n in dict.fromkeys(_NUMBER.findall(text)) if n not in numbers]
        if missing:  # a wrong number is the commonest invention, and cheap to catch
            return f"{', '.join(missing)} does not appear in {cited}"
        if support.lexical >= LEXICAL_SUPPORT:
            return None
        close = self.rescale(support.embedding) >= EMBEDDING_SUPPORT
        if support.lexical >= PARAPHRASE_LEXICAL and close:
            return None
        return f"not supported by {cited}"


def _context(item: Evidence) -> str:
    """What a sentence may draw on: the chunk's title, headings and text (not its file
    location, whose line numbers would excuse invented numbers)."""
    return "\n".join([item.hit.title, " > ".join(item.hit.heading_path), item.text])


class GroundedGenerator:
    """Streams a model's answer from packed evidence, then verifies it (see module doc)."""

    def __init__(
        self,
        llm: LLM,
        verifier: Verifier,
        context_tokens: int,
        max_tokens: int,
        temperature: float,
    ) -> None:
        self.llm = llm
        self.verifier = verifier
        self.context_tokens = context_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature

    def stream(
        self, question: str, hits: Sequence[SearchHit], fallback: Answer
    ) -> Iterator[AnswerEvent]:
        """Token events as the model writes, then one answer event.

        `fallback` is the extractive answer over the same hits: when it refuses, the
        evidence is too weak for any answer and the model is not asked.
        """
        if not fallback.found:
            yield _final(fallback.model_copy(update={"mode": "generate"}))
            return
        evidence = pack_evidence(hits, self.context_tokens, self.llm.count_tokens)
        pieces: list[str] = []
        for piece in self.llm.stream(
            build_messages(question, evidence), self.max_tokens, self.temperature
        ):
            pieces.append(piece)
            yield AnswerEvent(type="token", text=piece)
        yield _final(self.verify("".join(pieces), question, evidence, fallback))

    def verify(
        self, reply: str, question: str, evidence: Sequence[Evidence], fallback: Answer
    ) -> Answer:
        """The answer the reply supports: verified sentences with contiguous [n], a
        "not found" when the model said so, or the fallback with a notice."""
        language = language_of(question)
        sentences = split_cited(reply)
        checks = self.verifier.check(sentences, evidence) if sentences else []
        known = {item.n for item in evidence}
        invalid = sorted({n for s in sentences for n in s.citations if n not in known})
        verification = Verification(
            model=self.llm.name,
            draft=reply,
            sentences=checks,
            invalid_citations=invalid,
            removed=[c.text for c in checks if not c.supported],
        )
        kept = [c for c in checks if c.supported]
        if not kept and says_not_found(reply):
            return Answer(
                question=question,
                text=NOT_FOUND[language],
                mode="generate",
                found=False,
                language=language,
                citations=[Citation(n=i + 1, hit=item.hit) for i, item in enumerate(evidence[:3])],
                confidence=fallback.confidence,
                verification=verification,
            )
        if not kept:
            verification.fell_back = True
            verification.notice = _FELL_BACK[language]
            return fallback.model_copy(update={"mode": "generate", "verification": verification})
        if verification.removed:
            verification.notice = _REMOVED[language].format(count=len(verification.removed))
        text, citations = self._compose(kept, {item.n: item for item in evidence})
        return Answer(
            question=question,
            text=text,
            mode="generate",
            found=True,
            language=language,
            citations=citations,
            confidence=fallback.confidence,
            verification=verification,
        )

    def _compose(
        self, kept: Sequence[SentenceSupport], by_number: dict[int, Evidence]
    ) -> tuple[str, list[Citation]]:
        """Renumber the cited sources 1..k in order of first citation; each citation
        quotes the evidence sentence closest to the answer sentence that cites it."""
        renumber: dict[int, int] = {}
        citations: list[Citation] = []
        parts = []
        for support in kept:
            markers = []
            for n in dict.fromkeys(n for n in support.citations if n in by_number):
                if n not in renumber:
                    renumber[n] = len(renumber) + 1
                    citations.append(Citation(n=renumber[n], hit=by_number[n].hit))
                citation = citations[renumber[n] - 1]
                quote, lines = _closest_sentence(support.text, by_number[n])
                if quote not in citation.quotes:
                    citation.quotes.append(quote)
                    citation.quote_lines.append(lines)
                markers.append(f"[{renumber[n]}]")
            parts.append(f"{support.text} {''.join(markers)}")
        return " ".join(parts), citations


def _closest_sentence(sentence: str, item: Evidence) -> tuple[str, tuple[int, int]]:
    """The evidence sentence sharing most terms with `sentence`, and its lines."""
    terms = set(analyze(sentence))
    spans = sentence_spans(item.text) or [(0, len(item.text))]
    start, end = max(spans, key=lambda s: len(terms & set(analyze(item.text[s[0] : s[1]]))))
    hit = item.hit
    if hit.kind == "html":  # extracted lines map to tags' lines: cite the whole chunk
        return item.text[start:end], (hit.line_start, hit.line_end)
    first = hit.line_start + hit.text.count("\n", 0, start)
    last = hit.line_start + hit.text.count("\n", 0, end)
    return item.text[start:end], (min(first, hit.line_end), min(last, hit.line_end))


def _final(answer: Answer) -> AnswerEvent:
    return AnswerEvent(type="answer", answer=answer)


def final_answer(events: Iterator[AnswerEvent]) -> Answer:
    """The answer at the end of an event stream (consuming the tokens)."""
    for event in events:
        if event.answer is not None:
            return event.answer
    raise RuntimeError("the answer stream ended without an answer")
