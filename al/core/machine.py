"""The loop's ONE state machine: steps, the review pause, interruption, failure and the end are all states of one
transition table, and every step list the program shows is derived from it. The runner executes the current step
with step functions it is given (al.steps.STEP_FUNCS), so this module imports no step and no heavy library."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from transitions import Machine

from al.core import store
from al.core.context import StepContext
from al.core.errors import Interrupted, UserError
from al.core.events import (
    IterationStarted,
    RunFailed,
    RunFinished,
    RunPaused,
    StepFinished,
    StepStarted,
)

if TYPE_CHECKING:
    from transitions.core import TransitionConfigDict  # stub-only: not defined at run time

log = logging.getLogger("al")

# (step, title) in the order of one iteration; STEPS, the timeline and "STEP n/7" are derived from this.
STEP_TABLE = [
    ("validate", "Validating model"),
    ("analyze", "Analyzing errors"),
    ("converge", "Checking convergence"),
    ("extract", "Extracting hard examples"),
    ("review", "Manual review required"),
    ("retrain", "Retraining model"),
    ("track", "Updating tracking and plots"),
]
STEPS = [s for s, _ in STEP_TABLE]
STEP_TITLES = dict(STEP_TABLE)
STOPS = ["awaiting_review", "interrupted", "failed", "done"]
STATES = STEPS + STOPS


def _resume_into(step: str) -> TransitionConfigDict:
    """The table row that resumes a run stopped (quit or failed) in `step`."""
    return {"trigger": "resume", "source": ["interrupted", "failed"], "dest": step, "conditions": f"stopped_in_{step}",
            "after": "forget_step"}


# The whole loop. Conditions read the run state; callbacks only change and persist it.
TRANSITIONS: list[TransitionConfigDict] = [
    {"trigger": "next", "source": "retrain", "dest": "validate", "conditions": "is_baseline", "after": "end_baseline"},
    {"trigger": "next", "source": "retrain", "dest": "track"},
    {"trigger": "next", "source": "validate", "dest": "analyze"},
    {"trigger": "next", "source": "analyze", "dest": "converge"},
    {"trigger": "next", "source": "converge", "dest": "track", "conditions": "is_converged"},
    {"trigger": "next", "source": "converge", "dest": "extract"},
    {"trigger": "next", "source": "extract", "dest": "review"},
    {"trigger": "next", "source": "review", "dest": "retrain", "before": "review_done"},
    {"trigger": "next", "source": "track", "dest": "done", "conditions": "is_converged"},
    {"trigger": "next", "source": "track", "dest": "validate", "before": "advance_iteration"},
    # the review pause: the picks are with a human; resume imports what they return
    {"trigger": "pause", "source": "review", "dest": "awaiting_review", "before": "review_asked"},
    {"trigger": "resume", "source": "awaiting_review", "dest": "review"},
    # a quit or a failure remembers its step; resume goes back to it (a failed step is re-run from its start)
    {"trigger": "interrupt", "source": STEPS, "dest": "interrupted", "before": "remember_step"},
    {"trigger": "fail", "source": STEPS, "dest": "failed", "before": "remember_step"},
    *(_resume_into(s) for s in STEPS),
]

StepFn = Callable[[StepContext], str]


class Flow:
    """The machine's model. Its `step` is RunState.step; every transition is persisted."""

    # Both are set on the instance by transitions.Machine (model_attribute="step"; trigger fires an event by name).
    step: str
    trigger: Callable[..., bool]

    def __init__(self, ctx: StepContext):
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

    def review_asked(self) -> None:
        self.ctx.state.review_pending = True

    def review_done(self) -> None:
        self.ctx.state.review_pending = False

    def remember_step(self) -> None:
        self.ctx.state.stopped_at = self.step

    def forget_step(self) -> None:
        self.ctx.state.stopped_at = None

    def persist(self) -> None:
        self.ctx.state.step = self.step
        self.ctx.state.save(self.ctx.env.paths)


for _s in STEPS:
    setattr(Flow, f"stopped_in_{_s}", lambda self, _s=_s: self.ctx.state.stopped_at == _s)


def step_title(ctx: StepContext, step: str) -> str:
    opts = ctx.env.opts
    if step == "retrain" and ctx.state.baseline:
        return "Training baseline model" if not opts.dry_run else "Building untrained baseline (dry-run mode)"
    if step == "retrain" and opts.dry_run:
        return "Skipping training (dry-run mode)"
    if step == "review":
        if opts.auto:
            return "Pseudo-labelling hard examples (--auto)"
        if ctx.env.cfg.active_learning.review_source == "simulated":
            return "SIMULATED review (hidden labels revealed)"
    return STEP_TITLES[step]


