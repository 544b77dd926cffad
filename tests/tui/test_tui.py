"""The TUI driven by Pilot: the dashboard fills from core events, review (with the real review step), errors, quit."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from al.app.api import STEPS
from al.core import store
from al.core.config import load_config
from al.core.context import StepContext
from al.core.events import (
    EpochEnd,
    GateVerdict,
    IterationStarted,
    Message,
    MetricsRow,
    Progress,
    ReviewRequired,
    RunFailed,
    RunStarted,
    StepFinished,
    StepStarted,
)
from al.core.paths import RunPaths
from al.core.state import RunState
from al.data import dataset
from al.frontends.tui.app import LoopApp
from al.frontends.tui.modals import ConfirmScreen, ErrorScreen
from al.frontends.tui.review import ReviewScreen
from al.frontends.tui.widgets import (
    ClassPlot,
    LogPane,
    MetricsTable,
    StepProgress,
    StepTimeline,
)
from tests.conftest import make_config, step_context

SIZE = (120, 40)
NAMES = ["zero", "one", "two"]


def pilot(fn):
    """Run an async Pilot test with asyncio.run (no async pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


# ---- helpers shared with the other test_tui* files ---------------------------------------------------------------
def make_ctx(tmp_path: Path, state: RunState | None = None, **al_cfg) -> StepContext:
    """A real StepContext on a config whose files need not exist (the TUI only reads run_dir and target_f1)."""
    cfg_file = tmp_path / "al_config.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "run_dir": "run", "dataset": {"data_yaml": "data/data.yaml", "combined_dir": "combined"},
        "active_learning": {"target_f1": 0.9, "review_source": "manual", **al_cfg}}))
    cfg = load_config(cfg_file, check_files=False)
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    return step_context(cfg, state)


def start_event(ctx: StepContext, run_dir: str = "/runs/demo") -> RunStarted:
    return RunStarted("ACTIVE LEARNING LOOP - yolov8n.yaml (detect)", run_dir, ctx.state.iteration, ctx.state.step,
                      True, False)


def metrics_row(k: int, f1: float, converged: bool = False) -> dict:
    """A convergence row as the converge step emits it."""
    return {"iteration": k, "precision": round(f1 + 0.05, 4), "recall": round(f1 - 0.05, 4), "f1": f1,
            "map50": round(f1 * 0.9, 4), "map50_95": round(f1 * 0.6, 4), "tp": 100 + 20 * k, "fp": 30 - 5 * k,
            "fn": 60 - 15 * k, "train_f1": round(f1 + 0.03, 4), "test_map50": None, "test_map50_95": None,
            "test_f1": None, "labelled_images": 160 + 40 * k, "val_images": 160 - 40 * k,
            "dataset_version": f"ver{k:07d}",
            "per_class_f1": json.dumps({n: round(f1 - 0.1 * i, 4) for i, n in enumerate(NAMES)}),
            "per_class_fn": json.dumps({n: 10 + 5 * i - 2 * k for i, n in enumerate(NAMES)}),
            "converged": int(converged),
            "reason": ("Maximum iterations reached: 3" if converged else
                       f"Continue training: F1={f1:.4f}, target=0.9000"),
            "decision_set": "test", "decision_images": 120, "decision_f1": round(f1 - 0.02, 4), "champion": 0,
            "promoted": int(k == 0)}


def gate_verdict(k: int) -> GateVerdict:
    """Iteration k's gate: iteration 0 is champion; later challengers gain F1 but lose one class (rejected)."""
    if k == 0:
        return GateVerdict(iteration=0, challenger=0, champion_before=None, champion_after=0, promoted=True,
                           metric="f1", challenger_value=0.4, champion_value=None, delta=None, ci_low=None,
                           ci_high=None, confidence=0.95, decision_set="test", decision_images=120,
                           reason="the first model measured on the decision set is the champion")
    return GateVerdict(iteration=k, challenger=k, champion_before=0, champion_after=0, promoted=False, metric="f1",
                       challenger_value=0.59, champion_value=0.4, delta=0.19, ci_low=0.12, ci_high=0.26,
                       confidence=0.95, alarms=[NAMES[1]], per_class_delta={n: 0.1 for n in NAMES} | {NAMES[1]: -0.14},
                       max_class_drop=0.1, decision_set="test", decision_images=120,
                       reason=f"AP50-95 of '{NAMES[1]}' -0.1400 dropped by more than 0.1000")


