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
