"""Near-duplicate recognition on its own (the end-to-end case is in test_knowledge_base)."""

from __future__ import annotations

from sourcebook.index.analyzer import analyze
from sourcebook.retrieve.retriever import SKETCH_FROM, NearDuplicates

# long enough (hundreds of distinct trigrams) that passages are compared by their sample
LONG_ZH = "".join(
    f"第{i}层的低秩矩阵 A{i} 和 B{i} 只有 {i * 8} 个参数，梯度和优化器状态也只为它们保存。"
    for i in range(40)
)
LONG_EN = " ".join(
    f"Worker {i} loads {i * 2} batches of shard{i} in advance and pins {i * 3} buffers."
    for i in range(40)
)


def test_copies_and_heavy_overlap_are_recognised_in_both_languages() -> None:
    assert len(analyze(LONG_ZH)) > 4 * SKETCH_FROM and len(analyze(LONG_EN)) > 4 * SKETCH_FROM
    for text in (LONG_ZH, LONG_EN, LONG_ZH + LONG_EN):
        seen = NearDuplicates()
        assert seen.add(analyze(text))
        assert not seen.add(analyze(text))  # an exact copy
        assert not seen.add(analyze(text[: len(text) * 9 // 10]))  # mostly contained


def test_different_passages_are_kept_however_short() -> None:
    seen = NearDuplicates()
    assert seen.add(analyze(LONG_ZH))
    assert seen.add(analyze(LONG_EN))
    assert seen.add(analyze(LONG_ZH[len(LONG_ZH) // 2 :] + LONG_EN[: len(LONG_EN) // 2]))
    assert seen.add(analyze("Adam 的默认 β2 是 0.999。"))
    assert seen.add(analyze("Adam 的默认 β1 是 0.9。"))  # shares words, not trigrams
    assert seen.add(analyze("GPT-2 的词表有 50257 个 token。"))
    assert seen.add([])
