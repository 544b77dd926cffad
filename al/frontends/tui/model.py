"""What the dashboard shows, as plain data: the step timeline, ETAs and metric rows (no Textual, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from al.app.api import STEP_TITLES, STEPS

WAITING, RUNNING, DONE, FAILED, SKIPPED, PAUSED, INTERRUPTED = (
    "waiting", "running", "done", "failed", "skipped", "paused", "interrupted")


@dataclass
class StepRow:
    step: str
    title: str
    state: str = WAITING
    seconds: float | None = None
    started: float | None = None
    """Clock time the step started (for the elapsed time of a running step)."""


@dataclass
class Timeline:
    """The seven steps of one iteration (plus the baseline training before iteration 0) and their states."""

    iteration: int | None = None
    rows: dict[str, StepRow] = field(default_factory=dict)
    baseline: StepRow | None = None

    def __post_init__(self) -> None:
        if not self.rows:
            self._fresh()

    def _fresh(self) -> None:
        self.rows = {s: StepRow(s, STEP_TITLES[s]) for s in STEPS}

    def reset(self, iteration: int) -> None:
        """A new iteration: all steps waiting. A no-op when the timeline already shows `iteration`."""
        if iteration == self.iteration:
            return
        self.iteration = iteration
        self._fresh()
        if iteration != 0:
            self.baseline = None

    def resume_at(self, iteration: int, step: str, baseline: bool, timings: dict[str, float]) -> None:
        """Opened on an existing run: steps before `step` finished earlier (skipped when they have no timing)."""
        self.iteration = iteration
        self._fresh()
        if baseline or step not in STEPS:
            if step == "retrain" and baseline:
                self.baseline = StepRow("retrain", "Training baseline model")
            return
        if iteration == 0 and "baseline_train" in timings:
            self.baseline = StepRow("retrain", "Training baseline model", DONE, timings["baseline_train"])
        for s in STEPS[:STEPS.index(step)]:
            row = self.rows[s]
            if s in timings:
                row.state, row.seconds = DONE, timings[s]
            else:
                row.state = SKIPPED

    def _row(self, step: str, baseline: bool) -> StepRow:
        if baseline:
            if self.baseline is None:
                self.baseline = StepRow("retrain", "Training baseline model")
            return self.baseline
        return self.rows[step]

    def started(self, step: str, title: str, now: float, baseline: bool = False) -> None:
        if not baseline:
            for s in STEPS[:STEPS.index(step)]:
                if self.rows[s].state == WAITING:  # converged: extract, review, retrain are not run
                    self.rows[s].state = SKIPPED
        row = self._row(step, baseline)
        row.title, row.state, row.started, row.seconds = title, RUNNING, now, None

    def running(self) -> StepRow | None:
        if self.baseline is not None and self.baseline.state == RUNNING:
            return self.baseline
        return next((r for r in self.rows.values() if r.state == RUNNING), None)

    def finished(self, step: str, seconds: float) -> None:
        row = self.running()
        if row is None or row.step != step:
            row = self.rows[step]
        row.state, row.seconds, row.started = DONE, seconds, None

    def ended(self, step: str, state: str) -> None:
        """The run stopped in `step`: failed, paused (awaiting review) or interrupted."""
        row = self.running()
        if row is None or row.step != step:
            row = self.rows.get(step)
        if row is not None:
            row.state, row.started = state, None


@dataclass
class Eta:
    """Remaining time of a counter from its rate since the counter (re)started."""

    key: tuple | None = None
    t0: float = 0.0
    d0: int = 0
    last: int = 0

    def update(self, key: tuple, done: int, total: int, now: float) -> float | None:
        if key != self.key or done < self.last:
            self.key, self.t0, self.d0 = key, now, done
        self.last = done
        if done <= self.d0 or now <= self.t0 or total <= 0:
            return None
        rate = (done - self.d0) / (now - self.t0)
        return max(total - done, 0) / rate


def fmt_secs(s: float | None) -> str:
    """1.2 s / 42 s / 3:05 / 1:02:03."""
    if s is None:
        return ""
    if s < 10:
        return f"{s:.1f} s"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _num(v) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _json(v) -> dict:
    if isinstance(v, dict):
        return v
    if not v:
        return {}
    try:
        out = json.loads(v)
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


@dataclass
class MetricRow:
    """One iteration's metrics, from a MetricsRow event (numbers) or the CSV (strings)."""

    iteration: int
    precision: float | None
    recall: float | None
    f1: float | None
    map50: float | None
    map50_95: float | None
    tp: int | None
    fp: int | None
    fn: int | None
    train_f1: float | None
    labelled_images: int | None
    dataset_version: str
    per_class_f1: dict[str, float]
    per_class_fn: dict[str, int]
    converged: bool
    reason: str
    decision_set: str = ""
    """The frozen decision set (test | val_frozen; empty in rows of a run made before the gate)."""
    decision_images: int | None = None
    decision_f1: float | None = None
    champion: int | None = None
    promoted: bool | None = None

    @classmethod
    def parse(cls, row: dict) -> MetricRow:
        def i(k):
            v = _num(row.get(k))
            return None if v is None else int(v)

        return cls(iteration=int(float(row["iteration"])), precision=_num(row.get("precision")),
                   recall=_num(row.get("recall")), f1=_num(row.get("f1")), map50=_num(row.get("map50")),
                   map50_95=_num(row.get("map50_95")), tp=i("tp"), fp=i("fp"), fn=i("fn"),
                   train_f1=_num(row.get("train_f1")), labelled_images=i("labelled_images"),
                   dataset_version=str(row.get("dataset_version") or ""),
                   per_class_f1={k: float(v) for k, v in _json(row.get("per_class_f1")).items()},
                   per_class_fn={k: int(v) for k, v in _json(row.get("per_class_fn")).items()},
                   converged=str(row.get("converged", "")).strip() in ("1", "True", "true"),
                   reason=str(row.get("reason") or ""), decision_set=str(row.get("decision_set") or ""),
                   decision_images=i("decision_images"), decision_f1=_num(row.get("decision_f1")),
                   champion=i("champion"), promoted=None if (pr := i("promoted")) is None else bool(pr))


