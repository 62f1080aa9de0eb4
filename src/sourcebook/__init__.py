"""Sourcebook: a local-first knowledge base with hybrid search and cited answers.

The public names are imported on first use (PEP 562), so that `import sourcebook` (and
every command line start, `sourcebook --help` included) does not pay for the models,
indexes and web stack a command may not need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sourcebook import _cxx_runtime  # noqa: F401  (first, and cheap: see its docstring)

if TYPE_CHECKING:
    from sourcebook.kb import KnowledgeBase
    from sourcebook.models import Answer, Citation, SearchHit, SyncReport
    from sourcebook.settings import Settings
    from sourcebook.store.embedded import Filters, StoreError

_HOMES = {
    "Answer": "sourcebook.models",
    "Citation": "sourcebook.models",
    "Filters": "sourcebook.store.embedded",
    "KnowledgeBase": "sourcebook.kb",
    "SearchHit": "sourcebook.models",
    "Settings": "sourcebook.settings",
    "StoreError": "sourcebook.store.embedded",
    "SyncReport": "sourcebook.models",
}

__all__ = [
    "Answer",
    "Citation",
    "Filters",
    "KnowledgeBase",
    "SearchHit",
    "Settings",
    "StoreError",
    "SyncReport",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sourcebook' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # once
    return value
