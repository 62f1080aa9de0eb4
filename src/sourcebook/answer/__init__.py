"""Answer stage: extractive answers and their judge, LLM generation with verification, and chat."""
