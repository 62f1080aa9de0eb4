"""The `sourcebook` command line. Every command goes through `KnowledgeBase`.

Exit codes: 0 success; 1 error (bad input, missing knowledge base); 2 the command ran but
some files could not be indexed (they are listed with their reasons).

Whoever runs the command line can read the knowledge base's files, so it acts as the
local user, who may read and change everything; its calls are recorded in the audit log
as user "local", surface "cli".
"""

from sourcebook.surfaces.cli import (  # noqa: F401  (they register the commands)
    answers,
    backends,
    documents,
    services,
    teams,
    watch,
)
from sourcebook.surfaces.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
