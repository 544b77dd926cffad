"""Typed events the core emits; the headless printer and the TUI both subscribe to the same stream."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

STEPS = ["validate", "analyze", "converge", "extract", "review", "retrain", "track"]
STEP_TITLES = {
    "validate": "Validating model",
    "analyze": "Analyzing errors",
    "converge": "Checking convergence",
    "extract": "Extracting hard examples",
    "review": "Manual review required",
    "retrain": "Retraining model",
    "track": "Updating tracking and plots",
}


@dataclass
class Event:
    pass


@dataclass
class RunStarted(Event):
    title: str
    run_dir: str
    iteration: int
    step: str
    dry_run: bool
    auto: bool


@dataclass
class IterationStarted(Event):
    iteration: int


@dataclass
class StepStarted(Event):
    iteration: int
    step: str
    title: str
    baseline: bool = False


@dataclass
class StepFinished(Event):
    iteration: int
    step: str
    seconds: float
    summary: str = ""


@dataclass
class Progress(Event):
    """Progress of the running step in its own unit (images, epochs, batches)."""

    step: str
    done: int
    total: int
    unit: str
    detail: str = ""


@dataclass
class EpochEnd(Event):
    epoch: int
    epochs: int
    metrics: dict = field(default_factory=dict)


@dataclass
class Message(Event):
    """A console line such as '[CONVERGENCE] Continue training: ...'."""

    text: str
    level: str = "info"


@dataclass
class MetricsRow(Event):
    """One convergence CSV row (the dashboard's metrics table and plots)."""

    row: dict


@dataclass
class ReviewRequired(Event):
    info: dict


@dataclass
class RunFinished(Event):
    reason: str
    final_f1: float | None
    iterations: int


@dataclass
class RunPaused(Event):
    iteration: int
    step: str
    resume_command: str
    reason: str


@dataclass
class RunFailed(Event):
    iteration: int
    step: str
    message: str
    resume_command: str


class EventBus:
    """Fan-out of events to subscribers (called on the emitting thread; the TUI marshals to its own)."""

    def __init__(self) -> None:
        self._subs: list[Callable[[Event], Any]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[Event], Any]) -> None:
        with self._lock:
            self._subs.append(fn)

    def emit(self, ev: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for fn in subs:
            fn(ev)

    def message(self, text: str, level: str = "info") -> None:
        self.emit(Message(text, level))
