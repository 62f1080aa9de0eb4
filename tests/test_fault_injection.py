"""A sample of the fault-injection sweep (`benchmarks/fault_sweep.py`): real writer
processes (`add`, `add` of a CSV stored in parts, `sync`, `remove`, `reindex`, `access
set`, `access remove`, `user add`, `key create`, an upload to `sourcebook serve`)
SIGKILLed at crash points spread over their write steps; after each kill the store opens,
its indexes agree with its records, nothing is orphaned, and after one `sync` nothing
added is lost and nothing removed is found. The full sweep (every crash point) is the
benchmark; this sample keeps CI fast."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fault_sweep

from sourcebook import faults


def test_a_sample_of_kill_points_leaves_no_invariant_violated(tmp_path: Path) -> None:
    outcomes = fault_sweep.sweep(24, tmp_path, log=lambda _: None)  # 2 per command
    violations = [v for o in outcomes for v in o.violations]
    assert violations == []
    killed = [o for o in outcomes if o.killed]
    assert len(killed) >= 16  # most sampled points are inside the commands' write steps
    assert {o.scenario for o in killed} >= {"add", "add-csv", "sync", "remove", "reindex", "upload"}


def test_a_crash_point_spec_is_parsed_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert faults._parse("store.commit:3") == ("store.commit", 3)
    assert faults._parse("*:12") == ("*", 12)
    for bad in ("", "store.commit", ":3", "x:y"):
        assert faults._parse(bad) is None