def dashboard_events() -> list:
    """Baseline training, two full iterations, and a third one validating."""
    evs: list = [StepStarted(0, "retrain", "Training baseline model", baseline=True)]
    for e in (1, 2):
        evs += [Progress("retrain", b, 8, "batches", f"epoch {e}/2") for b in (2, 4, 8)]
        evs += [EpochEnd(e, 2, {"metrics/mAP50(B)": 0.1 * e, "metrics/mAP50-95(B)": 0.05 * e}),
                Progress("retrain", e, 2, "epochs")]
    evs.append(StepFinished(0, "retrain", 42.0))
    for k, f1 in enumerate((0.42, 0.61)):
        evs.append(IterationStarted(k))
        for s in STEPS:
            evs.append(StepStarted(k, s, f"{s} title"))
            if s == "validate":
                evs += [Progress("validate", i, 40, "images") for i in (10, 20, 40)] + [gate_verdict(k)]
            if s == "converge":
                evs += [MetricsRow(metrics_row(k, f1)), Message(f"[CONVERGENCE] Continue training: F1={f1:.4f}")]
            evs.append(StepFinished(k, s, 1.5 + STEPS.index(s)))
    evs += [IterationStarted(2), StepStarted(2, "validate", "Validating model"),
            Progress("validate", 30, 120, "images"), Message("[TEST] events sent")]
    return evs


