"""Helpers for the review tests (a run positioned at the review step, without any model), and tests of the
review step's instructions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from al.app.session import init_dataset
from al.core import store
from al.core.config import load_config
from al.core.context import Listeners, StepContext
from al.core.events import Message
from al.core.paths import RunPaths
from al.core.state import RunState
from al.data import dataset
from al.steps import review
from tests.conftest import make_config, step_context


class Recorder:
    """Collects every event the step emits."""

    def __init__(self, bus: Listeners):
        self.events = []
        bus.subscribe(self.events.append)

    def messages(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Message)]

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]


def run_at_review(tmp_path: Path, tiny_data: Path, n_picks: int = 4, *, review_cfg: dict | None = None,
                  **overrides) -> tuple[StepContext, Recorder]:
    """A run whose iteration 0 stands at the review step: dataset version 0, a validation.json whose predictions
    are the ground truth (conf 0.9) plus one low-confidence stray box, and the first n val images as picks."""
    ov = {"active_learning__review_source": "manual", **overrides}
    if review_cfg is not None:
        ov["review"] = review_cfg
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(make_config(tmp_path, tiny_data, **ov))
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    bus = Listeners()
    rec = Recorder(bus)
    ver = init_dataset(cfg, paths, bus)
    _, splits = dataset.read_snapshot(paths.dataset_version(0))
    images = []
    for img in splits["val"]:
        h, w = cv2.imread(img).shape[:2]
        gt = dataset.read_labels(dataset.label_path(img), len(ver["names"]), w, h)
        pred = [[int(g[0]), 0.9, *[round(float(v), 2) for v in g[1:]]] for g in gt] + [[0, 0.05, 1, 1, 9, 9]]
        images.append({"image": img, "width": w, "height": h, "gt": [[int(g[0]), *g[1:].tolist()] for g in gt],
                       "pred": pred, "tp": [], "fp": [], "fn": []})
    store.write_json(paths.validation(0), {"iteration": 0, "names": ver["names"], "images": images})
    picks = [{"image": r["image"], "score": 1.0 - i / 100, "components": {}, "reasons": ["test"], "errors": []}
             for i, r in enumerate(images[:n_picks])]
    store.write_json(paths.hard_examples(0), {"iteration": 0, "source": "val", "strategy": "fn_weighted",
                                              "weights": {}, "candidates": n_picks, "picks": picks})
    state = RunState(iteration=0, step="review", baseline=False)
    ctx = step_context(cfg, state, ui=bus)
    return ctx, rec


def resume(ctx: StepContext) -> str:
    """What --resume does after a review pause."""
    ctx.state.review_pending = True
    return review.run(ctx)


def test_review_info_keeps_its_keys_and_names_the_backend(tmp_path, tiny_data):
    ctx, _ = run_at_review(tmp_path, tiny_data)
    picks = store.read_json(ctx.env.paths.hard_examples(0))["picks"]
    info = review.review_info(ctx, picks)
    assert {"iteration", "hard_examples", "fn_crops", "picks", "steps", "combined_dir"} <= set(info)
    assert info["backend"] == "local" and info["package_dir"].endswith("review_package")
    block = review.review_block({**info, "mode": "manual"})
    assert "MANUAL REVIEW REQUIRED" in block and "annotation package" in block and "returned" in block

    ctx2, _ = run_at_review(tmp_path / "rf", tiny_data, review_cfg={"backend": "roboflow",
                                                                    "roboflow": {"project": "proj"}})
    info = review.review_info(ctx2, picks)
    assert info["roboflow"]["batch"] == "al-iteration-0"
    assert any("Generate a new dataset version" in s for s in info["steps"])
    json.dumps({k: v for k, v in info.items()})  # the TUI and the request file need it serialisable


def _return_labels(ctx: StepContext) -> None:
    """The human hands the package's pre-annotations back as their labels."""
    rp = ctx.env.paths
    for f in (rp.package(0) / "labels").iterdir():
        (rp.returned(0) / f.name).write_bytes(f.read_bytes())


def test_resume_shows_the_review_block_again_before_importing(tmp_path, tiny_data):
    from al.core.events import ReviewRequired

    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=2)
    assert review.run(ctx) == "pause"  # the first request: the package is made, the run pauses
    first = rec.of(ReviewRequired)
    assert len(first) == 1 and not first[0].info.get("resumed")
    pkg = first[0].info["package_dir"]
    _return_labels(ctx)
    rec.events.clear()
    assert resume(ctx) == "next"
    shown = [i for i, e in enumerate(rec.events) if isinstance(e, ReviewRequired)]
    assert len(shown) == 1 and rec.events[shown[0]].info["resumed"]
    assert rec.events[shown[0]].info["package_dir"] == pkg  # what the first request told the human
    texts = [(i, e.text) for i, e in enumerate(rec.events) if isinstance(e, Message)]
    block = [i for i, t in texts if "MANUAL REVIEW REQUIRED" in t and "Resumed (--resume)" in t]
    imported = [i for i, t in texts if t.startswith("[REVIEW]") and "added" in t]
    assert block and imported and block[0] < imported[0]  # the block came before the import's report


def test_a_frontend_that_says_not_yet_on_resume_keeps_the_run_paused(tmp_path, tiny_data):
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=2)
    assert review.run(ctx) == "pause"
    _return_labels(ctx)
    asked: list[dict] = []
    ctx.ui = Listeners(review=lambda info: bool(asked.append(info)))  # the human looks, then leaves again
    assert resume(ctx) == "pause"
    assert asked and asked[0]["resumed"] and not ctx.env.paths.review(0).exists()
    assert not (ctx.env.paths.dataset_version(1) / "version.json").exists()
