"""The TUI's plain-data parts: timeline states, ETA, metric rows from the CSV, and the review-export check."""

from __future__ import annotations

import json

import yaml

from al.app.api import STEPS
from al.core import store
from al.data import dataset
from al.frontends.tui import dataset_diff
from al.frontends.tui.model import Eta, MetricRow, Timeline, fmt_secs, history_on_open


def test_timeline_resume_marks_earlier_steps_done_or_skipped():
    tl = Timeline()
    tl.resume_at(2, "review", False, {"validate": 3.0, "analyze": 1.0, "converge": 0.2, "extract": 2.0})
    assert [tl.rows[s].state for s in STEPS] == ["done"] * 4 + ["waiting"] * 3
    tl.reset(2)  # IterationStarted of the same iteration right after resume keeps the states
    assert tl.rows["extract"].state == "done" and tl.rows["extract"].seconds == 2.0
    tl.resume_at(1, "track", False, {"validate": 3.0, "analyze": 1.0, "converge": 0.2})  # converged
    assert [tl.rows[s].state for s in STEPS] == ["done"] * 3 + ["skipped"] * 3 + ["waiting"]


def test_timeline_baseline_then_iteration_0():
    tl = Timeline()
    tl.resume_at(0, "retrain", True, {})
    tl.started("retrain", "Training baseline model", now=10.0, baseline=True)
    assert tl.running() is tl.baseline and tl.rows["retrain"].state == "waiting"
    tl.finished("retrain", 30.0)
    assert tl.baseline.state == "done" and tl.baseline.seconds == 30.0
    tl.reset(0)
    tl.started("validate", "v", now=41.0)
    assert tl.baseline is not None and tl.running().step == "validate"
    tl.ended("validate", "failed")
    assert tl.rows["validate"].state == "failed" and tl.running() is None
    tl.reset(1)
    assert tl.baseline is None


def test_eta_restarts_with_a_new_counter():
    eta = Eta()
    assert eta.update(("retrain", "batches", "epoch 1/3"), 1, 10, now=0.0) is None
    assert eta.update(("retrain", "batches", "epoch 1/3"), 5, 10, now=4.0) == 5.0  # 1 batch/s
    assert eta.update(("retrain", "batches", "epoch 2/3"), 1, 10, now=10.0) is None  # new epoch: new rate
    assert eta.update(("retrain", "batches", "epoch 2/3"), 3, 10, now=11.0) == 3.5


def test_fmt_secs():
    assert [fmt_secs(s) for s in (None, 1.234, 42.4, 185, 3723)] == ["", "1.2 s", "42 s", "3:05", "1:02:03"]


def test_metric_rows_from_csv_strings_and_stale_rows():
    raw = [{"iteration": str(k), "f1": "0.5", "precision": "", "per_class_f1": json.dumps({"a": 0.5}),
            "per_class_fn": "{}", "tp": "3", "converged": "0", "reason": "Continue"} for k in range(4)]
    rows = history_on_open(raw, iteration=2, step="validate", baseline=False)
    assert [r.iteration for r in rows] == [0, 1]
    rows = history_on_open(raw, iteration=2, step="review", baseline=False)
    assert [r.iteration for r in rows] == [0, 1, 2]
    assert history_on_open(raw, iteration=0, step="retrain", baseline=True) == []
    r = MetricRow.parse(raw[0])
    assert r.f1 == 0.5 and r.precision is None and r.tp == 3 and r.per_class_f1 == {"a": 0.5} and not r.converged


