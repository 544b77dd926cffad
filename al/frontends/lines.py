"""The one place core events become text: the console, the TUI's log pane and al_loop.log all show these lines."""

from __future__ import annotations

import time

from al.app.api import STEPS
from al.core.events import (
    EpochEnd,
    Event,
    GateVerdict,
    IterationStarted,
    Message,
    Progress,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
    StepStarted,
)

BAR = "=" * 80
DEBUG = "debug"
"""Level of lines kept in al_loop.log only (the console and the TUI do not show them)."""

Line = tuple[str, str]
"""(text, level); level is info, warning, error or debug."""


def step_label(ev: StepStarted) -> str:
    """'[BASELINE]' or '[STEP n/7]': the step's number comes from the machine's table."""
    return "[BASELINE]" if ev.step == "retrain" and ev.baseline else f"[STEP {STEPS.index(ev.step) + 1}/{len(STEPS)}]"


def render(ev: Event) -> list[Line]:
    """The lines of one event (Progress gives a line per call; ProgressFilter decides which to show)."""
    if isinstance(ev, RunStarted):
        return [(f"{BAR}\n{ev.title}\n{BAR}\n[INIT] Run directory: {ev.run_dir}\n"
                 f"[INIT] Dry-run mode: {ev.dry_run}  Auto mode: {ev.auto}\n"
                 f"[INIT] Starting at iteration {ev.iteration}, step '{ev.step}'", "info")]
    if isinstance(ev, IterationStarted):
        return [(f"[ITERATION {ev.iteration}] Starting...", "info")]
    if isinstance(ev, StepStarted):
        return [(f"{step_label(ev)} {ev.title}...", "info")]
    if isinstance(ev, StepFinished):
        return [(f"[STEP] {ev.step} of iteration {ev.iteration} finished in {ev.seconds:.1f} s", DEBUG)]
    if isinstance(ev, Message):
        return [(ev.text, ev.level)]
    if isinstance(ev, GateVerdict):
        return gate_lines(ev)
    if isinstance(ev, EpochEnd):
        m = ev.metrics
        return [(f"[TRAIN] epoch {ev.epoch}/{ev.epochs}  mAP50={m.get('metrics/mAP50(B)', 0):.4f}  "
                 f"mAP50-95={m.get('metrics/mAP50-95(B)', 0):.4f}", "info")]
    if isinstance(ev, Progress):
        return [(f"[{ev.step.upper()}] {ev.done}/{ev.total} {ev.unit}", "info")] if ev.unit == "images" else []
    if isinstance(ev, RunPaused):
        if ev.reason == "awaiting review":
            return [(f"[PAUSED] Iteration {ev.iteration} is awaiting review; the state is saved.\n"
                     f"[PAUSED] When the reviewed dataset is exported, continue with:\n  {ev.resume_command}",
                     "warning")]
        return [(f"[INTERRUPTED] Stopped at iteration {ev.iteration} (step '{ev.step}')\n"
                 f"[INTERRUPTED] Resume with: {ev.resume_command}", "warning")]
    if isinstance(ev, RunFailed):
        saved = ("The run is saved" if ev.saved else
                 "The failure could not be recorded; run_state.json keeps the last saved step")
        then = (f"after fixing the cause, resume with: {ev.resume_command}" if ev.resume_command else
                "go on with the command the error above names (--resume would stop at the same error)")
        return [(f"[ERROR] Iteration {ev.iteration}, step '{ev.step}': {ev.message}\n"
                 f"[ERROR] {saved}; {then}", "error")]
    if isinstance(ev, RunFinished):
        f1 = "n/a" if ev.final_f1 is None else f"{ev.final_f1:.4f}"
        return [(f"{BAR}\nACTIVE LEARNING COMPLETE\n{BAR}\nReason: {ev.reason}\nFinal F1: {f1}\n"
                 f"Total iterations: {ev.iterations}", "info")]
    return []


def gate_lines(ev: GateVerdict) -> list[Line]:
    """'[GATE] challenger 2 vs champion 1 on test (12 images): f1 0.5123 vs 0.4987, delta +0.0136 [95% CI -0.0200,
    +0.0450] -> PROMOTED (...)', and one warning line per class alarm."""
    on = f"on {ev.decision_set} ({ev.decision_images} images)"
    if ev.champion_before is None:
        return [(f"[GATE] iteration {ev.challenger} is the champion {on}: {ev.metric} {ev.challenger_value:.4f} "
                 f"({ev.reason})", "info")]
    verdict = "PROMOTED" if ev.promoted else "REJECTED"
    ci = (f" [{ev.confidence:.0%} CI {ev.ci_low:+.4f}, {ev.ci_high:+.4f}]"
          if ev.ci_low is not None and ev.ci_high is not None else "")
    delta = f"{ev.delta:+.4f}" if ev.delta is not None else "n/a"
    champ = f"{ev.champion_value:.4f}" if ev.champion_value is not None else "n/a"
    out: list[Line] = [(f"[GATE] challenger {ev.challenger} vs champion {ev.champion_before} {on}: {ev.metric} "
                        f"{ev.challenger_value:.4f} vs {champ}, delta {delta}{ci} -> {verdict} ({ev.reason}); "
                        f"champion: iteration {ev.champion_after}", "info" if ev.promoted else "warning")]
    out += [(f"[GATE] ALARM: class '{c}' AP50-95 {ev.per_class_delta.get(c, 0.0):+.4f} (a drop of more than "
             f"{ev.max_class_drop:.4f})", "warning") for c in ev.alarms]
    return out


class ProgressFilter:
    """Lets an image-progress line through every `every` seconds and at the end of the pass."""

    def __init__(self, every: float = 10.0, clock=time.monotonic):
        self.every = every
        self.clock = clock
        self._last = float("-inf")

    def __call__(self, ev: Event) -> bool:
        if not isinstance(ev, Progress):
            return True
        now = self.clock()
        if ev.done == ev.total or now - self._last >= self.every:
            self._last = now
            return True
        return False