def run(ctx: StepContext, steps: Mapping[str, StepFn],
        final_f1: Callable[[StepContext], float | None] = lambda ctx: None) -> int:
    """Execute steps until done, a review pause, an error or a quit. Returns the process exit code."""
    st, ui = ctx.state, ctx.ui
    flow = Flow(ctx)
    st.error = None
    if flow.step in ("awaiting_review", "interrupted", "failed"):
        if err := _fire(flow, "resume"):
            return _failed(ctx, flow, err)
    last_iter = None
    while flow.step not in STOPS:
        step = flow.step
        if ui.stop_requested():
            return _interrupted(ctx, flow)
        if st.iteration != last_iter and not st.baseline:
            ui.emit(IterationStarted(st.iteration))
            last_iter = st.iteration
        ui.emit(StepStarted(st.iteration, step, step_title(ctx, step), baseline=st.baseline))
        t0 = time.perf_counter()
        try:
            trigger = steps[step](ctx)
        except Interrupted:
            return _interrupted(ctx, flow)
        except KeyboardInterrupt:
            return _interrupted(ctx, flow)
        except UserError as e:
            return _failed(ctx, flow, e)
        except OSError as e:  # a write outside the store (a plot, a crop, a copied image): one line, no traceback
            log.debug("step %s: I/O error", step, exc_info=True)
            return _failed(ctx, flow, e)
        except Exception as e:  # a bug or a library failure: keep the run resumable and say where to look
            log.exception("step %s failed", step)
            return _failed(ctx, flow, f"{type(e).__name__}: {e} (full traceback in {ctx.env.paths.events_log})")
        secs = time.perf_counter() - t0
        key = str(0 if (step == "retrain" and st.baseline) else st.iteration)
        st.timings.setdefault(key, {})[("baseline_train" if step == "retrain" and st.baseline else step)] = \
            round(secs, 3)
        if trigger == "pause":
            if err := _fire(flow, "pause"):
                return _failed(ctx, flow, err)
            ui.emit(RunPaused(st.iteration, step, ctx.env.resume_command(), "awaiting review"))
            return 0
        ui.emit(StepFinished(st.iteration, step, secs))
        if err := _fire(flow, trigger):  # the step's work is on disk; only its state could not be saved
            return _failed(ctx, flow, err)
    if flow.step == "done":
        ui.emit(RunFinished(st.reason, final_f1(ctx), st.iteration + 1))
    return 0


def interrupt(ctx: StepContext) -> int:
    """Stop outside the runner (a KeyboardInterrupt that reached the CLI): the state says interrupted."""
    flow = Flow(ctx)
    if flow.step in STEPS:
        return _interrupted(ctx, flow)
    return 130


def _fire(flow: Flow, trigger: str) -> UserError | None:
    """Fire `trigger`. When its new state cannot be saved (a full disk, a read-only folder), the error, and
    run_state.json still holds the previous state, which --resume continues from (steps are idempotent)."""
    try:
        flow.trigger(trigger)
    except UserError as e:
        return e
    return None


def _interrupted(ctx: StepContext, flow: Flow) -> int:
    step = flow.step
    if err := _fire(flow, "interrupt"):
        ctx.ui.emit(RunFailed(ctx.state.iteration, step, f"stopped, but the state could not be saved: {err}",
                              ctx.env.resume_command(), saved=False))
        return 1
    ctx.ui.emit(RunPaused(ctx.state.iteration, step, ctx.env.resume_command(), "interrupted"))
    return 130


def _failed(ctx: StepContext, flow: Flow, error: BaseException | str) -> int:
    """Record the failure as the machine's 'failed' state, remembering the step. The failure of that save too
    is reported (saved=False), never raised: the previous state file stays valid."""
    step = flow.step
    msg = _one_line(ctx, error)
    ctx.state.error = msg
    if getattr(error, "errno", None) in store.DISK_FULL:
        store.release(ctx.env.paths.reserve)  # the ballast's room lets the failed state be written
    saved = flow.step in STEPS and _fire(flow, "fail") is None
    resume = ctx.env.resume_command() if getattr(error, "resumable", True) else None
    ctx.ui.emit(RunFailed(ctx.state.iteration, step, msg, resume, saved=saved))
    return 1


def _one_line(ctx: StepContext, error: BaseException | str) -> str:
    if isinstance(error, OSError) and not isinstance(error, UserError):
        return store.io_error_text(error.filename or ctx.env.paths.root, error)
    return str(error)