def gate_text(ev) -> str:
    """The champion-vs-challenger panel for a GateVerdict event."""
    on = f"on {ev.decision_set} ({ev.decision_images} images)"
    if ev.champion_before is None:
        return f"Champion: iteration {ev.champion_after} {on}\n{ev.metric} {ev.challenger_value:.4f} (first model)"
    champ = "n/a" if ev.champion_value is None else f"{ev.champion_value:.4f}"
    ci = "" if ev.ci_low is None or ev.ci_high is None else \
        f" [{ev.confidence:.0%} CI {ev.ci_low:+.4f}, {ev.ci_high:+.4f}]"
    delta = "n/a" if ev.delta is None else f"{ev.delta:+.4f}"
    lines = [f"Champion {ev.champion_before} vs challenger {ev.challenger} {on}: {ev.metric} {champ} vs "
             f"{ev.challenger_value:.4f}",
             f"\u0394 {delta}{ci} \u2192 {'PROMOTED' if ev.promoted else 'REJECTED'}: champion is iteration "
             f"{ev.champion_after}"]
    if ev.alarms:
        lines.append("ALARM " + ", ".join(f"'{c}' AP50-95 {ev.per_class_delta.get(c, 0.0):+.4f}" for c in ev.alarms))
    return "\n".join(lines)


def history_on_open(rows: list[dict], iteration: int, step: str, baseline: bool) -> list[MetricRow]:
    """CSV rows still valid for a run opened at (iteration, step): earlier iterations, plus this one once its
    converge step has written it (rows of later iterations are stale after --start-iteration)."""
    if baseline:
        return []
    past_converge = step in ("extract", "review", "retrain", "track", "done")
    out = []
    for r in rows:
        try:
            m = MetricRow.parse(r)
        except (KeyError, ValueError):
            continue
        if m.iteration < iteration or (m.iteration == iteration and past_converge):
            out.append(m)
    return out
