"""Snapshots (pytest-textual-snapshot) of the dashboard, the review screen and the error modal, with fixed content.

Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import asyncio

from al.app.api import ImportPreview
from al.core.events import IterationStarted, ReviewRequired, RunFailed, StepStarted
from al.frontends.tui import app as tui_app
from al.frontends.tui.app import LoopApp
from al.frontends.tui.modals import ErrorScreen
from al.frontends.tui.review import ReviewScreen
from tests.test_tui import dashboard_events, log_text, make_ctx, replay, start_event

SIZE = (120, 40)
RUN = "/runs/demo"


async def _until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def review_info() -> dict:
    it = f"{RUN}/iterations/iteration_1"
    picks = []
    for i, (name, cls) in enumerate((("val_00020.jpg", "three"), ("val_00022.jpg", "four"), ("val_00019.jpg", "two"))):
        picks.append({"image": f"/data/demo/images/val/{name}", "score": 0.71 - 0.03 * i,
                      "components": {"class_balance": 0.69, "size_diversity": 0.58 - 0.1 * i,
                                     "spatial_diversity": 1.0, "uncertainty": 0.64 - 0.2 * i},
                      "reasons": [f"fn medium '{cls}' at corner, low contrast (difficulty 0.64)"],
                      "errors": [{"kind": "fn", "size": "medium", "class_name": cls, "position": "corner",
                                  "crop": f"{it}/error_analysis/fn_crops/{name[:-4]}_fn5_{cls}.jpg"}]})
    return {"iteration": 1, "hard_examples": len(picks), "fn_crops": f"{it}/error_analysis/fn_crops",
            "hard_examples_file": f"{it}/hard_examples.json", "combined_dir": f"{RUN}/combined", "picks": picks,
            "mode": "manual", "backend": "local", "package_dir": f"{it}/review_package",
            "returned_dir": f"{it}/review_package/returned", "import_from": f"{it}/review_package/returned",
            "backend_status": f"local annotation package {it}/review_package (3 images); return labels in "
                              f"{it}/review_package/returned",
            "steps": [f"Review false negative crops in {it}/error_analysis/fn_crops",
                      f"Review the picked images listed in {it}/hard_examples.json",
                      "Upload them to your annotation tool (Roboflow or a local tool) and annotate them",
                      f"Export the augmented dataset in YOLO format to {RUN}/combined (with its data.yaml)"]}


def test_dashboard_snapshot(snap_compare, tmp_path):
    ctx = make_ctx(tmp_path)
    app = LoopApp(ctx, start_event(ctx, RUN), runner=replay(dashboard_events()), clock=lambda: 100.0)

    async def ready(pilot):
        await _until(lambda: "[TEST] events sent" in log_text(app))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_review_screen_snapshot(snap_compare, tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path)
    # fixed paths on screen: the preview of this made-up run, as al.app.api.preview_import reports one
    preview = ImportPreview(picks=3, returned_labelled=2, negatives=1, added_images=2, added_boxes=3,
                            removed_from_val=2, source=f"YOLO labels in {RUN}/iterations/iteration_1/review_package/"
                            f"returned", dataset_version="3f2a9c1d0b7e", train_images=200)
    monkeypatch.setattr(tui_app, "preview_import", lambda c: preview)

    def runner(c):
        info = review_info()
        c.ui.emit(IterationStarted(1))
        c.ui.emit(StepStarted(1, "review", "Manual review required"))
        c.ui.emit(ReviewRequired(info))
        return 0 if c.ui.wait_for_review(info) else 0

    app = LoopApp(ctx, start_event(ctx, RUN), runner=runner, clock=lambda: 100.0)

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
