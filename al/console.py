"""Headless front end: plain log lines in seed 004's wording, and Enter-to-continue review on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from al.events import (STEPS, EpochEnd, Event, IterationStarted, Message, Progress, RunFailed, RunFinished,
                       RunPaused, RunStarted, StepFinished, StepStarted)

BAR = "=" * 80
log = logging.getLogger("al")


class ConsolePrinter:
    """Turns core events into lines on `out` (and the run's log file through the 'al' logger)."""

    def __init__(self, out: TextIO | None = None, progress_every: float = 10.0):
        self.out = out or sys.stdout
        self.progress_every = progress_every
        self._last_progress = 0.0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)
        for line in text.splitlines():
            log.info(line)

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            self.say(f"{BAR}\n{ev.title}\n{BAR}\n[INIT] Run directory: {ev.run_dir}\n"
                     f"[INIT] Dry-run mode: {ev.dry_run}  Auto mode: {ev.auto}\n"
                     f"[INIT] Starting at iteration {ev.iteration}, step '{ev.step}'")
        elif isinstance(ev, IterationStarted):
            self.say(f"[ITERATION {ev.iteration}] Starting...")
        elif isinstance(ev, StepStarted):
            if ev.step == "retrain" and ev.baseline:
                self.say(f"[BASELINE] {ev.title}...")
            else:
                self.say(f"[STEP {STEPS.index(ev.step) + 1}/7] {ev.title}...")
        elif isinstance(ev, StepFinished):
            log.info("step %s of iteration %d finished in %.1f s", ev.step, ev.iteration, ev.seconds)
        elif isinstance(ev, Message):
            self.say(ev.text)
        elif isinstance(ev, EpochEnd):
            m = ev.metrics
            self.say(f"[TRAIN] epoch {ev.epoch}/{ev.epochs}  mAP50={m.get('metrics/mAP50(B)', 0):.4f}  "
                     f"mAP50-95={m.get('metrics/mAP50-95(B)', 0):.4f}")
        elif isinstance(ev, Progress):
            now = time.monotonic()
            if ev.unit == "images" and (ev.done == ev.total or now - self._last_progress >= self.progress_every):
                self._last_progress = now
                self.say(f"[{ev.step.upper()}] {ev.done}/{ev.total} {ev.unit}")
        elif isinstance(ev, RunPaused):
            if ev.reason == "awaiting review":
                self.say(f"[PAUSED] Iteration {ev.iteration} is awaiting review; the state is saved.\n"
                         f"[PAUSED] When the reviewed dataset is exported, continue with:\n  {ev.resume_command}")
            else:
                self.say(f"[INTERRUPTED] Stopped at iteration {ev.iteration} (step '{ev.step}')\n"
                         f"[INTERRUPTED] Resume with: {ev.resume_command}")
        elif isinstance(ev, RunFailed):
            self.say(f"[ERROR] Iteration {ev.iteration}, step '{ev.step}': {ev.message}\n"
                     f"[ERROR] The run is saved; after fixing the cause, resume with: {ev.resume_command}")
        elif isinstance(ev, RunFinished):
            f1 = "n/a" if ev.final_f1 is None else f"{ev.final_f1:.4f}"
            self.say(f"{BAR}\nACTIVE LEARNING COMPLETE\n{BAR}\nReason: {ev.reason}\nFinal F1: {f1}\n"
                     f"Total iterations: {ev.iterations}")


def wait_for_enter(info: dict) -> bool:
    """Terminal review: True when the human pressed Enter, False on Ctrl+C / end of input (run pauses)."""
    try:
        input("When ready to continue training, press ENTER...\n(or Ctrl+C to exit)\n")
        return True
    except (KeyboardInterrupt, EOFError):
        print()
        return False
