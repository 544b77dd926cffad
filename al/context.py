"""The run's persistent state and the context every step receives."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from al import store
from al.config import Config
from al.events import EventBus
from al.paths import RunPaths

Status = Literal["running", "awaiting_review", "interrupted", "failed", "done"]


class RunState(BaseModel):
    """run_state.json: where the run is. Written atomically after every step."""

    model_config = ConfigDict(extra="forbid")

    iteration: int = 0
    step: str = "retrain"
    baseline: bool = True
    """True while iteration 0's model has not been trained yet (the first retrain trains the baseline)."""
    status: Status = "running"
    converged: bool = False
    reason: str = ""
    dry_run: bool = False
    auto: bool = False
    config_digest: str = ""
    error: str | None = None
    timings: dict[str, dict[str, float]] = {}
    """Seconds per step, per iteration (keys are str(iteration))."""

    def save(self, paths: RunPaths) -> None:
        store.write_json(paths.state, self.model_dump(mode="json"))

    @classmethod
    def load(cls, paths: RunPaths) -> "RunState":
        data = store.read_json(paths.state, required=("iteration", "step"))
        data.pop("schema", None)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise store.StoreError(f"{paths.state}: invalid run state ({e.errors()[0]['msg']} at "
                                   f"{'.'.join(map(str, e.errors()[0]['loc']))}). Restore the file or start over "
                                   f"with --start-iteration.") from None


@dataclass
class Options:
    dry_run: bool = False
    auto: bool = False
    interactive: bool = False
    """A human is at a terminal: review waits for Enter instead of pausing the run."""


@dataclass
class Context:
    cfg: Config
    paths: RunPaths
    state: RunState
    opts: Options
    bus: EventBus
    stop: threading.Event = field(default_factory=threading.Event)
    """Set to ask the running step to stop at the next safe point (quit / Ctrl+C)."""
    wait_for_review: Callable[[dict], bool] | None = None
    """Interactive review: blocks until the human continues (True) or quits (False)."""
    _models: dict = field(default_factory=dict)

    @property
    def yolo_config_dir(self) -> Path:
        return self.cfg.run_dir / ".yolo_config"

    @property
    def k(self) -> int:
        return self.state.iteration

    def model(self, weights: Path):
        """A loaded YOLO model, cached per weights file for the life of the run (predict passes reuse it)."""
        from al import detector

        key = (str(weights), Path(weights).stat().st_mtime_ns if Path(weights).exists() else 0)
        if key not in self._models:
            self._models.clear()
            self._models[key] = detector.load_model(weights)
        return self._models[key]


class StepError(Exception):
    """A step cannot go on; the message says what is wrong and how to fix it."""


class Interrupted(Exception):
    """The user asked to stop; the state on disk is resumable."""
