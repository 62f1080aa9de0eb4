"""The cross-encoder backend end to end, with a tiny model built here (no downloads).

The model is a real ONNX graph and the tokenizer a real `tokenizers` file, in the layout a
sentence-transformers ONNX export has (`tokenizer.json` + `onnx/model.onnx`). Its
"relevance" is a weighted count of chosen tokens in the passage segment, so the expected
order is known: this tests the plumbing (tokenising pairs, batching, padding, ONNX
Runtime, re-ordering inside retrieval, configuration by path), not a language model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from typer.testing import CliRunner

from sourcebook import KnowledgeBase, Settings
from sourcebook.retrieve.cross_encoder import CrossEncoderError, CrossEncoderReranker
from sourcebook.retrieve.rerank import load_reranker
from sourcebook.surfaces.cli import app

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WEIGHTS = {"adam": 3.0, "memory": 1.0, "显": 1.0, "存": 1.0, "β2": 2.0}
WORDS = ["lora", "rank", "the", "of", "is", "what", "optimizer", "红", "烧", "肉"]


def build_model(folder: Path, two_logits: bool = False) -> Path:
    vocab = {token: i for i, token in enumerate(SPECIAL + list(WEIGHTS) + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    # as BERT does: lower-case, one token per CJK character, split on spaces and punctuation
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))

    table = np.zeros((len(vocab), 1), dtype=np.float32)
    for token, weight in WEIGHTS.items():
        table[vocab[token], 0] = weight
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["gathered"]),  # [n, L, 1]
        helper.make_node("Squeeze", ["gathered", "axis2"], ["per_token"]),  # [n, L]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["token_type_ids"], ["segment"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["per_token", "mask"], ["masked"]),
        helper.make_node("Mul", ["masked", "segment"], ["passage_only"]),
        helper.make_node("ReduceSum", ["passage_only", "axis1"], ["relevance"], keepdims=1),
    ]
    output = "relevance"
    if two_logits:  # [irrelevant, relevant], as sequence-classification exports have
        nodes.append(helper.make_node("Neg", ["relevance"], ["irrelevance"]))
        nodes.append(helper.make_node("Concat", ["irrelevance", "relevance"], ["both"], axis=1))
        output = "both"
    graph = helper.make_graph(
        nodes,
        "tiny-cross-encoder",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["n", "length"])
            for name in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", 2 if two_logits else 1])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    (folder / "onnx").mkdir(exist_ok=True)
    onnx.save(model, str(folder / "onnx" / "model.onnx"))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("cross-encoder"))


@pytest.mark.parametrize("two_logits", [False, True])
def test_scores_pairs_in_batches_with_padding(tmp_path: Path, two_logits: bool) -> None:
    reranker = CrossEncoderReranker(build_model(tmp_path, two_logits), batch_size=2)
    passages = [
        "红烧肉 is what",  # nothing relevant
        "Adam keeps memory of the β2 moments",  # 3 + 1 + 2
        "显存 memory",  # 1 + 1 + 1
        "adam",  # 3; shorter than the others in its batch: padding must not count
        "memory " * 40,  # 40
    ]
    scores = reranker.scores("Adam 的显存 memory", passages)
    assert scores.tolist() == pytest.approx([0.0, 6.0, 3.0, 3.0, 40.0])


def test_truncates_long_pairs_to_the_model_length(model_dir: Path) -> None:
    reranker = CrossEncoderReranker(model_dir, max_length=16)
    # [CLS] + 2 question tokens + [SEP] + passage + [SEP] fit in 16: 10 passage tokens count
    assert reranker.scores("lora rank", ["memory " * 100])[0] <= 12


def test_search_is_reordered_by_the_cross_encoder(notes_kb: KnowledgeBase, model_dir: Path) -> None:
    kb = KnowledgeBase(
        notes_kb.path, Settings(kb=notes_kb.path, reranker=str(model_dir), rerank_depth=20)
    )
    try:
        hits = kb.search("优化器的显存占用 optimizer memory", limit=10)
        reranker = kb.reranker
        assert isinstance(reranker, CrossEncoderReranker)
        scores = [hit.scores["rerank"] for hit in hits]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] > 0 and "adam" in hits[0].text.lower()  # weight 3 beats the rest
        fused_first = notes_kb.search("优化器的显存占用 optimizer memory", limit=1)[0]
        assert fused_first.scores["rerank"] != scores[0]  # the learned reranker's, not ours
    finally:
        kb.close()


def test_cli_takes_the_model_folder_from_the_environment(
    notes_kb: KnowledgeBase, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCEBOOK_RERANKER", str(model_dir))
    result = CliRunner().invoke(
        app, ["search", "--kb", str(notes_kb.path), "--json", "--limit", "3", "Adam 显存"]
    )
    assert result.exit_code == 0, result.output
    assert '"rerank"' in result.output


def test_unusable_folders_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CrossEncoderError, match="does not exist"):
        CrossEncoderReranker(tmp_path / "missing")
    torch_only = tmp_path / "torch-only"
    torch_only.mkdir()
    (torch_only / "tokenizer.json").write_text("{}")
    (torch_only / "model.safetensors").write_bytes(b"\0")
    with pytest.raises(CrossEncoderError, match="optimum-cli export onnx"):
        CrossEncoderReranker(torch_only)
    corrupt = build_model(tmp_path / "corrupt")
    (corrupt / "onnx" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(CrossEncoderError, match="not a loadable ONNX model"):
        CrossEncoderReranker(corrupt)
    with pytest.raises(ValueError, match="cross-encoder model folder"):
        load_reranker("bm42")
