"""Offline OCR behind one protocol: an image in, lines of text with their boxes out.

Two engines were compared on rendered Chinese and English pages (benchmarks/RESULTS.md,
"Issue 14"): RapidOCR (PP-OCRv4 on ONNX Runtime, models inside the `rapidocr-onnxruntime`
wheel, extra `sourcebook[ocr]`) is the default; Tesseract (Debian `tesseract-ocr` with
`chi_sim`, through `pytesseract`) is used when it is the one installed or when
`SOURCEBOOK_OCR=tesseract`. Without either, files that need OCR are reported, not indexed
empty.
"""

from __future__ import annotations

import os
import re
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


_CJK_SPACE = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef]) +(?=[\u3000-\u9fff\uff00-\uffef])")


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


class TesseractEngine:
    """Tesseract 5 with the simplified-Chinese and English models."""

    name = "tesseract"

    def __init__(self) -> None:
        import pytesseract

        try:
            languages = set(pytesseract.get_languages())
        except (pytesseract.TesseractNotFoundError, OSError) as exc:
            raise unavailable() from exc
        self._lang = "+".join(lang for lang in ("chi_sim", "eng") if lang in languages) or "eng"

    def read(self, image: Any) -> list[OcrLine]:
        import pytesseract

        data = pytesseract.image_to_data(
            image, lang=self._lang, output_type=pytesseract.Output.DICT
        )
        width, height = image.size
        grouped: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if str(word).strip():
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                grouped.setdefault(key, []).append(i)
        lines = []
        for indices in grouped.values():
            text = _CJK_SPACE.sub("", " ".join(str(data["text"][i]) for i in indices))
            x0 = min(data["left"][i] for i in indices)
            top = min(data["top"][i] for i in indices)
            x1 = max(data["left"][i] + data["width"][i] for i in indices)
            bottom = max(data["top"][i] + data["height"][i] for i in indices)
            confidence = sum(float(data["conf"][i]) for i in indices) / len(indices) / 100
            box = (x0 / width, top / height, x1 / width, bottom / height)
            lines.append(OcrLine(text, _rounded(box), confidence))
        return _in_reading_order(lines)


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


ENGINES = ("rapidocr", "tesseract")


@lru_cache(maxsize=4)
def _load(name: str) -> OcrEngine:
    if name == "rapidocr":
        try:
            return RapidOcrEngine()
        except ImportError as exc:
            raise unavailable() from exc
    if name == "tesseract":
        try:
            return TesseractEngine()
        except ImportError as exc:
            raise unavailable() from exc
    raise OcrUnavailable(f"unknown OCR engine {name!r} (choose one of {', '.join(ENGINES)})")


_choice = "auto"


def use_engine(name: str) -> None:
    """Choose the engine (`Settings.ocr`: auto, rapidocr, tesseract or none)."""
    global _choice
    _choice = name.strip().lower()


def ocr_engine() -> OcrEngine:
    """The OCR engine in use: the one chosen (rapidocr, tesseract, or none), or with "auto"
    the first one installed. Raises OcrUnavailable when there is none."""
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
