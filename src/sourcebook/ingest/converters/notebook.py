"""Jupyter notebooks (.ipynb): Markdown cells as Markdown, code cells as fenced code, and
their text outputs (shortened) after them."""

from __future__ import annotations

from pathlib import Path

from sourcebook.ingest.converters.base import ConversionError, decode
from sourcebook.ingest.converters.markup import markdown
from sourcebook.models import ParsedDocument

MAX_OUTPUT_CHARS = 2000  # a long output (a log, a data dump) is cut: the code explains it


def notebook(path: Path, data: bytes) -> ParsedDocument:
    import nbformat
    from nbformat.reader import NotJSONError

    try:
        book = nbformat.reads(decode(data), as_version=4)  # type: ignore[no-untyped-call]
    except (NotJSONError, ValueError, KeyError, AttributeError) as exc:
        raise ConversionError(f"not a readable Jupyter notebook: {exc}") from exc
    language = str(book.metadata.get("kernelspec", {}).get("language") or "python")
    parts: list[str] = []
    for cell in book.cells:
        source = str(cell.get("source", "")).strip("\n")
        if not source.strip():
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
        elif cell.cell_type == "code":
            parts.append(f"```{language}\n{source}\n```")
            output = _outputs(cell.get("outputs", []))
            if output:
                parts.append(f"```text\n{output}\n```")
        else:
            parts.append(source)
    text = "\n\n".join(parts) + "\n"
    document = markdown(path, text.encode("utf-8"))
    document.source_lines = None  # lines of the extracted text (the file is JSON)
    if document.title == path.stem and book.metadata.get("title"):
        document.title = str(book.metadata["title"])
    return document


def _outputs(outputs: list[dict[str, object]]) -> str:
    texts: list[str] = []
    for output in outputs:
        if output.get("output_type") == "stream":
            texts.append(str(output.get("text", "")))
        elif output.get("output_type") in ("execute_result", "display_data"):
            data = output.get("data") or {}
            if isinstance(data, dict) and "text/plain" in data:
                texts.append(str(data["text/plain"]))
        elif output.get("output_type") == "error":
            texts.append(f"{output.get('ename')}: {output.get('evalue')}")
    text = "\n".join(t.strip("\n") for t in texts if t.strip())
    text = text.replace("```", "'''")  # never close the fence early
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + "\n…"
