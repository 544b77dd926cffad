"""One module per step of al.core.machine's table. Each exposes run(ctx) -> trigger name; none imports a
frontend."""

from __future__ import annotations

from al.core.machine import StepFn
from al.steps import analyze, converge, extract, retrain, review, track, validate

STEP_FUNCS: dict[str, StepFn] = {
    "validate": validate.run, "analyze": analyze.run, "converge": converge.run, "extract": extract.run,
    "review": review.run, "retrain": retrain.run, "track": track.run,
}
