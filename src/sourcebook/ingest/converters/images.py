"""Images (.png, .jpg, ...): their text read by OCR, each line with its box on the image,
which counts as page 1 so that a citation can show it with the quoted region marked."""

from __future__ import annotations

import io
from pathlib import Path

from sourcebook.ingest.converters.base import ConversionError, TextBuilder, join_lines
from sourcebook.ingest.converters.ocr import OcrLine, OcrUnavailable, ocr_engine
from sourcebook.models import Box, Heading, ParsedDocument

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MAX_PIXELS = 40_000_000  # a 40-megapixel scan; larger ones are decompression bombs


def open_image(data: bytes) -> object:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise ConversionError("unreadable image: truncated, corrupt or not an image") from None
    except Image.DecompressionBombError as exc:
        raise ConversionError(f"unreadable image (too large): {exc}") from None
    except (OSError, ValueError) as exc:  # truncated or corrupt data
        raise ConversionError(f"unreadable image (corrupt or truncated): {exc}") from None
    return image


def ocr_paragraphs(data: bytes) -> list[tuple[str, Box]]:
    """The text of an image as paragraphs (lines close together joined), with boxes."""
    engine = ocr_engine()  # raises OcrUnavailable first: no need to decode the image
    image = open_image(data)
    return paragraphs(engine.read(image))


def paragraphs(lines: list[OcrLine]) -> list[tuple[str, Box]]:
    groups: list[tuple[list[str], Box]] = []
    for line in lines:
        height = line.box[3] - line.box[1]
        if groups and 0 <= line.box[1] - groups[-1][1][3] < height * 0.8:
            texts, box = groups[-1]
            texts.append(line.text)
            union = (
                min(box[0], line.box[0]),
                box[1],
                max(box[2], line.box[2]),
                max(box[3], line.box[3]),
            )
            groups[-1] = (texts, union)
        else:
            groups.append(([line.text], line.box))
    return [(join_lines(texts), box) for texts, box in groups]


def image(path: Path, data: bytes) -> ParsedDocument:
    builder = TextBuilder()
    for text, box in ocr_paragraphs(data):
        builder.blank(1, 1)
        builder.add(text, 1, 1, box)
    document = builder.build(path.stem, with_pages=True, with_sources=False)
    document.title = path.stem
    if not document.text.strip():
        raise ConversionError("no text found in the image (OCR read nothing)")
    return document


def add_referenced_images(document: ParsedDocument, note: Path) -> None:
    """Append the OCR text of the local images a note shows (`![](fig.png)`,
    `![[fig.png]]`) after the note's own text, under a heading per image; each added line
    cites the note's line that shows the image. Without OCR they are counted in warnings."""
    found: list[tuple[str, Path]] = []
    for reference in dict.fromkeys(document.images):
        if "://" in reference or reference.startswith("data:"):
            continue  # remote or inline images are not read
        candidate = (note.parent / reference.split("#")[0]).resolve()
        if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
            found.append((reference, candidate))
    if not found:
        return
    lines = document.text.split("\n")
    source_lines = document.source_lines or list(range(1, len(lines) + 1))
    builder = TextBuilder()
    unread = 0
    for reference, image_path in found:
        line = _line_of(lines, reference)
        try:
            paragraphs = ocr_paragraphs(image_path.read_bytes())
        except OcrUnavailable:
            unread += 1
            continue
        except (ConversionError, OSError):
            continue
        if paragraphs:
            builder.heading(6, f"{image_path.name}", line)
            for text, _ in paragraphs:
                builder.add(text, line)
                builder.blank(line)
    if unread:
        document.warnings.append(
            f"{unread} image(s) shown by the note not read: install 'sourcebook[ocr]' to read them"
        )
    if not builder.lines:
        return
    base = len(document.text) + 1
    document.text += "\n" + "\n".join(builder.lines)
    document.source_lines = source_lines + builder.source
    starts = [0]
    for text_line in builder.lines:
        starts.append(starts[-1] + len(text_line) + 1)
    document.headings.extend(
        Heading(base + starts[i], level, title) for i, level, title in builder.headings
    )


def _line_of(lines: list[str], reference: str) -> int:
    return next((i + 1 for i, line in enumerate(lines) if reference in line), 1)