def wait_until(cond, timeout: float) -> bool:
    """Poll `cond` until it holds or `timeout` seconds pass (the runner's side of a quit)."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def replay(events: list, then_wait: bool = True):
    """A runner that emits `events` on the bus, then waits for a quit (returns 130) like the real one."""

    def runner(ctx: StepContext) -> int:
        for ev in events:
            ctx.ui.emit(ev)
        if then_wait:
            wait_until(ctx.ui.stop_requested, 30)
            return 130
        return 0

    return runner


def text_of(widget) -> str:
    """What the widget shows on screen, as plain text (borders included)."""
    from textual.geometry import Region

    w, h = widget.outer_size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, w, h)))


def log_text(app: LoopApp) -> str:
    return "\n".join(strip.text for strip in app.query_one(LogPane).lines)


async def wait_for(pilot, cond, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until cond() holds (events come from another thread)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)
    await pilot.pause()


# ---- dashboard -----------------------------------------------------------------------------------------------
@pilot
async def test_dashboard_fills_from_core_events(tmp_path):
    ctx = make_ctx(tmp_path)
    app = LoopApp(ctx, start_event(ctx), runner=replay(dashboard_events()), clock=lambda: 100.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="the events")
        tl = app.query_one(StepTimeline).timeline
        assert tl.iteration == 2 and tl.rows["validate"].state == "running"
        assert all(tl.rows[s].state == "waiting" for s in STEPS[1:])
        assert tl.baseline is None  # iteration 2 has no baseline row
        table = app.query_one(MetricsTable)
        assert table.row_count == 2
        assert [str(c) for c in table.get_row("1")[:4]] == ["1", "0.660", "0.560", "0.610"]
        assert table.get_row("1")[-2:] == ["200", "ver0000001"]
        assert [str(c) for c in table.get_row("1")[-4:-2]] == ["0.590", "0 ✗"]  # decision F1; champion kept
        gate = str(app.query_one("#gate").render())
        assert "Champion 0 vs challenger 1 on test (120 images)" in gate and "REJECTED" in gate
        assert "\u0394 +0.1900 [95% CI +0.1200, +0.2600] \u2192 REJECTED" in gate
        assert "ALARM 'one' AP50-95 -0.1400" in gate
        assert "[GATE] ALARM: class 'one' AP50-95 -0.1400" in log_text(app)
        prog = app.query_one(StepProgress)
        assert str(prog.query_one("#progress-detail").render()) == "30/120 images"
        log = log_text(app)
        assert "[BASELINE] Training baseline model..." in log and "[TRAIN] epoch 2/2  mAP50=0.2000" in log
        assert "[STEP 3/7] converge title..." in log
        assert "Continue training: F1=0.6100" in str(app.query_one("#verdict").render())
        assert "RUNNING" in str(app.query_one("#status").render())
        plot = app.query_one(ClassPlot)
        assert plot.mode == "f1" and plot.border_title == "F1 per class, iteration 1"
        await pilot.press("p")
        assert plot.mode == "fn" and plot.border_title == "FN per class, iteration 1"


@pilot
async def test_timeline_durations_and_skipped_steps(tmp_path):
    ctx = make_ctx(tmp_path)
    evs = [IterationStarted(3), StepStarted(3, "validate", "v"), StepFinished(3, "validate", 12.34),
           StepStarted(3, "converge", "c"), MetricsRow(metrics_row(3, 0.95, converged=True)),
           StepFinished(3, "converge", 0.5), StepStarted(3, "track", "t"), Message("[TEST] events sent")]
    app = LoopApp(ctx, start_event(ctx), runner=replay(evs), clock=lambda: 100.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="the events")
        rows = app.query_one(StepTimeline).timeline.rows
        assert [rows[s].state for s in STEPS] == ["done", "skipped", "done", "skipped", "skipped", "skipped",
                                                  "running"]
        assert rows["validate"].seconds == 12.34
        shown = text_of(app.query_one(StepTimeline))
        assert "12 s" in shown and "skipped" in shown
        assert "STOP" in str(app.query_one("#verdict").render())


@pilot
async def test_progress_bar_units_and_eta(tmp_path):
    ctx = make_ctx(tmp_path)
    now = [0.0]
    gate = threading.Event()
    evs = [StepStarted(0, "retrain", "Retraining model"), Progress("retrain", 1, 10, "batches", "epoch 1/3")]

    def runner(c):
        for ev in evs:
            c.ui.emit(ev)
        gate.wait(10)
        c.ui.emit(Progress("retrain", 3, 10, "batches", "epoch 1/3"))
        c.ui.emit(Message("[TEST] events sent"))
        c.stop.wait(30)
        return 130

    app = LoopApp(ctx, start_event(ctx), runner=runner, clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        prog = app.query_one(StepProgress)
        await wait_for(pilot, lambda: prog.last is not None, what="first progress")
        now[0] = 4.0  # 2 batches in 4 s: 7 left -> 14 s
        gate.set()
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="second progress")
        assert str(prog.query_one("#progress-detail").render()) == "3/10 batches · epoch 1/3 · ETA 14 s (epoch)"
        assert prog.has_class("has-bar")


@pilot
async def test_history_rebuilt_from_disk_on_resume(tmp_path):
    state = RunState(iteration=2, step="extract", baseline=False, timings={"2": {"validate": 3.0, "analyze": 1.0,
                                                                                  "converge": 0.2}})
    ctx = make_ctx(tmp_path, state)
    from al.steps.converge import COLUMNS

    rows = [metrics_row(k, f1) for k, f1 in enumerate((0.4, 0.5, 0.6, 0.7))]  # row 3 is stale (re-run from 2)
    store.write_csv(ctx.env.paths.convergence_csv, rows, COLUMNS)
    app = LoopApp(ctx, start_event(ctx), runner=replay([Message("[TEST] events sent")]), clock=lambda: 100.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="start")
        table = app.query_one(MetricsTable)
        assert table.row_count == 3 and str(table.get_row("2")[3]) == "0.600"
        tl = app.query_one(StepTimeline).timeline
        assert [tl.rows[s].state for s in STEPS[:4]] == ["done", "done", "done", "waiting"]
        assert "Continue training: F1=0.6000" in str(app.query_one("#verdict").render())


# ---- quit and errors -----------------------------------------------------------------------------------------
@pilot
async def test_quit_asks_then_stops_runner_and_returns_its_code(tmp_path):
    ctx = make_ctx(tmp_path)
    app = LoopApp(ctx, start_event(ctx), runner=replay([Message("[TEST] events sent")]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="start")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen) and not ctx.ui.stop_requested()
        await pilot.press("n")  # keep running
        assert not isinstance(app.screen, ConfirmScreen) and not ctx.ui.stop_requested()
        await pilot.press("ctrl+c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert ctx.ui.stop_requested() and app.return_value == 130


@pilot
async def test_run_failed_opens_error_modal_and_run_stays_resumable(tmp_path):
    ctx = make_ctx(tmp_path)
    cmd = "python al_loop.py --config cfg.yaml --resume"
    evs = [IterationStarted(0), StepStarted(0, "validate", "Validating model"),
           RunFailed(0, "validate", "Model not found: best.pt. Run with --start-iteration 0.", cmd)]

    def runner(c):
        for ev in evs:
            c.ui.emit(ev)
        return 1

    app = LoopApp(ctx, start_event(ctx), runner=runner)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), what="the error modal")
        assert "Model not found: best.pt" in str(app.screen.query_one("#error-message").render())
        assert str(app.screen.query_one("#resume-command").render()) == cmd
        await wait_for(pilot, lambda: app.code == 1, what="the runner to end")
        await pilot.press("escape")
        assert not isinstance(app.screen, ErrorScreen)
        assert app.query_one(StepTimeline).timeline.rows["validate"].state == "failed"
        assert "FAILED" in str(app.query_one("#status").render())
        await pilot.press("e")  # reopen the last error
        assert isinstance(app.screen, ErrorScreen)
        await pilot.press("escape", "q")  # the runner is done: q leaves at once with its code
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert app.return_value == 1


@pilot
async def test_runner_crash_is_shown_not_swallowed(tmp_path):
    from al.frontends.logfile import LogFile

    ctx = make_ctx(tmp_path)
    log = ctx.env.paths.events_log

    def runner(c):
        raise RuntimeError("boom in the core")

    logfile = LogFile(log)
    try:
        app = LoopApp(ctx, start_event(ctx), runner=runner, sinks=[logfile])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), what="the error modal")
            shown = str(app.screen.query_one("#error-message").render())
            assert "RuntimeError: boom in the core" in shown and f"Full traceback in the log pane and {log}" in shown
            assert app.code == 1
    finally:
        logfile.close()
    text = log.read_text()  # what the dialog promises
    assert "ERROR The loop stopped on an unexpected error" in text and "Traceback (most recent call last)" in text
    assert "RuntimeError: boom in the core" in text


@pilot
async def test_step_crash_traceback_reaches_the_log_file(tmp_path):
    """A bug in a step: the machine logs it with its traceback on the 'al' logger; in a TUI run with the CLI's
    LogFile as a sink that lands in al_loop.log, which the error dialog names."""
    from al.core import machine
    from al.frontends.logfile import LogFile

    ctx = make_ctx(tmp_path)
    log = ctx.env.paths.events_log

    def boom(c):
        raise RuntimeError("boom in a step")

    logfile = LogFile(log)
    try:
        app = LoopApp(ctx, start_event(ctx), runner=lambda c: machine.run(c, {s: boom for s in STEPS}),
                      sinks=[logfile])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), what="the error modal")
            shown = str(app.screen.query_one("#error-message").render())
            await wait_for(pilot, lambda: app.code == 1, what="the runner to end")
    finally:
        logfile.close()
    assert f"RuntimeError: boom in a step (full traceback in {log})" in shown
    text = log.read_text()
    assert "ERROR step retrain failed" in text and "Traceback (most recent call last)" in text
    assert "in boom" in text and "RuntimeError: boom in a step" in text
    assert "[ERROR] Iteration 0, step 'retrain': RuntimeError: boom in a step" in text


# ---- review with the real review step (al.core.machine.run; no training involved) ------------------------------------
def _image(path: Path, seed: int, boxes: int) -> str:
    """A small real JPEG (distinct content per seed) with `boxes` YOLO labels beside it."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    lbl = dataset.label_path(path)
    lbl.parent.mkdir(parents=True, exist_ok=True)
    lbl.write_text("".join(f"{i % len(NAMES)} 0.5 0.5 0.2 0.2\n" for i in range(boxes)))
    return str(path.resolve())


