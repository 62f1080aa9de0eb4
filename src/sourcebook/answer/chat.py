"""Multi-turn chat over a knowledge base: follow-up questions are rewritten into
standalone questions before retrieval, because "那它的缺点呢？" alone retrieves nothing.

With a language model configured (generate mode) the model rewrites the follow-up; the
rule-based condenser is the fallback and the default. It finds the previous question's
subject (the words it shares with the title and headings of the passage that answered it,
else its rarest words) and carries it into the follow-up: a pronoun is replaced by it
("What about its drawbacks?" → "What about gradient checkpointing's drawbacks?"); an
elliptical "那 X 呢？" / "What about X?" asks the previous question again with X in the
place of a word of the same kind ("β2" → "那 β1 呢？", "prefetch_factor" → "num_workers"),
or about a new name X ("那 QLoRA 呢？"), or about aspect X of the subject ("那缺点呢？");
a very short question gets the subject prepended.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol

import rjieba

from sourcebook.answer.generation import IdfLookup, final_answer, language_of
from sourcebook.answer.llm import LLM, Message
from sourcebook.index.analyzer import analyze
from sourcebook.kb import KnowledgeBase
from sourcebook.models import AnswerEvent, AnswerMode, ChatTurn, Language
from sourcebook.retrieve.rerank import idf_weights
from sourcebook.store.embedded import Filters

_ZH_PRONOUNS = {"它": "", "它们": "", "其": "的"}  # pronoun -> what follows the subject
_EN_PRONOUN = re.compile(r"\b(it|they|them|its|their)\b", re.IGNORECASE)
_ZH_ELLIPSIS = re.compile(r"^(?:那么|那)?\s*(?P<rest>.+?)\s*呢\s*[？?]?$")
_EN_ELLIPSIS = re.compile(r"^(?:and\s+)?(?:what|how)\s+about\s+(?P<rest>.+?)\s*\??$", re.I)
_LEADING_CONJUNCTION = re.compile(r"^(?:and|so|then|那么|那)\s*", re.IGNORECASE)
_NAME = re.compile(r"[A-Z0-9]|[A-Za-z][._\-][A-Za-z0-9]")
SHORT_QUESTION_TERMS = 2  # a question this short leans on the previous one's subject
ELLIPSIS_TERMS = 3  # "那 X 呢？" with a longer X is a question of its own

_CONDENSE: dict[Language, str] = {
    "en": "Rewrite the user's last question so that it can be understood without the "
    "conversation. Reply with the rewritten question only.",
    "zh": "把用户的最后一个问题改写成不依赖上下文也能看懂的独立问题。只回复改写后的问题。",
}


class Condenser(Protocol):
    def condense(self, question: str, history: Sequence[ChatTurn]) -> str:
        """A question that can be searched without the conversation."""
        ...


class RuleCondenser:
    """Carries the previous question's subject into a follow-up (see module doc)."""

    def __init__(self, idf: IdfLookup) -> None:
        self.idf = idf

    def condense(self, question: str, history: Sequence[ChatTurn]) -> str:
        question = question.strip()
        if not history:
            return question
        previous = history[-1]
        subject = self.subject(history)
        if not subject:
            return question
        chinese = language_of(question) == "zh"
        ellipsis = (_ZH_ELLIPSIS if chinese else _EN_ELLIPSIS).match(question)
        if ellipsis and len(analyze(ellipsis.group("rest"))) <= ELLIPSIS_TERMS:
            rest = ellipsis.group("rest")
            if _has_pronoun(rest):
                topic = _replace_pronouns(rest, subject)
                return f"{topic}是什么？" if chinese else f"What about {topic}?"
            slot = _slot_like(rest, previous.standalone, subject)
            if slot:  # another value of the same kind ("Adam 的默认 β2…" → "那 β1 呢？")
                return previous.standalone.replace(slot, rest, 1)
            if _NAME.search(rest) and not set(analyze(rest)) & set(analyze(subject)):
                # a new name: the same question about it ("那 QLoRA 呢？")
                return previous.standalone.replace(subject, rest, 1)
            # an aspect of the same subject ("那缺点呢？")
            return f"{subject}的{rest}是什么？" if chinese else f"What about {rest} of {subject}?"
        if _has_pronoun(question):
            return _replace_pronouns(question, subject)
        terms = set(analyze(question))
        if len(terms) <= SHORT_QUESTION_TERMS and not terms & set(analyze(subject)):
            return f"{subject} {_LEADING_CONJUNCTION.sub('', question)}"
        return question

    def subject(self, history: Sequence[ChatTurn]) -> str:
        """What the conversation is about: the subject of an earlier turn for as long as
        the standalone questions keep mentioning it, else that of the last turn."""
        subject = ""
        for turn in history:
            if not subject or not set(analyze(subject)) <= set(analyze(turn.standalone)):
                subject = self.turn_subject(turn)
        return subject

    def turn_subject(self, turn: ChatTurn) -> str:
        """What one turn's standalone question is about: the first run of its words that
        the title and headings of the passage that answered it (or came nearest) share,
        else its rarest words."""
        pieces = _pieces(turn.standalone)
        content = [i for i, (_, _, piece) in enumerate(pieces) if analyze(piece)]
        chosen: list[int] = []
        if turn.answer.citations:
            hit = turn.answer.citations[0].hit
            topic = set(analyze(" ".join([hit.title, *hit.heading_path])))
            chosen = [i for i in content if set(analyze(pieces[i][2])) & topic]
        if not chosen and content:
            idf = self.idf([t for i in content for t in analyze(pieces[i][2])])
            rarity = {i: max(idf.get(t, 0.0) for t in analyze(pieces[i][2])) for i in content}
            best = max(rarity.values())
            chosen = [i for i in content if rarity[i] >= 0.6 * best]
        if not chosen:
            return ""
        run = [chosen[0]]
        for i in chosen[1:]:
            between = pieces[run[-1] + 1 : i]
            if any(piece.strip() for _, _, piece in between):
                break
            run.append(i)
        return turn.standalone[pieces[run[0]][0] : pieces[run[-1]][1]]


