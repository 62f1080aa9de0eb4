"""Offline OCR behind one protocol: an image in, lines of text with their boxes out.

RapidOCR (PP-OCRv4 on ONNX Runtime, its models inside the `rapidocr-onnxruntime` wheel,
extra `sourcebook[ocr]`) was chosen over Tesseract 5 with `chi_sim` by measurement on
rendered Chinese, English and mixed pages (benchmarks/RESULTS.md, "Issue 14": more accurate
on Chinese and mixed text, faster, and a pip install with nothing from Debian). Without it,
files that need OCR are reported, not indexed empty.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from sourcebook.ingest.converters.base import ConversionError
from sourcebook.models import Box

INSTALL_HINT = "install 'sourcebook[ocr]'"


class OcrUnavailable(ConversionError):
    """No OCR engine is installed (or the one asked for is not)."""


def unavailable(what: str = "no text layer") -> OcrUnavailable:
    return OcrUnavailable(f"{what} ({INSTALL_HINT} to read it with OCR)")


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: Box  # fractions of the image's width and height
    confidence: float


class OcrEngine(Protocol):
    name: str

    def read(self, image: Any) -> list[OcrLine]:
        """The text lines of a PIL image, top to bottom."""
        ...


class RapidOcrEngine:
    """PP-OCRv4 detection + recognition (Chinese and English in one model)."""

    name = "rapidocr"

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        threads = max(1, (os.cpu_count() or 2) // 2)
        self._ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
        self._lock = threading.Lock()  # one ONNX session set, not re-entrant across threads

    def read(self, image: Any) -> list[OcrLine]:
        import numpy as np

        rgb = np.asarray(image.convert("RGB"))
        width, height = image.size
        with self._lock:
            result, _ = self._ocr(rgb)
        lines = []
        for points, text, score in result or []:
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            box = (min(xs) / width, min(ys) / height, max(xs) / width, max(ys) / height)
            lines.append(OcrLine(str(text).strip(), _rounded(box), float(score)))
        return _in_reading_order([line for line in lines if line.text])


def _rounded(box: tuple[float, float, float, float]) -> Box:
    x0, top, x1, bottom = box
    return (round(x0, 4), round(top, 4), round(x1, 4), round(bottom, 4))


def _in_reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top to bottom; pieces of one printed line (same height band) left to right."""
    ordered = sorted(lines, key=lambda line: (line.box[1], line.box[0]))
    rows: list[list[OcrLine]] = []
    for line in ordered:
        middle = (line.box[1] + line.box[3]) / 2
        if rows and rows[-1][0].box[1] <= middle <= rows[-1][0].box[3]:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda line: line.box[0])]


ENGINES = ("rapidocr",)


@lru_cache(maxsize=4)
def _load(name: str) -> OcrEngine:
    if name == "rapidocr":
        try:
            return RapidOcrEngine()
        except ImportError as exc:
            raise unavailable() from exc
    raise OcrUnavailable(f"unknown OCR engine {name!r} (choose one of {', '.join(ENGINES)})")


_choice = "auto"


def use_engine(name: str) -> None:
    """Choose the engine (`Settings.ocr`: auto, rapidocr or none)."""
    global _choice
    _choice = name.strip().lower()


def ocr_engine() -> OcrEngine:
    """The OCR engine in use: the one chosen (rapidocr or none), or with "auto" the first
    one installed. Raises OcrUnavailable when there is none."""
    choice = _choice
    if choice == "none":
        raise unavailable()
    if choice != "auto":
        return _load(choice)
    for name in ENGINES:
        try:
            return _load(name)
        except OcrUnavailable:
            continue
    raise unavailable()
