"""Index stage: keyword analysis and the embedders that turn text into vectors."""
