"""Converters: one file in, one `ParsedDocument` out, or a `ConversionError` with a reason.

One module per format family; `REGISTRY` maps each suffix to its family and converter.
Each format keeps the document's line structure where it can, so that a chunk's line range
points at the right place in the file the user opens; formats whose lines are extracted
(PDF, DOCX, slides, notebooks, e-books, images) cite lines of the extracted text, and PDF,
slides and images also the page (and for PDF and images the box on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sourcebook.ingest.converters.base import ConversionError, Converter, decode
from sourcebook.ingest.converters.epub import epub
from sourcebook.ingest.converters.html import html
from sourcebook.ingest.converters.images import IMAGE_SUFFIXES, add_referenced_images, image
from sourcebook.ingest.converters.markup import markdown, plain, rst
from sourcebook.ingest.converters.notebook import notebook
from sourcebook.ingest.converters.ocr import OcrUnavailable, use_engine
from sourcebook.ingest.converters.office import docx, pptx
from sourcebook.ingest.converters.pdf import pdf
from sourcebook.ingest.converters.sheets import csv_file, xlsx
from sourcebook.models import ParsedDocument

__all__ = [
    "REGISTRY",
    "SUPPORTED_SUFFIXES",
    "ConversionError",
    "OcrUnavailable",
    "convert",
    "decode",
    "kind_of",
    "use_engine",
]

CODE = {
    ".py", ".js", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc",
    ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".sql", ".r",
    ".lua", ".pl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".json", ".css", ".tex",
}  # fmt: skip


@dataclass(frozen=True)
class Format:
    kind: str  # the family name stored with each document
    convert: Converter


def _markdown_note(path: Path, data: bytes) -> ParsedDocument:
    document = markdown(path, data)
    add_referenced_images(document, path)
    return document


_FAMILIES: list[tuple[Format, set[str]]] = [
    (Format("markdown", _markdown_note), {".md", ".markdown", ".mdx"}),
    (Format("text", plain), {".txt", ".text", ".log"}),
    (Format("rst", rst), {".rst"}),
    (Format("html", html), {".html", ".htm", ".xhtml"}),
    (Format("pdf", pdf), {".pdf"}),
    (Format("docx", docx), {".docx"}),
    (Format("pptx", pptx), {".pptx"}),
    (Format("sheet", xlsx), {".xlsx", ".xlsm"}),
    (Format("sheet", csv_file), {".csv", ".tsv"}),
    (Format("notebook", notebook), {".ipynb"}),
    (Format("epub", epub), {".epub"}),
    (Format("image", image), IMAGE_SUFFIXES),
    (Format("code", plain), CODE),
]
REGISTRY: dict[str, Format] = {s: fmt for fmt, suffixes in _FAMILIES for s in suffixes}
SUPPORTED_SUFFIXES = set(REGISTRY)


def kind_of(path: Path) -> str | None:
    """The converter family for a path, or None when the suffix is not supported."""
    fmt = REGISTRY.get(path.suffix.lower())
    return fmt.kind if fmt else None


def convert(path: Path, data: bytes) -> ParsedDocument:
    """Parse `data` (the bytes of `path`) according to the file's suffix."""
    fmt = REGISTRY.get(path.suffix.lower())
    if fmt is None:
        raise ConversionError(f"unsupported file type {path.suffix or '(no suffix)'}")
    if not data.strip():
        raise ConversionError("empty file")
    document = fmt.convert(path, data)
    if not document.text[document.body_start :].strip():
        raise ConversionError("no text could be extracted")
    return document
