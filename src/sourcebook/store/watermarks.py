"""Where the embedded search indexes (`indexes.py`) record their watermarks: the last
change-log sequence number each has durably applied, in a small JSON file beside it.

Kept apart from the indexes so that reading a watermark (`status`, crash recovery at
open) loads neither tantivy, usearch nor numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

KEYWORD_STATE = "sourcebook-state.json"  # in the keyword index's folder


def vector_state(path: Path) -> Path:
    """The state file of the vector index file `path`."""
    return path.with_name(path.name + ".state.json")


def keyword_watermark(folder: Path) -> int:
    """The last change the keyword index in `folder` holds, without opening it."""
    return read_watermark(folder / KEYWORD_STATE)


def vector_watermark(path: Path) -> int:
    """The last change the vector index file holds, without opening it."""
    return read_watermark(vector_state(path)) if path.exists() else 0


def read_watermark(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["watermark"])
    except (OSError, ValueError, KeyError):
        return 0


def write_watermark(path: Path, watermark: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"watermark": watermark}))
    os.replace(tmp, path)
