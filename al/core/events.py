"""Typed events the core emits to its frontend (al.core.context.Frontend); al.frontends.lines turns them into text."""

from __future__ import annotations

from dataclasses import dataclass, field


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
class GateVerdict(Event):
    """The promotion gate's verdict on iteration `challenger`'s model (promotion.json): the champion before it, the
    paired difference on the decision set with its bootstrap interval, and the classes that raised an alarm."""

    iteration: int
    challenger: int
    champion_before: int | None
    champion_after: int
    promoted: bool
    metric: str
    challenger_value: float
    champion_value: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    alarms: list[str] = field(default_factory=list)
    per_class_delta: dict[str, float] = field(default_factory=dict)
    max_class_drop: float = 0.0
    decision_set: str = ""
    decision_images: int = 0
    reason: str = ""


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
    resume_command: str | None
    """None when --resume would stop at the same error: the message names the command that goes on."""
    saved: bool = True
    """False when even the failed state could not be written (a full disk): run_state.json keeps the last state
    that was saved, which --resume continues from just as well."""
