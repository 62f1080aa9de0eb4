"""Small vocabularies that the command line needs before anything heavy is imported
(option choices and help texts); `models.py` and `index/embedders.py` use the same."""

from __future__ import annotations

from typing import Literal

AnswerMode = Literal["extractive", "generate"]
Language = Literal["zh", "en"]
# the embedding models `index/embedders.py` registers (a test keeps the two equal)
EMBEDDER_NAMES = ("multilingual-e5-small", "use-multilingual")