def _img(path, content: bytes, boxes: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    lbl = dataset.label_path(path)
    lbl.parent.mkdir(parents=True, exist_ok=True)
    lbl.write_text("0 0.5 0.5 0.1 0.1\n" * boxes)
    return str(path.resolve())


def test_dataset_diff_counts_what_the_import_would_add(tmp_path):
    names = ["a"]
    train = [_img(tmp_path / "d/images/train" / f"t{i}.jpg", b"t%d" % i, 1) for i in range(3)]
    val = [_img(tmp_path / "d/images/val" / f"v{i}.jpg", b"v%d" % i, 2) for i in range(2)]
    test = [_img(tmp_path / "d/images/test/x.jpg", b"x", 1)]
    dataset.write_snapshot(tmp_path / "v000", names, {"train": train, "val": val, "test": test},
                           {"version": 0, "names": names})
    ver = store.read_json(tmp_path / "v000" / "version.json")
    comb = tmp_path / "combined"
    picks = [{"image": v} for v in val]

    diff = dataset_diff.compute(comb, tmp_path / "v000", picks)
    assert not diff.changed and "No export yet" in diff.error
    assert dataset_diff.compute(None, tmp_path / "v000", picks).error.startswith("dataset.combined_dir is not set")

    # the training set again, one picked image (relabelled: 3 boxes) and a copy of a test image
    for i in range(3):
        _img(comb / "images/train" / f"t{i}.jpg", b"t%d" % i, 1)
    _img(comb / "images/train/v0.jpg", b"v0", 3)
    _img(comb / "images/train/copy_of_test.jpg", b"x", 1)
    (comb / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train",
                                                    "names": names}))
    diff = dataset_diff.compute(comb, tmp_path / "v000", picks)
    assert diff.changed and diff.error is None
    assert (diff.new_images, diff.new_boxes, diff.test_duplicates) == (1, 3, 1)
    assert (diff.train_images, diff.train_boxes, diff.combined_images, diff.combined_boxes) == (3, 3, 5, 7)
    assert (diff.picks_returned, diff.picks, diff.version) == (1, 2, ver["id"])
    assert "+1 images, +3 boxes" in diff.summary()

    (comb / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train",
                                                    "names": ["b"]}))
    assert "class names" in dataset_diff.compute(comb, tmp_path / "v000", picks).error


def test_preview_of_returned_labels_flags_unedited_pre_annotations(tmp_path):
    import numpy as np
    from PIL import Image

    from al.review import package as pkg_mod

    names = ["a", "b"]
    imgs = []
    for i in range(2):
        p = tmp_path / "d/images/val" / f"v{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(p)
        imgs.append(str(p))
    train = [_img(tmp_path / "d/images/train/t.jpg", b"t", 2)]
    dataset.write_snapshot(tmp_path / "v000", names, {"train": train, "val": imgs, "test": []},
                           {"version": 0, "names": names})
    records = {p: {"width": 20, "height": 20, "pred": [[1, 0.9, 2.0, 2.0, 10.0, 10.0]]} for p in imgs}
    picks = [{"image": p} for p in imgs]
    pkg = pkg_mod.build(tmp_path / "pkg", None, picks, records, names, iteration=0, conf=0.5, thumbnails=False)
    ret = tmp_path / "pkg" / "returned"
    info = {"backend": "local", "picks": picks, "package_dir": pkg["dir"], "returned_dir": str(ret),
            "import_from": str(ret), "combined_dir": None}

    diff = dataset_diff.preview(info, tmp_path / "v000")  # nothing returned yet, no combined_dir either
    assert diff.kind == "missing" and diff.error.startswith("No reviewed labels yet") and not diff.changed

    pre = (tmp_path / "pkg" / "labels" / "v0.txt").read_text()
    (ret / "v0.txt").write_text(pre)  # returned exactly as pre-annotated
    diff = dataset_diff.preview(info, tmp_path / "v000")
    assert diff.kind == "returned" and (diff.picks_returned, diff.unedited) == (1, 1) and not diff.changed
    (ret / "v1.txt").write_text("0 0.5 0.5 0.3 0.3\n0 0.2 0.2 0.1 0.1\n")  # a reviewed one
    diff = dataset_diff.preview(info, tmp_path / "v000")
    assert (diff.picks_returned, diff.unedited, diff.new_boxes) == (2, 1, 3) and diff.changed
    assert "2/2 picks came back" in diff.summary()

    assert dataset_diff.preview({**info, "backend": "roboflow"}, tmp_path / "v000").unknown
