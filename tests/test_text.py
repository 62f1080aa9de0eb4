from sourcebook.index.analyzer import analyze
from sourcebook.text import count_tokens, is_chinese, normalize, sentence_spans


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_normalize_keeps_lines_and_strips_controls() -> None:
    raw = "ＬｏＲＡ\r\n第二行\x00\x07\u200b\n\tcode"
    assert normalize(raw) == "LoRA\n第二行\n\tcode"


def test_chinese_english_and_mixed_sentences() -> None:
    text = "LoRA 冻结原始权重。rank r 通常取 8！真的吗？Adam uses β1=0.9. It is stable... 好"
    assert sentences(normalize(text)) == [
        "LoRA 冻结原始权重。",
        "rank r 通常取 8!",
        "真的吗?",
        "Adam uses β1=0.9.",
        "It is stable...",
        "好",
    ]


def test_decimal_points_and_list_items_are_not_confused() -> None:
    text = "学习率 3.5e-4 比较稳。\n- 第一项 0.9\n- 第二项"
    assert sentences(text) == ["学习率 3.5e-4 比较稳。", "- 第一项 0.9", "- 第二项"]


def test_token_count_and_language() -> None:
    assert count_tokens("LoRA 低秩") == 3
    assert is_chinese("LoRA 为什么能减少显存？")
    assert not is_chinese("Why does LoRA save GPU memory?")


def test_analyzer_segments_stems_and_drops_stop_words() -> None:
    tokens = analyze("LoRA 为什么能减少显存？The embeddings are normalized")
    assert "lora" in tokens and "显存" in tokens and "减少" in tokens
    assert "embed" in tokens and "normal" in tokens  # Snowball stems
    assert "the" not in tokens and "为什么" not in tokens


def test_the_plural_of_an_acronym_is_the_acronym() -> None:
    # a question about "GPUs" finds the note that says "GPU" (the stemmer keeps "gpus")
    assert analyze("How many GPUs? LLMs and CPUs") == ["mani", "gpu", "llm", "cpu"]
    assert analyze("Ms Smith uses 2s") == ["ms", "smith", "use", "2s"]
