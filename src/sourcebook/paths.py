"""Document paths as the user added them, and back.

The store keys documents by absolute path. People see and type paths as they added them:
`sourcebook add examples/notes` makes `examples/notes/training/optimizers.md`, the same
from whatever folder a later command runs in. Every surface shows that form as `path` and
the absolute one as `absolute_path`; commands that take a document accept either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def absolute_path(raw: str | Path) -> Path:
    """The path a source or document is known by: absolute, `~` expanded and `.`/`..`
    removed, but symbolic links kept, not resolved. The path the user added (or the link
    found in a folder) is the document's identity: access rules match it, `remove` and
    `sync` find it, and every surface shows it; where a link points never matters, so a
    link cannot carry a file out of the rule of the folder it is in."""
    return Path(os.path.abspath(Path(raw).expanduser()))


class PathNames:
    """Absolute document paths <-> paths as added, from the sources' given names."""

    def __init__(self, given: Mapping[str, str]) -> None:
        # the deepest source first: a file under two sources is named by the nearer one
        self._sources = sorted(
            ((root, os.path.normpath(name)) for root, name in given.items()),
            key=lambda pair: len(pair[0]),
            reverse=True,
        )

    def as_added(self, absolute: str) -> str:
        """`absolute` as the user added it; unchanged when no source names it."""
        for root, name in self._sources:
            if absolute == root:
                return name
            if absolute.startswith(root.rstrip(os.sep) + os.sep):
                return os.path.normpath(os.path.join(name, os.path.relpath(absolute, root)))
        return absolute

    def candidates(self, added: str) -> list[str]:
        """The absolute paths a document named as added can be, nearest source first."""
        wanted = os.path.normpath(added)
        found: list[str] = []
        for root, name in self._sources:
            if wanted == name:
                found.append(root)
                continue
            if name == ".":  # added as "." : every relative path below it
                inside = not os.path.isabs(wanted) and not wanted.startswith("..")
                rest = wanted if inside else None
            else:
                prefix = name.rstrip(os.sep) + os.sep
                rest = wanted[len(prefix) :] if wanted.startswith(prefix) else None
            if rest:
                found.append(os.path.join(root, rest))
        return found