def review_run(tmp_path: Path, export: str) -> StepContext:
    """A run paused before the manual review of iteration 0 (local backend). export: 'none', 'same' (the training
    set only) or 'new' (the training set plus the two picked images), as a YOLO dataset in dataset.combined_dir."""
    data = tmp_path / "data"
    train = [_image(data / "images" / "train" / f"t{i}.jpg", i, 2) for i in range(4)]
    val = [_image(data / "images" / "val" / f"v{i}.jpg", 100 + i, 3) for i in range(4)]
    state = RunState(iteration=0, step="review", baseline=False)
    ctx = make_ctx(tmp_path, state)
    ctx.env.cfg.review.local.thumbnails = False
    ctx.env.cfg.review.local.make_zip = False
    dataset.write_snapshot(ctx.env.paths.dataset_version(0), NAMES, {"train": train, "val": val, "test": []},
                           {"version": 0, "names": NAMES, "parent": None, "origin": "config"})
    store.write_json(ctx.env.paths.validation(0), {"iteration": 0, "names": NAMES, "images": [
        {"image": v, "width": 32, "height": 32, "gt": [], "pred": [[0, 0.9, 4.0, 4.0, 12.0, 12.0]]} for v in val]})
    crop = str(ctx.env.paths.fn_crops(0) / "v0_fn0_zero.jpg")
    picks = [{"image": v, "score": 0.8 - 0.1 * i, "components": {"class_balance": 0.5, "size_diversity": 0.25,
                                                                 "spatial_diversity": 1.0, "uncertainty": 0.1},
              "reasons": [f"fn small 'zero' at edge (difficulty 0.{i + 3})"],
              "errors": [{"kind": "fn", "size": "small", "class_name": "zero", "position": "edge", "crop": crop}]}
             for i, v in enumerate(val[:2])]
    store.write_json(ctx.env.paths.hard_examples(0), {"iteration": 0, "source": "val", "strategy": "fn_weighted",
                                                  "weights": {}, "candidates": 4, "picks": picks})
    state.save(ctx.env.paths)
    if export != "none":
        comb = ctx.env.cfg.dataset.combined_dir
        for p in train + (val[:2] if export == "new" else []):
            src = Path(p)
            for f in (src, dataset.label_path(src)):
                dst = comb / f.parent.parent.name / "train" / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(f.read_bytes())
        (comb / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train",
                                                        "val": "images/train", "names": NAMES}))
    return ctx


