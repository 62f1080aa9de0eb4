"""Per-model calibration of the "not found" decision.

Cosine scales differ by model (USE's good matches sit near 0.3-0.5, e5's near 0.85), so
each model maps its dense similarity to 0..1 through its own floor and ceiling, measured on
CMRC 2018 dev (answerable: the question's paragraph is indexed; unanswerable: it is
removed). See benchmarks/RESULTS.md, "Refusal calibration".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    dense_floor: float  # at or below: no dense evidence at all
    dense_ceiling: float  # at or above: as strong as dense evidence gets
    threshold: float  # minimum answer confidence (see ExtractiveAnswerer.confidence)


CALIBRATIONS = {
    "multilingual-e5-small": Calibration(dense_floor=0.78, dense_ceiling=0.90, threshold=0.45),
    "use-multilingual": Calibration(dense_floor=0.15, dense_ceiling=0.55, threshold=0.45),
}


def calibration_for(model: str) -> Calibration:
    return CALIBRATIONS.get(model, Calibration(0.0, 1.0, 0.45))
