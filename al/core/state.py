"""run_state.json: the persisted position of the run in the one state machine (al.core.machine)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from al.core import store
from al.core.paths import RunPaths


class RunState(BaseModel):
    """Where the run is. Written atomically after every transition."""

    model_config = ConfigDict(extra="forbid")

    iteration: int = 0
    step: str = "retrain"
    """The machine's state: a step (validate … track), or awaiting_review, interrupted, failed, done."""
    stopped_at: str | None = None
    """The step that was interrupted or failed (the state 'resume' returns to)."""
    review_pending: bool = False
    """The human has been handed this iteration's picks; the review step imports instead of asking again."""
    baseline: bool = True
    """True while iteration 0's model has not been trained yet (the first retrain trains the baseline)."""
    converged: bool = False
    reason: str = ""
    dry_run: bool = False
    auto: bool = False
    config_digest: str = ""
    error: str | None = None
    timings: dict[str, dict[str, float]] = {}
    """Seconds per step, per iteration (keys are str(iteration))."""

    @property
    def current_step(self) -> str:
        """The step the run is at or will return to (the stopped step while interrupted or failed)."""
        if self.step in ("interrupted", "failed") and self.stopped_at:
            return self.stopped_at
        if self.step == "awaiting_review":
            return "review"
        return self.step

    def save(self, paths: RunPaths) -> None:
        store.write_json(paths.state, self.model_dump(mode="json"))

    @classmethod
    def load(cls, paths: RunPaths, *, fix: str | None = None) -> RunState:
        """The saved state; a StoreError naming the file and `fix` (what rebuilds it) when it is missing, corrupt
        or invalid."""
        fix = fix or "Restore the file from a backup, or rebuild it from the run tree with --repair."
        data = store.read_json(paths.state, required=("iteration", "step"), fix=fix)
        data.pop("schema", None)
        try:
            _upgrade(data)
            return cls.model_validate(data)
        except (ValidationError, TypeError, AttributeError) as e:
            where = ""
            if isinstance(e, ValidationError):
                where = f" ({e.errors()[0]['msg']} at {'.'.join(map(str, e.errors()[0]['loc']))})"
            raise store.StoreError(f"{paths.state}: invalid run state{where}. {fix}") from None


def _upgrade(data: dict) -> None:
    """Run states written before the machine held pause/interrupt/failure as states kept a separate status."""
    status = data.pop("status", None)
    if status is None:
        return
    step = data.get("step", "retrain")
    if status == "awaiting_review":
        data.update(step="awaiting_review", review_pending=True)
    elif status in ("interrupted", "failed"):
        data.update(step=status, stopped_at=step, review_pending=step == "review" and status == "failed")
    elif status == "done":
        data["step"] = "done"
