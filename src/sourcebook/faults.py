"""Crash points: named places in every write path where a test can kill the process.

`SOURCEBOOK_CRASH_AT=NAME:N` makes the N-th time the process reaches crash point NAME
kill it with SIGKILL (no cleanup, no flush, exactly what a power cut or an OOM kill
does); NAME `*` counts every crash point, so N = 1, 2, 3, … walks through all of a
command's write steps in order. Unset (always, outside the fault-injection tests and
`benchmarks/fault_sweep.py`) a crash point costs one comparison.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT = "SOURCEBOOK_CRASH_AT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    return (name, int(count)) if name and count.isdigit() else None


_target = _parse(os.environ.get(ENVIRONMENT))
_reached = 0


def crash_point(name: str) -> None:
    """Die here if `SOURCEBOOK_CRASH_AT` says so (see the module docstring)."""
    global _reached
    if _target is None or _target[0] not in (name, "*"):
        return
    _reached += 1
    if _reached == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
