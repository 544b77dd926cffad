"""The TUI's plain-data parts: timeline states, ETA, metric rows from the CSV, and the import preview's text."""

from __future__ import annotations

import json
from dataclasses import replace

from al.app.api import STEPS, ImportPreview
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


def test_import_preview_headline_summary_and_when_it_counts_as_a_change():
    pv = ImportPreview(picks=2, returned_labelled=2, added_images=2, added_boxes=6, removed_from_val=2,
                       duplicates_dropped=4, source="YOLO dataset /c/data.yaml", dataset_version="v0", train_images=4)
    assert pv.changed and not pv.unreviewed
    assert pv.headline() == ("+2 images, +6 boxes from YOLO dataset /c/data.yaml (2 moved out of validation, "
                             "4 duplicates dropped)")
    text = pv.summary()
    assert "2/2 picks came back labelled" in text and "New for training: +2 images, +6 boxes" in text
    assert "Training set now (dataset version v0): 4 images" in text and "test split" not in text

    same = replace(pv, added_images=0, added_boxes=0, removed_from_val=0, duplicates_dropped=6)
    assert not same.changed and same.headline().startswith("+0 images, +0 boxes")
    relabel = replace(same, relabelled=1)
    assert relabel.changed  # a human relabel of a pseudo-labelled image is a change too
    unreviewed = replace(pv, unedited_pre_annotations=2)
    assert unreviewed.unreviewed and not unreviewed.changed and "(unreviewed?)" in unreviewed.summary()
    assert replace(pv, unedited_pre_annotations=1).changed

    err = ImportPreview(error="Dataset not found: no export at /c/data.yaml. Put the labels there.")
    assert not err.changed and err.headline() == "with nothing to import (Dataset not found: no export at /c/data.yaml)"
    assert err.summary().startswith("Dataset not found") and "fails the review step" in err.summary()
    rf = ImportPreview(picks=3, unknown=True, source="Roboflow")
    assert rf.unknown and not rf.changed and "downloaded" in rf.summary()
