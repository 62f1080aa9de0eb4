"""Multi-turn chat: follow-ups are rewritten into standalone questions (rule-based here,
without a language model) before retrieval, through the facade and the CLI."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.answer.chat import ChatSession
from sourcebook.surfaces.cli import app


@pytest.mark.parametrize(
    ("conversation", "expected"),
    [
        (["LoRA 为什么能减少显存？", "那它的缺点呢？"], "LoRA的缺点是什么？"),
        (["LoRA 为什么能减少显存？", "那 QLoRA 呢？"], "QLoRA 为什么能减少显存？"),
        (["Adam 的默认 β2 是多少？", "那 β1 呢？"], "Adam 的默认 β1 是多少？"),
        (["LoRA 的 rank r 一般取多少？", "其初始化方式是什么？"], "LoRA的初始化方式是什么？"),
        (
            ["Why does gradient checkpointing slow down training?", "What about its drawbacks?"],
            "What about gradient checkpointing's drawbacks?",
        ),
        (
            ["Why does gradient checkpointing slow down training?", "How is it used in PyTorch?"],
            "How is gradient checkpointing used in PyTorch?",
        ),
        (
            [
                "What is the default prefetch_factor of a PyTorch DataLoader?",
                "What about num_workers?",
            ],
            "What is the default num_workers of a PyTorch DataLoader?",
        ),
        (
            ["Why does gradient checkpointing slow down training?", "drawbacks?"],
            "gradient checkpointing drawbacks?",
        ),
        # a question that stands on its own is searched as it is
        (["LoRA 为什么能减少显存？", "Adam 的默认 β2 是多少？"], "Adam 的默认 β2 是多少？"),
        (
            ["What is BatchNorm?", "What is the default prefetch_factor of a PyTorch DataLoader?"],
            "What is the default prefetch_factor of a PyTorch DataLoader?",
        ),
    ],
)
def test_follow_ups_are_condensed_into_standalone_questions(
    notes_kb: KnowledgeBase, conversation: list[str], expected: str
) -> None:
    session = ChatSession(notes_kb)
    *earlier, follow_up = conversation
    for question in earlier:
        session.ask(question)
    turn = session.ask(follow_up)
    assert turn.question == follow_up
    assert turn.standalone == expected
    assert turn.answer.question == expected  # what was searched and answered


def test_the_subject_carries_over_several_follow_ups(notes_kb: KnowledgeBase) -> None:
    session = ChatSession(notes_kb)
    session.ask("Why does gradient checkpointing slow down training?")
    session.ask("How is it used in PyTorch?")  # heading "Using it in PyTorch": not the subject
    turn = session.ask("And with Hugging Face?")
    assert turn.standalone == "gradient checkpointing with Hugging Face?"
    assert turn.answer.citations[0].hit.path.endswith("gradient-checkpointing.md")
    assert session.standalone("What does it cost?") == "What does gradient checkpointing cost?"


def test_the_first_question_is_searched_as_typed(notes_kb: KnowledgeBase) -> None:
    session = ChatSession(notes_kb)
    assert session.standalone("它的缺点是什么？") == "它的缺点是什么？"
    with pytest.raises(ValueError, match="empty"):
        session.standalone("   ")


def test_cli_chat_reads_piped_questions(notes_kb: KnowledgeBase) -> None:
    runner = CliRunner()
    questions = "LoRA 为什么能减少显存？\n\n那它的缺点呢？\nWhat about its rank?\n"
    result = runner.invoke(app, ["chat", "--kb", str(notes_kb.path)], input=questions)
    assert result.exit_code == 0, result.output
    assert "→ LoRA的缺点是什么？" in result.stdout
    assert "→ What about LoRA's rank?" in result.stdout
    headers = re.findall(r"^(?:Sources|Nearest sources|最接近的来源)$", result.stdout, re.M)
    assert len(headers) == 3  # one answer per question; the blank line is skipped

    result = runner.invoke(app, ["chat", "--kb", str(notes_kb.path), "--json"], input=questions)
    assert result.exit_code == 0, result.output
    turns = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["standalone"] for t in turns] == [
        "LoRA 为什么能减少显存？",
        "LoRA的缺点是什么？",
        "What about LoRA's rank?",
    ]
    first = turns[0]["answer"]
    assert first["found"] and first["mode"] == "extractive" and "optimizer state" in first["text"]


def test_cli_chat_in_generate_mode_without_a_model_fails_clearly(
    notes_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCEBOOK_LLM_GGUF", raising=False)
    result = CliRunner().invoke(
        app, ["chat", "--kb", str(notes_kb.path), "--mode", "generate"], input="LoRA?\n"
    )
    assert result.exit_code == 1
    assert "SOURCEBOOK_LLM_GGUF" in result.stderr
