"""Snapshots (pytest-textual-snapshot) of the dashboard, the review screen and the error modal, with fixed content.

Update after an intended change with: pytest tests/tui/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path

from al.app.api import ImportPreview, preview_import
from al.core.context import Listeners
from al.core.events import IterationStarted, ReviewRequired, RunFailed, StepStarted
from al.frontends.tui import app as tui_app
from al.frontends.tui.app import LoopApp
from al.frontends.tui.modals import ErrorScreen
from al.frontends.tui.review import ReviewScreen
from al.steps import review
from tests.tui.test_tui import dashboard_events, log_text, make_ctx, replay, review_run, start_event

SIZE = (120, 40)
RUN = "/runs/demo"
FIXED = "/home/me/al"  # the review snapshot's temporary folder, as shown


async def _until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def review_at_pause(tmp_path: Path) -> tuple[dict, ImportPreview]:
    """What the real review step hands the review screen when it pauses, and what al.app.api.preview_import then
    reports: iteration 0 of tests/tui/test_tui.py's review_run (local backend, a YOLO export holding the two picks in
    dataset.combined_dir). The temporary folder is written as FIXED and the dataset version id (a hash of the image
    paths) as a fixed id, so that the snapshot is stable; everything else is the product's own text."""
    ctx = review_run(tmp_path, "new")
    handed: list[dict] = []
    ctx.ui = Listeners(review=lambda info: bool(handed.append(info)))  # answers "not yet": the step pauses
    assert review.run(ctx) == "pause" and len(handed) == 1
    pv = preview_import(ctx)
    assert pv.error is None and pv.added_images == 2, pv

    def fixed(value):
        if isinstance(value, str):
            for tmp in sorted({str(tmp_path), str(tmp_path.resolve())}, key=len, reverse=True):
                value = value.replace(tmp, FIXED)
            return value.replace(pv.dataset_version, "3f2a9c1d0b7e") if pv.dataset_version else value
        if isinstance(value, dict):
            return {k: fixed(v) for k, v in value.items()}
        return [fixed(v) for v in value] if isinstance(value, list) else value

    return fixed(handed[0]), ImportPreview(**fixed(asdict(pv)))


def test_dashboard_snapshot(snap_compare, tmp_path):
    ctx = make_ctx(tmp_path)
    app = LoopApp(ctx, start_event(ctx, RUN), runner=replay(dashboard_events()), clock=lambda: 100.0)

    async def ready(pilot):
        await _until(lambda: "[TEST] events sent" in log_text(app))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_review_screen_snapshot(snap_compare, tmp_path, monkeypatch):
    info, preview = review_at_pause(tmp_path / "made")
    assert any("annotation package" in step for step in info["steps"])  # the product's current instructions
    monkeypatch.setattr(tui_app, "preview_import", lambda c: preview)
    ctx = make_ctx(tmp_path)

    def runner(c):  # what the review step emits around its pause (al/steps/review.py)
        c.ui.emit(IterationStarted(0))
        c.ui.emit(StepStarted(0, "review", "Manual review required"))
        c.ui.emit(ReviewRequired(info))
        return 0 if c.ui.wait_for_review(info) else 0

    app = LoopApp(ctx, start_event(ctx, f"{FIXED}/run"), runner=runner, clock=lambda: 100.0)

    async def ready(pilot):
        await _until(lambda: isinstance(app.screen, ReviewScreen) and app.screen.preview is not None)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_error_modal_snapshot(snap_compare, tmp_path):
    ctx = make_ctx(tmp_path)
    evs = [IterationStarted(0), StepStarted(0, "validate", "Validating model"),
           RunFailed(0, "validate", f"Model not found: {RUN}/iterations/iteration_0/weights/best.pt. Iteration 0's "
                     f"model was never trained; run with --start-iteration 0 to retrain it from iteration 0.",
                     "python al_loop.py --config config/demo.yaml --resume")]
    app = LoopApp(ctx, start_event(ctx, RUN), runner=replay(evs, then_wait=False), clock=lambda: 100.0)

    async def ready(pilot):
        await _until(lambda: isinstance(app.screen, ErrorScreen) and app.code == 0)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