def stop_after_review(app: LoopApp) -> None:
    """Stop the real machine once review is done (so the test does not train)."""
    app.ctx.ui.sinks.append(lambda ev: app.stop_runner() if isinstance(ev, StepFinished) and ev.step == "review"
                            else None)


@pilot
async def test_review_enter_continues_with_changed_dataset(tmp_path, monkeypatch):
    from al.app.api import run_loop as run

    logged: list[str] = []
    orig = LogPane.add
    monkeypatch.setattr(LogPane, "add", lambda self, text, level="info": (logged.append(text), orig(self, text,
                                                                                                    level)))
    ctx = review_run(tmp_path, "new")
    app = LoopApp(ctx, start_event(ctx), runner=run)
    stop_after_review(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        screen = app.screen
        assert screen.query_one("#picks").row_count == 2
        assert "v0_fn0_zero.jpg" in str(screen.query_one("#pick-detail").render())
        await wait_for(pilot, lambda: screen.preview is not None, what="the import preview")
        pv = screen.preview
        assert (pv.added_images, pv.added_boxes, pv.removed_from_val, pv.duplicates_dropped) == (2, 6, 2, 4)
        assert pv.changed and "+2 images, +6 boxes" in str(screen.query_one("#preview").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert app.return_value == 130  # stopped by the test right after review
    review = store.read_json(ctx.env.paths.review(0))
    assert review["mode"] == "manual" and review["added_images"] == 2
    assert any(t.startswith("[REVIEW] Continuing: +2 images, +6 boxes") for t in logged)
    assert any("[REVIEW] 2 images added" in t for t in logged)  # the core's own summary of the import


@pilot
async def test_review_screen_shows_the_pick_and_its_crops_as_pictures(tmp_path):
    from PIL import Image

    from al.app.api import run_loop as run
    from al.frontends.tui.images import TerminalImage, mode

    ctx = review_run(tmp_path, "none")
    crop = ctx.env.paths.fn_crops(0) / "v0_fn0_zero.jpg"  # the first pick's crop; the second pick's stays missing
    crop.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), (250, 20, 20)).save(crop)
    app = LoopApp(ctx, start_event(ctx), runner=run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        box = app.screen.query_one("#pick-images")
        await wait_for(pilot, lambda: len(box.query(".picture")) == 2, what="the pick and its crop as pictures")
        assert all(isinstance(w, TerminalImage) for w in box.query(".picture"))
        assert [w.border_title for w in box.query(".picture")] == ["pick", "FN zero"]
        crop.unlink()  # the second pick's crop is missing: it becomes a line of text
        await pilot.press("down")
        await wait_for(pilot, lambda: len(box.query(".picture-missing")) == 1, what="the missing crop's line")
        assert "v0_fn0_zero.jpg (file not found)" in str(box.query_one(".picture-missing").render())
        assert len(box.query(".picture")) == 1
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert mode() == "unicode"  # no terminal under pytest: textual-image's Unicode fallback


@pilot
async def test_review_q_quits_leaving_awaiting_review(tmp_path):
    from al.app.api import run_loop as run

    ctx = review_run(tmp_path, "none")
    app = LoopApp(ctx, start_event(ctx), runner=run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert app.return_value == 0
    saved = store.read_json(ctx.env.paths.state)
    assert saved["step"] == "awaiting_review" and saved["review_pending"]
    assert not ctx.env.paths.review(0).exists()


@pilot
async def test_resume_shows_the_review_screen_before_importing(tmp_path):
    from al.app.api import run_loop as run

    ctx = review_run(tmp_path, "new")
    app = LoopApp(ctx, start_event(ctx), runner=run)
    async with app.run_test(size=SIZE) as pilot:  # the first request: the human leaves with q
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert ctx.state.step == "awaiting_review"

    app = LoopApp(ctx, start_event(ctx), runner=run)  # --resume
    stop_after_review(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen on resume")
        assert not ctx.env.paths.review(0).exists()  # shown before anything was imported
        screen = app.screen
        await wait_for(pilot, lambda: screen.preview is not None, what="the import preview")
        assert screen.preview.added_images == 2
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert store.read_json(ctx.env.paths.review(0))["added_images"] == 2


@pilot
async def test_review_unchanged_dataset_asks_before_continuing(tmp_path):
    from al.app.api import run_loop as run

    ctx = review_run(tmp_path, "same")
    app = LoopApp(ctx, start_event(ctx), runner=run)
    stop_after_review(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert app.screen.tag == "unchanged"
        assert "adds no new images" in str(app.screen.query_one("#dialog-body").render())
        await pilot.press("n")  # back to the review screen; the runner still waits
        assert isinstance(app.screen, ReviewScreen) and app.running
        assert "+0 images" in str(app.screen.query_one("#preview").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation again")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert store.read_json(ctx.env.paths.review(0))["added_images"] == 0


@pilot
async def test_review_event_without_waiter_shows_paused_status(tmp_path):
    """Non-interactive core (no wait_for_review call): the run pauses and the dashboard says so."""
    ctx = make_ctx(tmp_path)
    from al.core.events import RunPaused

    evs = [IterationStarted(0), StepStarted(0, "review", "Manual review required"),
           ReviewRequired({"iteration": 0, "hard_examples": 3, "picks": []}),
           RunPaused(0, "review", "python al_loop.py --config c.yaml --resume", "awaiting review")]
    app = LoopApp(ctx, start_event(ctx), runner=replay(evs, then_wait=False))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.code == 0, what="the runner to end")
        assert "AWAITING REVIEW" in str(app.query_one("#status").render())
        assert app.query_one(StepTimeline).timeline.rows["review"].state == "paused"
        assert app.return_value is None  # stays open on the final status until q
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert app.return_value == 0


@pytest.mark.parametrize("flood", [2000])
@pilot
async def test_progress_flood_is_coalesced(tmp_path, flood):
    ctx = make_ctx(tmp_path)
    evs = [StepStarted(0, "validate", "Validating model")] + \
          [Progress("validate", i, flood, "images") for i in range(1, flood + 1)] + [Message("[TEST] events sent")]
    app = LoopApp(ctx, start_event(ctx), runner=replay(evs))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="the flood")
        await wait_for(pilot, lambda: app.query_one(StepProgress).last.done == flood, what="the last progress")
        assert app.events_seen < flood  # many Progress events were folded into one update


@pilot
async def test_review_arriving_during_quit_question_waits_for_the_answer(tmp_path):
    ctx = make_ctx(tmp_path)
    gate, answers = threading.Event(), []
    info = {"iteration": 0, "hard_examples": 0, "picks": [], "combined_dir": None, "fn_crops": "fn_crops",
            "steps": []}

    def runner(c):
        c.ui.emit(Message("[TEST] events sent"))
        gate.wait(10)
        answers.append(c.ui.wait_for_review(info))
        return 0  # like the core: a refused review pauses the run

    app = LoopApp(ctx, start_event(ctx), runner=runner)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "[TEST] events sent" in log_text(app), what="start")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        gate.set()  # the review request arrives while the quit question is open
        await wait_for(pilot, lambda: app._deferred_review is not None, what="the deferred review")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep running: now the review screen comes up
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        await pilot.press("q")  # quit from review: the runner gets False
        await wait_for(pilot, lambda: answers == [False], what="the answer")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")
    assert app.return_value == 0


# ---- al_loop.log in a TUI run: the CLI hands its LogFile to the TUI as a sink ------------------------------------
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (.*)$")


def _logged(path: Path) -> list[str]:
    """al_loop.log's messages, without their time and level."""
    return [m.group(1) for m in map(_LOG_LINE.match, path.read_text(encoding="utf-8").splitlines()) if m]


@pilot
async def test_log_file_holds_the_lines_the_tui_showed(tmp_path, tiny_data, monkeypatch):
    """A real dry run as al/cli.py starts it in a terminal (open_run through Tee(early, logfile), then the TUI with
    sinks=[logfile]): q at the review leaves it awaiting review; after the export, --resume imports and the run
    completes. Every line the log pane showed is in al_loop.log, in the same order."""
    from al.app.api import open_run
    from al.app.api import run_loop as run
    from al.cli import Buffer
    from al.core.context import Tee
    from al.frontends.logfile import LogFile

    shown: list[str] = []
    orig = LogPane.add
    monkeypatch.setattr(LogPane, "add", lambda self, text, level="info": (shown.extend(text.splitlines()),
                                                                           orig(self, text, level)))
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__review_source="manual"))
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)

    async def session(resume: bool) -> int:
        logfile = LogFile(paths.events_log)
        try:
            early = Buffer()
            ctx = open_run(cfg, resume=resume, dry_run=True, ui=Tee(early, logfile))
            start = RunStarted("ACTIVE LEARNING LOOP - test", str(paths.root), ctx.state.iteration,
                               ctx.state.current_step, True, False)
            app = LoopApp(ctx, start, runner=run, sinks=[logfile], early=early.events)
            async with app.run_test(size=SIZE) as pilot:
                if not resume:
                    await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), timeout=120,
                                   what="the review screen")
                    await pilot.press("q")
                else:  # --resume shows the review screen again before importing: Enter continues
                    await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), timeout=120,
                                   what="the review screen on resume")
                    await pilot.press("enter")
                    await wait_for(pilot, lambda: app.code is not None, timeout=120, what="the run to end")
                    await pilot.press("q")
                await wait_for(pilot, lambda: app.return_value is not None, timeout=60, what="exit")
            return app.return_value
        finally:
            logfile.close()

    assert await session(resume=False) == 0
    assert store.read_json(paths.state)["step"] == "awaiting_review"
    combined = cfg.dataset.combined_dir  # the human's export: the pool with its labels
    shutil.copytree(tiny_data.parent / "pool" / "images", combined / "images" / "train")
    shutil.copytree(tiny_data.parent / "pool" / "labels_hidden", combined / "labels" / "train")
    (combined / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train",
                                                        "names": ["zero", "one", "two", "three", "four"]}))
    assert await session(resume=True) == 0
    assert store.read_json(paths.state)["step"] == "done"

    logged = _logged(paths.events_log)
    for line in ("[STEP 1/7] Validating model...", "[STEP 5/7] Manual review required...", "MANUAL REVIEW REQUIRED",
                 "[PAUSED] Iteration 0 is awaiting review; the state is saved.", "[REVIEW] 16 images added",
                 "ACTIVE LEARNING COMPLETE", "[INIT] Run directory: " + str(paths.root)):
        assert any(m.startswith(line) for m in logged), line
        assert any(t.startswith(line) for t in shown), line
    it = iter(logged)
    missing = [t for t in shown if not any(m == t for m in it)]  # in order: each shown line further down the file
    assert not missing, missing[:3]
