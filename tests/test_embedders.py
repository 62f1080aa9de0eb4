"""The vector cache in front of the real embedding model, and the answer slots."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sourcebook import KnowledgeBase
from sourcebook.index.embedders import CachedEmbedder, Embedder, Vectors, get_embedder
from sourcebook.kb import ANSWER_NICENESS


class Counting:
    """The real default model, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.passages: list[str] = []
        self.queries: list[str] = []

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        self.passages.extend(texts)
        return self.inner.embed_passages(texts)

    def embed_query(self, text: str) -> Vectors:
        self.queries.append(text)
        return self.inner.embed_query(text)


@pytest.fixture(scope="module")
def e5() -> Embedder:
    return get_embedder("multilingual-e5-small")


def test_cached_vectors_equal_the_models_and_are_computed_once(e5: Embedder) -> None:
    counting = Counting(e5)
    cached = CachedEmbedder(counting, queries=4, passages=4)
    sentences = ["LoRA 只训练低秩矩阵。", "Adam keeps two moments.", "混合 mixed 句子。"]
    first = cached.embed_passages(sentences)
    np.testing.assert_allclose(first, e5.embed_passages(sentences), atol=1e-6)
    # a repeat and a new sentence: only the new one reaches the model, rows stay in order
    second = cached.embed_passages([sentences[2], "量化把权重存成 4 位。", sentences[0]])
    assert counting.passages == [*sentences, "量化把权重存成 4 位。"]
    np.testing.assert_allclose(second[0], first[2])
    np.testing.assert_allclose(second[2], first[0])

    question = "LoRA 为什么能减少显存？"
    np.testing.assert_allclose(cached.embed_query(question), e5.embed_query(question), atol=1e-6)
    cached.embed_query(question)
    assert counting.queries == [question]
    # queries and passages are different vectors ("query: " / "passage: " prefixes)
    assert not np.allclose(cached.embed_query(sentences[0]), first[0])


def test_least_recently_used_vectors_are_dropped_at_capacity(e5: Embedder) -> None:
    counting = Counting(e5)
    cached = CachedEmbedder(counting, queries=2, passages=2)
    cached.embed_passages(["one 一", "two 二"])
    cached.embed_passages(["one 一"])  # now "two 二" is the least recently used
    cached.embed_passages(["three 三"])
    cached.embed_passages(["one 一", "two 二"])
    assert counting.passages == ["one 一", "two 二", "three 三", "two 二"]


def test_a_knowledge_base_reuses_question_and_sentence_vectors(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    counting = Counting(kb.embedder)
    with KnowledgeBase(kb.path, kb.settings, embedder=counting) as counted:
        first = counted.ask("LoRA 为什么能减少显存？")
        embedded = len(counting.passages)
        # the question is embedded as matched: NFKC ("？" → "?")
        assert first.found and counting.queries == ["LoRA 为什么能减少显存?"]
        assert 0 < embedded <= kb.settings.answer_embedded_sentences
        again = counted.ask("LoRA 为什么能减少显存？")
        assert again.text == first.text
        assert len(counting.passages) == embedded and len(counting.queries) == 1


class Slow(Counting):
    """Embeds answer sentences slowly; records how many answers embed at once, and the
    nice value of the threads they run in."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.running = 0
        self.most_at_once = 0
        self.niceness: set[int] = set()
        self.searched_meanwhile = threading.Event()
        self._lock = threading.Lock()

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.niceness.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        time.sleep(0.5)
        with self._lock:
            self.running -= 1
        return super().embed_passages(texts)


def test_answers_take_turns_at_lower_priority_while_searches_go_ahead(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    slow = Slow(kb.embedder)
    settings = kb.settings.model_copy(update={"answer_workers": 1})
    questions = ["What is RMSNorm?", "LoRA 的 rank r 一般取多少？", "Adam 的默认 β2 是多少？"]
    with KnowledgeBase(kb.path, settings, embedder=slow) as shared:
        answers: list[bool] = []
        askers = [
            threading.Thread(target=lambda q=q: answers.append(shared.ask(q).found))
            for q in questions
        ]
        for asker in askers:
            asker.start()
        time.sleep(0.2)  # the answers are embedding (or waiting for their turn)
        hits = shared.search("RMSNorm 和 LayerNorm 的区别")
        answered_before_the_search = len(answers)
        for asker in askers:
            asker.join(60)
    assert hits and len(answers) == 3
    assert slow.most_at_once == 1  # one answer embedding at a time
    if sys.platform == "linux":  # and at a lower CPU priority than the searches
        assert slow.niceness == {os.getpriority(os.PRIO_PROCESS, 0) + ANSWER_NICENESS}
    # the search did not queue behind the answers (taking turns, they need 1.5 s)
    assert answered_before_the_search < 3
