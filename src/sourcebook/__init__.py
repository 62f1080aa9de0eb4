"""Sourcebook: a local-first knowledge base with hybrid search and cited answers."""

from . import _cxx_runtime  # noqa: F401  (first: see its docstring)
from .kb import KnowledgeBase
from .models import Answer, Citation, SearchHit, SyncReport
from .settings import Settings
from .store import Filters, StoreError

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
