"""A cross-encoder reranker from a model directory the user already has, run by ONNX Runtime.

The directory is a Hugging Face / sentence-transformers cross-encoder exported to ONNX:
`tokenizer.json` plus `model.onnx` or `onnx/model.onnx` (the layout written by
`CrossEncoder(..., backend="onnx").save_pretrained(...)` and by `optimum-cli export onnx`).
Each (question, passage) pair is scored jointly; the relevance logit replaces the fused
order. Optional: needs `pip install 'sourcebook[cross-encoder]'` (onnxruntime, tokenizers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sourcebook.models import SearchHit
from sourcebook.retrieve.rerank import order_by

MODEL_FILES = ("model.onnx", "onnx/model.onnx")


class CrossEncoderError(ValueError):
    """The model directory cannot be used as a cross-encoder (the message says why)."""


class CrossEncoderReranker:
    """Scores (question, chunk) pairs with a cross-encoder; best first."""

    def __init__(
        self,
        folder: str | Path,
        max_length: int | None = None,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.name = f"cross-encoder:{self.folder.name}"
        self.batch_size = batch_size
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as error:
            raise CrossEncoderError(
                "the cross-encoder reranker needs onnxruntime and tokenizers: "
                "pip install 'sourcebook[cross-encoder]'"
            ) from error
        model_file = _find_model(self.folder)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length or _max_length(self.folder))
        self.tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise CrossEncoderError(f"{model_file} is not a loadable ONNX model: {error}") from (
                error
            )
        self.inputs = {node.name for node in self.session.get_inputs()}
        if "input_ids" not in self.inputs:
            raise CrossEncoderError(
                f"{model_file} has inputs {sorted(self.inputs)}; a cross-encoder takes input_ids"
            )

    def scores(self, question: str, passages: Sequence[str]) -> NDArray[np.float32]:
        """One relevance score per passage (the model's logit for "relevant")."""
        out: list[NDArray[np.float32]] = []
        for start in range(0, len(passages), self.batch_size):
            batch = passages[start : start + self.batch_size]
            encodings = self.tokenizer.encode_batch([(question, p) for p in batch])
            feed: dict[str, Any] = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            logits = np.asarray(
                self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0],
                dtype=np.float32,
            )
            # (n, 1): a relevance logit; (n, 2): [irrelevant, relevant] logits
            out.append(logits[:, -1] if logits.ndim == 2 else logits.reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def rerank(
        self, question: str, hits: Sequence[SearchHit], idf: dict[str, float]
    ) -> list[SearchHit]:
        if not hits:
            return []
        return order_by(hits, self.scores(question, [_passage(hit) for hit in hits]))


def _passage(hit: SearchHit) -> str:
    heading = " > ".join([hit.title, *hit.heading_path])
    return f"{heading}\n{hit.text}" if heading else hit.text


def _find_model(folder: Path) -> Path:
    if not folder.is_dir():
        raise CrossEncoderError(f"cross-encoder folder {folder} does not exist")
    if not (folder / "tokenizer.json").is_file():
        raise CrossEncoderError(f"{folder} has no tokenizer.json (a fast-tokenizer file)")
    for name in MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    hint = ""
    if any((folder / n).exists() for n in ("model.safetensors", "pytorch_model.bin")):
        hint = (
            " It holds PyTorch weights: export them once with "
            "`optimum-cli export onnx --model DIR --task text-classification DIR` "
            "or sentence-transformers' CrossEncoder(DIR, backend='onnx')."
        )
    raise CrossEncoderError(f"{folder} has no {' or '.join(MODEL_FILES)}.{hint}")


def _max_length(folder: Path) -> int:
    """The tokenizer's model_max_length when it is stated and sane, else 512."""
    config = folder / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 8192:
            return int(value)
    return 512
