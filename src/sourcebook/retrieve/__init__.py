"""Retrieve stage: hybrid BM25 + dense search, fusion, and the rerankers."""