class LLMCondenser:
    """Asks the language model to rewrite the follow-up; falls back to `fallback` when
    the rewrite is unusable (empty, in another language, or sharing no word with the
    conversation: small models sometimes answer instead of rewriting)."""

    def __init__(self, llm: LLM, fallback: Condenser, max_tokens: int = 64) -> None:
        self.llm = llm
        self.fallback = fallback
        self.max_tokens = max_tokens

    def condense(self, question: str, history: Sequence[ChatTurn]) -> str:
        question = question.strip()
        if not history:
            return question
        language = language_of(question)
        conversation = "\n".join(
            f"Q: {turn.standalone}\nA: {turn.answer.text}" for turn in history[-3:]
        )
        messages: list[Message] = [
            {"role": "system", "content": _CONDENSE[language]},
            {"role": "user", "content": f"{conversation}\n\nQ: {question}"},
        ]
        reply = self.llm.complete(messages, self.max_tokens, 0.0)
        rewrite = next((line.strip() for line in reply.splitlines() if line.strip()), "")
        rewrite = re.sub(r"^(?:Q|问题|Question)\s*[:：]\s*", "", rewrite).strip("\"'“”")
        known = set(analyze(question)) | set(analyze(history[-1].standalone))
        if not rewrite or language_of(rewrite) != language or not set(analyze(rewrite)) & known:
            return self.fallback.condense(question, history)
        return rewrite


class ChatSession:
    """A conversation with a knowledge base: keeps the turns, condenses follow-ups,
    answers through the facade (so answers are the same as `ask`'s, cached the same)."""

    def __init__(
        self,
        kb: KnowledgeBase,
        mode: AnswerMode | None = None,
        filters: Filters | None = None,
        condenser: Condenser | None = None,
    ) -> None:
        self.kb = kb
        self.mode = mode or kb.settings.answer_mode
        self.filters = filters
        self.history: list[ChatTurn] = []
        if condenser is None:
            rules = RuleCondenser(lambda terms: idf_weights(*kb.store.keyword_statistics(terms)))
            condenser = LLMCondenser(kb.llm, rules) if self.mode == "generate" else rules
        self.condenser = condenser

    def standalone(self, question: str) -> str:
        """The question to search for, given the conversation so far."""
        if not question.strip():
            raise ValueError("the question is empty")
        return self.condenser.condense(question, self.history)

    def ask_stream(self, question: str, standalone: str | None = None) -> Iterator[AnswerEvent]:
        """Answer events for `question` (condensed unless `standalone` is given); the
        turn is remembered when the answer arrives."""
        searched = standalone or self.standalone(question)
        for event in self.kb.ask_stream(searched, self.filters, self.mode):
            if event.answer is not None:
                self.history.append(
                    ChatTurn(question=question, standalone=searched, answer=event.answer)
                )
            yield event

    def ask(self, question: str) -> ChatTurn:
        final_answer(self.ask_stream(question))
        return self.history[-1]


def _pieces(text: str) -> list[tuple[int, int, str]]:
    """jieba's segmentation of `text` (Chinese words, latin words, spaces, punctuation)
    with character offsets."""
    pieces = []
    offset = 0
    for piece in rjieba.cut(text):
        pieces.append((offset, offset + len(piece), piece))
        offset += len(piece)
    return pieces


_TOKEN = re.compile(r"[A-Za-z\u0370-\u03ff][A-Za-z0-9\u0370-\u03ff_.\-]*")


def _kind(token: str) -> str | None:
    """Identifiers (num_workers) and versioned names (β2, GPT-4, bf16) are kinds of
    their own; ordinary words have none."""
    token = token.rstrip(".-")
    if re.search(r"[A-Za-z0-9]_[A-Za-z0-9]", token):
        return "identifier"
    if re.fullmatch(r"[^\W\d_]+[-.]?\d+(?:\.\d+)?", token):
        return "versioned"
    return None


def _slot_like(value: str, question: str, subject: str) -> str | None:
    """A word of `question`, outside its subject, of the same kind as `value`."""
    kind = _kind(value)
    if kind is None:
        return None
    for match in _TOKEN.finditer(question):
        token = match.group(0).rstrip(".-")
        if _kind(token) == kind and token != value and token not in subject:
            return token
    return None


def _has_pronoun(text: str) -> bool:
    return bool(_EN_PRONOUN.search(text)) or any(p in _ZH_PRONOUNS for _, _, p in _pieces(text))


def _replace_pronouns(text: str, subject: str) -> str:
    def english(match: re.Match[str]) -> str:
        return f"{subject}'s" if match.group(1).lower() in ("its", "their") else subject

    text = _EN_PRONOUN.sub(english, text)
    return "".join(
        subject + _ZH_PRONOUNS[piece] if piece in _ZH_PRONOUNS else piece
        for _, _, piece in _pieces(text)
    )
