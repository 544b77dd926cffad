"""The loop's states, its ONE transition table, and the runner that executes the current step."""

from __future__ import annotations

import logging
import time
from typing import Callable

from transitions import Machine

from al.config import ConfigError
from al.context import Context, Interrupted, StepError
from al.dataset import DatasetError
from al.detector import DetectorError
from al.events import STEP_TITLES, IterationStarted, RunFailed, RunFinished, RunPaused, StepFinished, StepStarted
from al.states import analyze, converge, extract, retrain, review, track, validate
from al.store import StoreError

log = logging.getLogger("al")

STATES = ["validate", "analyze", "converge", "extract", "review", "retrain", "track", "done", "failed"]

# The whole loop. Conditions read the run state; callbacks only persist it.
TRANSITIONS = [
    {"trigger": "next", "source": "retrain", "dest": "validate", "conditions": "is_baseline", "after": "end_baseline"},
    {"trigger": "next", "source": "retrain", "dest": "track"},
    {"trigger": "next", "source": "validate", "dest": "analyze"},
    {"trigger": "next", "source": "analyze", "dest": "converge"},
    {"trigger": "next", "source": "converge", "dest": "track", "conditions": "is_converged"},
    {"trigger": "next", "source": "converge", "dest": "extract"},
    {"trigger": "next", "source": "extract", "dest": "review"},
    {"trigger": "next", "source": "review", "dest": "retrain"},
    {"trigger": "next", "source": "track", "dest": "done", "conditions": "is_converged"},
    {"trigger": "next", "source": "track", "dest": "validate", "before": "advance_iteration"},
    {"trigger": "fail", "source": "*", "dest": "failed"},
]

STEP_FUNCS: dict[str, Callable[[Context], str]] = {
    "validate": validate.run, "analyze": analyze.run, "converge": converge.run, "extract": extract.run,
    "review": review.run, "retrain": retrain.run, "track": track.run,
}
STEP_NUMBER = {s: i for i, s in enumerate(STATES[:7], 1)}
USER_ERRORS = (StepError, DatasetError, DetectorError, StoreError, ConfigError)


class Flow:
    """The machine's model: its `step` mirrors RunState.step, persisted after every change."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.machine = Machine(model=self, states=STATES, transitions=TRANSITIONS, initial=ctx.state.step,
                               model_attribute="step", after_state_change="persist", auto_transitions=False)

    def is_baseline(self) -> bool:
        return self.ctx.state.baseline

    def is_converged(self) -> bool:
        return self.ctx.state.converged

    def end_baseline(self) -> None:
        self.ctx.state.baseline = False

    def advance_iteration(self) -> None:
        self.ctx.state.iteration += 1
        self.ctx.state.converged = False
        self.ctx.state.reason = ""

    def persist(self) -> None:
        if self.step != "failed":
            self.ctx.state.step = self.step
        self.ctx.state.save(self.ctx.paths)


def step_title(ctx: Context, step: str) -> str:
    if step == "retrain" and ctx.state.baseline:
        return "Training baseline model" if not ctx.opts.dry_run else "Building untrained baseline (dry-run mode)"
    if step == "retrain" and ctx.opts.dry_run:
        return "Skipping training (dry-run mode)"
    if step == "review":
        if ctx.opts.auto:
            return "Pseudo-labelling hard examples (--auto)"
        if ctx.cfg.active_learning.review_source == "simulated":
            return "SIMULATED review (hidden labels revealed)"
    return STEP_TITLES[step]


def resume_command(ctx: Context) -> str:
    return f"python al_loop.py --config {ctx.cfg.source_path} --resume"


def run(ctx: Context) -> int:
    """Execute steps until done, a review pause, an error or a quit. Returns the process exit code."""
    st, bus = ctx.state, ctx.bus
    flow = Flow(ctx)
    # a review that failed while importing the human's export was already past its pause: retry the import
    awaiting = st.status == "awaiting_review" or (st.status == "failed" and st.step == "review")
    st.status = "awaiting_review" if awaiting else "running"
    st.error = None
    st.save(ctx.paths)
    last_iter = None
    while flow.step not in ("done", "failed"):
        step = flow.step
        if ctx.stop.is_set():
            return _interrupted(ctx, step)
        if st.iteration != last_iter and not st.baseline:
            bus.emit(IterationStarted(st.iteration))
            last_iter = st.iteration
        bus.emit(StepStarted(st.iteration, step, step_title(ctx, step), baseline=st.baseline))
        t0 = time.perf_counter()
        try:
            trigger = STEP_FUNCS[step](ctx)
        except Interrupted:
            return _interrupted(ctx, step)
        except KeyboardInterrupt:
            ctx.stop.set()
            return _interrupted(ctx, step)
        except USER_ERRORS as e:
            return _failed(ctx, flow, step, str(e))
        except Exception as e:  # a bug or a library failure: keep the run resumable and say where to look
            log.exception("step %s failed", step)
            return _failed(ctx, flow, step, f"{type(e).__name__}: {e} (full traceback in {ctx.paths.events_log})")
        secs = time.perf_counter() - t0
        key = str(0 if (step == "retrain" and st.baseline) else st.iteration)
        st.timings.setdefault(key, {})[("baseline_train" if step == "retrain" and st.baseline else step)] = \
            round(secs, 3)
        if trigger == "pause":
            st.status = "awaiting_review"
            st.save(ctx.paths)
            bus.emit(RunPaused(st.iteration, step, resume_command(ctx), "awaiting review"))
            return 0
        st.status = "running"
        bus.emit(StepFinished(st.iteration, step, secs))
        getattr(flow, trigger)()
    if flow.step == "done":
        st.status = "done"
        st.save(ctx.paths)
        from al import store

        val = store.read_json(ctx.paths.validation(st.iteration))
        bus.emit(RunFinished(st.reason, val["overall"]["f1"], st.iteration + 1))
    return 0


def _interrupted(ctx: Context, step: str) -> int:
    ctx.state.status = "interrupted"
    ctx.state.save(ctx.paths)
    ctx.bus.emit(RunPaused(ctx.state.iteration, step, resume_command(ctx), "interrupted"))
    return 130


def _failed(ctx: Context, flow: Flow, step: str, msg: str) -> int:
    st = ctx.state
    st.status = "failed"
    st.error = msg
    st.step = step  # resume re-runs the failed step
    flow.fail()  # the machine enters 'failed'; persist() keeps st.step at the failed step
    ctx.bus.emit(RunFailed(st.iteration, step, msg, resume_command(ctx)))
    return 1
