"""Metrics, dataset loaders and an end-to-end `eval` run on small data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sourcebook.evaluation.datasets import load_beir, load_named, load_squad
from sourcebook.evaluation.metrics import (
    answer_f1,
    contains_answer,
    exact_match,
    mrr_at,
    ndcg_at,
    recall_at,
)


def test_ranking_metrics() -> None:
    relevant = {"a": 3, "b": 1}
    assert recall_at(["x", "a", "y", "b"], relevant, 2) == 0.5
    assert mrr_at(["x", "y", "a"], relevant) == pytest.approx(1 / 3)
    assert ndcg_at(["a", "b"], relevant) == pytest.approx(1.0)
    assert ndcg_at(["b", "a"], relevant) < 1.0
    assert ndcg_at(["b", "a"], relevant, graded=False) == pytest.approx(1.0)


def test_answer_metrics_fold_width_case_and_punctuation() -> None:
    assert contains_answer("答案是：ＬｏＲＡ，秩为 8。", ["lora,秩为8"])
    assert exact_match("“光荣和ω-force”", ["光荣和ω-force"])
    # gold 光 荣 和 force (4 tokens) within 6 predicted tokens: P 4/6, R 1, F1 0.8
    assert answer_f1("光荣和ω-force公司", ["光荣和ω-force"]) == pytest.approx(0.8)
    assert answer_f1("完全无关", ["光荣"]) == 0.0


def test_builtin_datasets_and_disjoint_splits() -> None:
    cranfield = load_named("cranfield")
    assert len(cranfield.documents) == 1400 and len(cranfield.queries) == 225
    assert cranfield.graded
    cmrc = load_named("cmrc2018")
    assert len(cmrc.documents) == 848 and len(cmrc.queries) == 3219
    tune, test = cmrc.split("tune"), cmrc.split("test")
    assert len(tune) + len(test) == 3219
    # SQuAD-style splits are by paragraph: no paragraph serves both halves
    assert not {next(iter(q.relevant)) for q in tune} & {next(iter(q.relevant)) for q in test}


def test_beir_loader(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "LoRA", "text": "低秩微调"}\n{"_id": "d2", "text": "Adam"}\n'
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "LoRA 是什么"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    dataset = load_beir(tmp_path)
    assert [d.id for d in dataset.documents] == ["d1", "d2"]
    assert dataset.queries[0].relevant == {"d1": 2} and dataset.graded


def test_eval_command_end_to_end(tmp_path: Path) -> None:
    """A small SQuAD-style set through the real CLI: table, JSON and chart."""
    from typer.testing import CliRunner

    from sourcebook.surfaces.cli import app

    paragraphs = [
        (
            "LoRA",
            "LoRA 冻结预训练权重，只训练低秩矩阵 A 和 B。rank r 通常取 8 或 16。",
            "rank r 通常取多少？",
            "8 或 16",
        ),
        (
            "Adam",
            "Adam 的默认 β2 是 0.999。它为每个参数保存两个状态。",
            "Adam 默认 β2 是多少？",
            "0.999",
        ),
        (
            "ONNX",
            "ONNX Runtime uses execution providers such as CUDA and TensorRT.",
            "Which execution providers does ONNX Runtime use?",
            "CUDA and TensorRT",
        ),
        (
            "RoPE",
            "RoPE 通过旋转矩阵编码位置，点积只依赖相对位置。",
            "RoPE 为什么能表示相对位置？",
            "点积只依赖相对位置",
        ),
    ]
    data = {
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": f"q{i}", "question": question, "answers": [{"text": answer}]}
                        ],
                    }
                ],
            }
            for i, (title, context, question, answer) in enumerate(paragraphs)
        ]
    }
    squad = tmp_path / "mini.json"
    squad.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert len(load_squad(squad).queries) == 4
    output, chart = tmp_path / "results.json", tmp_path / "chart.png"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(squad),
            "--split",
            "all",
            "--work",
            str(tmp_path / "work"),
            "--output",
            str(output),
            "--chart",
            str(chart),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads(output.read_text())["datasets"]["mini"]
    assert set(results["retrieval"]) >= {"bm25", "hybrid-rrf (multilingual-e5-small)"}
    assert results["retrieval"]["bm25"]["recall@5"] == 1.0
    answers = results["answers"]
    assert answers["answer_contains_gold"] >= 0.75
    assert answers["citations_to_missing_sources"] == 0
    assert chart.stat().st_size > 10_000 and "answer_contains_gold" in result.output
