"""Sourcebook: a local-first knowledge base with hybrid search and cited answers."""

from sourcebook import _cxx_runtime  # noqa: F401  (first: see its docstring)
from sourcebook.kb import KnowledgeBase
from sourcebook.models import Answer, Citation, SearchHit, SyncReport
from sourcebook.settings import Settings
from sourcebook.store.embedded import Filters, StoreError

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
