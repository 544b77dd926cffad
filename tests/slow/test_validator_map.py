"""The loop's mAP is Ultralytics' validator's: validate on a model that learned gives the mAP50 and mAP50-95 of
`YOLO(best).val(...)` on the same weights, split and settings, and the per-image records it captures from that
pass line up with the files, in original pixels, on images of several sizes and aspect ratios (docs/METRICS.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from al.core import artifacts
from al.core.config import load_config
from al.core.context import Listeners
from al.core.errors import Interrupted
from al.core.events import Progress
from al.data import dataset
from al.metrics.matching import box_iou

pytestmark = pytest.mark.slow

SIZES = [(200, 120), (90, 160), (257, 255), (96, 96)]  # every 4th image keeps the generator's 96x96


def _vary_sizes(data_yaml: Path) -> None:
    """Resize the images to several sizes and aspect ratios; the YOLO labels are normalised, so they still fit."""
    from PIL import Image

    for i, f in enumerate(sorted(data_yaml.parent.glob("images/*/*.jpg"))):
        with Image.open(f) as im:
            im.convert("RGB").resize(SIZES[i % len(SIZES)]).save(f, quality=95)


@pytest.fixture(scope="module")
def validated(tmp_path_factory, learned_baseline):
    """A run at iteration 0 whose model is the learned baseline, validated once (cwd: an empty folder)."""
    from al.app.api import open_run
    from benchmarks.crash_harness import Size, make_data

    work = tmp_path_factory.mktemp("validator_map")
    data = make_data(work, Size())
    _vary_sizes(data)
    cfg = {"run_dir": str(work / "run"), "dataset": {"data_yaml": str(data), "mining_source": "val"},
           "model": {"baseline": str(learned_baseline)},
           "active_learning": {"train_f1_sample": 8},
           "training": {"imgsz": 96, "batch": 8, "workers": 0, "device": "cpu"},
           "validation": {"batch": 8, "conf": 0.25, "iou": 0.5, "nms_iou": 0.7}}
    (work / "al_config.yaml").write_text(yaml.safe_dump(cfg))
    c = load_config(work / "al_config.yaml")
    bus = Listeners()
    ctx = open_run(c, resume=False, start_iteration=None, dry_run=False, auto=False, ui=bus)
    paths = ctx.env.paths
    paths.weights(0).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(learned_baseline, paths.best(0))
    ctx.state.baseline = False
    cwd = work / "cwd"
    cwd.mkdir()
    before = {p for p in work.rglob("*") if p.is_file()}
    events: list = []
    bus.subscribe(events.append)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        from al.steps import validate

        validate.run(ctx)
    finally:
        os.chdir(old)
    after = {p for p in work.rglob("*") if p.is_file()}
    return {"ctx": ctx, "paths": paths, "data": data, "work": work, "new_files": after - before, "events": list(events),
            "summary": artifacts.load_validation(paths, 0), "records": artifacts.load_validation_records(paths, 0)}


def _ultralytics_val(weights: Path, data_yaml: Path, split: str, out: Path):
    """What a user runs: `yolo val model=<weights> data=<data_yaml> split=<split> imgsz=96 batch=8 iou=0.7`."""
    from ultralytics import YOLO

    return YOLO(str(weights)).val(data=str(data_yaml), split=split, imgsz=96, batch=8, conf=0.001, iou=0.7,
                                  device="cpu", plots=False, verbose=False, project=str(out), name=split)


def test_map_equals_ultralytics_val_on_val_and_test(validated):
    s, paths = validated["summary"], validated["paths"]
    assert s.map50 > 0.02 and s.test is not None and s.test.map50 > 0.02  # a model that learned something
    for split, ours, per_class in (("val", s, s.per_class_ap), ("test", s.test, s.test.per_class_ap)):
        m = _ultralytics_val(paths.best(0), paths.dataset_yaml(0), split, validated["work"] / "ultralytics_val")
        assert abs(ours.map50 - m.box.map50) <= 0.002, (split, ours.map50, m.box.map50)
        assert abs(ours.map50_95 - m.box.map) <= 0.002, (split, ours.map50_95, m.box.map)
        theirs = {m.names[int(c)]: (float(ap[0]), float(ap.mean()), int(m.nt_per_class[int(c)]))
                  for c, ap in zip(m.box.ap_class_index, m.box.all_ap)}
        assert set(per_class) == set(theirs)
        for name, (ap50, ap, n) in theirs.items():
            assert per_class[name].ap50 == pytest.approx(ap50, abs=0.002)
            assert per_class[name].ap50_95 == pytest.approx(ap, abs=0.002)
            assert per_class[name].instances == n
    # the user's own data.yaml (the same images under their own names) gives the same numbers here
    m = _ultralytics_val(paths.best(0), validated["data"], "val", validated["work"] / "ultralytics_val_own")
    assert abs(s.map50 - m.box.map50) <= 0.002 and abs(s.map50_95 - m.box.map) <= 0.002


def test_records_line_up_with_the_files_in_original_pixels(validated):
    from PIL import Image

    from al.steps import validate

    ctx, paths = validated["ctx"], validated["paths"]
    ver, splits = dataset.read_snapshot(paths.dataset_version(0))
    names = list(ver["names"])
    recs = validated["records"].images
    assert [r["image"] for r in recs] == splits["val"]
    for r in recs:
        with Image.open(r["image"]) as im:
            assert (r["width"], r["height"]) == im.size
        b = np.asarray([p[2:] for p in r["pred"]]).reshape(-1, 4)
        assert (b >= 0).all() and (b[:, [0, 2]] <= r["width"]).all() and (b[:, [1, 3]] <= r["height"]).all()
    assert len({(r["width"], r["height"]) for r in recs}) == len(SIZES)

    # the validator's own TPs at IoU 0.5 (counted in its letterboxed input) overlap a ground-truth box of their
    # class in the original image's pixels: the captured boxes are scaled back correctly on every aspect ratio
    preds = validate.validator_pass(ctx, ctx.models.model(paths.best(0)), names, splits["val"], [], splits["test"])
    out = validate.evaluate(ctx, splits["val"] + splits["test"], names, preds)
    assert [s is preds[i].stats for s, i in zip(out["stats"], splits["val"] + splits["test"])] == [True] * len(preds)
    checked = 0
    for img in splits["val"] + splits["test"]:
        e = preds[img]
        assert e.pred.path == img and len(e.stats["tp"]) == len(e.pred.conf) == len(e.pred.boxes)
        gt = dataset.read_labels(dataset.label_path(img), len(names), e.pred.width, e.pred.height)
        assert sorted(e.stats["target_cls"].astype(int)) == sorted(gt[:, 0].astype(int))
        for j in np.flatnonzero(e.stats["tp"][:, 0]):
            same = gt[gt[:, 0] == e.pred.cls[j]]
            assert box_iou(e.pred.boxes[j], same[:, 1:]).max() >= 0.45, (img, e.pred.boxes[j], same)
            checked += (e.pred.width, e.pred.height) != (96, 96)
    assert checked >= 5  # not vacuous: several TPs on resized, non-square images


def test_the_validator_leaves_no_files_and_reports_progress(validated):
    paths = validated["paths"]
    new = validated["new_files"]
    assert {paths.validation(0), paths.validation_images(0)} <= new
    assert all(p.is_relative_to(paths.root) for p in new), new  # nothing in the cwd (no runs/), nothing beside
    in_versions = {p for p in new if p.is_relative_to(paths.root / "dataset")}
    mirror = paths.dataset_version(0) / dataset.MIRROR
    assert in_versions == {mirror / "val" / "labels.cache", mirror / "test" / "labels.cache"}, in_versions
    # none of what Ultralytics' validator can write: plots, val_batch*.jpg, predictions.json, labels/*.txt
    assert not [p for p in new if p.suffix in {".png", ".jpg", ".txt", ".csv"} or p.name == "predictions.json"]
    prog = [e for e in validated["events"] if isinstance(e, Progress)]
    _, splits = dataset.read_snapshot(paths.dataset_version(0))
    total = len(splits["val"]) + len(splits["test"]) + validated["summary"].train_sample
    assert prog and prog[-1].done == prog[-1].total == total
    assert [e.done for e in prog] == sorted(e.done for e in prog) and len(prog) > 3  # one per batch of 8


def test_a_stop_request_between_batches_interrupts_before_anything_is_written(validated):
    from al.steps import validate

    ctx, paths = validated["ctx"], validated["paths"]
    bus = Listeners()
    batches = []
    bus.subscribe(lambda e: (batches.append(e), bus.stop()) if isinstance(e, Progress) else None)
    ctx.ui, old = bus, ctx.ui
    stamp = paths.validation(0).stat().st_mtime_ns
    try:
        with pytest.raises(Interrupted):
            validate.run(ctx)
    finally:
        ctx.ui = old
    assert len(batches) == 1 and paths.validation(0).stat().st_mtime_ns == stamp
