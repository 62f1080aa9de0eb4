"""Ingest stage: files become documents (converters), documents become chunks (chunker),
and the pipeline that stores them."""
