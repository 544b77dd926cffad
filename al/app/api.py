"""The small public API the frontends use: open a run, run the loop, and the few read-only views they show.
Frontends import this and al.core only (an import-linter contract in pyproject.toml)."""

from __future__ import annotations

from al.app.session import open_run as _open_run
from al.core.config import Config
from al.core.context import Frontend, StepContext
from al.core.machine import STEP_TITLES, STEPS, interrupt

__all__ = ["STEPS", "STEP_TITLES", "open_run", "run_loop", "interrupt", "read_history", "review_block"]


def open_run(cfg: Config, *, resume: bool = False, start_iteration: int | None = None, dry_run: bool = False,
             auto: bool = False, ui: Frontend) -> StepContext:
    """The step context of this invocation (fresh, --resume or --start-iteration). Caller holds the run lock."""
    from al.yolo.service import DetectorService

    env, state = _open_run(cfg, resume=resume, start_iteration=start_iteration, dry_run=dry_run, auto=auto, ui=ui)
    return StepContext(env=env, state=state, models=DetectorService(), ui=ui)


def run_loop(ctx: StepContext) -> int:
    """Run steps until done, a review pause, an error or a quit; the process exit code."""
    from al.core import machine, store
    from al.steps import STEP_FUNCS

    def final_f1(c: StepContext) -> float | None:
        val = store.read_json(c.env.paths.validation(c.state.iteration))
        return val["overall"]["f1"]

    return machine.run(ctx, STEP_FUNCS, final_f1=final_f1)


def read_history(ctx: StepContext) -> tuple[list[dict], str | None]:
    """The convergence CSV's rows (earlier iterations' metrics), and a warning when it cannot be read."""
    from al.core import store

    path = ctx.env.paths.convergence_csv
    try:
        return store.read_csv(path), None
    except (OSError, ValueError) as e:
        return [], f"[TUI] could not read {path}: {e}"


def review_block(info: dict) -> str:
    """The console block of a review pause (also what the TUI's log shows)."""
    from al.steps.review import review_block as block

    return block(info)

