"""mAP from the validator's per-image statistics (al.yolo.validator.map_from_stats: Ultralytics' DetMetrics) agrees
with hand-computed AP, and validate.evaluate hands those statistics and the per-class AP on, aligned with its images.
That the statistics are the validator's own and the mAP equals model.val(): tests/slow/test_validator_map.py.
"""

import numpy as np
import pytest

from al.core.config import load_config
from al.yolo.detector import Prediction
from al.yolo.validator import ImageEval, map_from_stats
from tests.conftest import make_config, step_context


def _stats(tp, conf, pred_cls, target_cls):
    return {"tp": np.asarray(tp, dtype=bool).reshape(-1, 10), "conf": np.asarray(conf, dtype=float),
            "pred_cls": np.asarray(pred_cls, dtype=float), "target_cls": np.asarray(target_cls, dtype=float)}


def test_map_hand_computed_single_class():
    # 2 targets; predictions by confidence: TP, FP, TP -> precision envelope 1.0 until recall 0.5, then 2/3 to 1.0
    s = _stats([[True] * 10, [False] * 10, [True] * 10], [0.9, 0.8, 0.7], [0, 0, 0], [0, 0])
    res = map_from_stats([s], ["a"])
    # COCO 101-point interpolation: 0.5 * 1.0 + 0.5 * 2/3 ~= 0.8333 (Ultralytics integrates the same envelope)
    assert res["map50"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3, abs=0.01)
    assert res["map50_95"] == pytest.approx(res["map50"])
    assert res["per_class_ap"] == {"a": {"ap50": res["map50"], "ap50_95": res["map50_95"], "instances": 2}}


def test_map_pools_images_and_reports_classes_with_instances():
    # image 1: class 0 found at IoU 0.50..0.70 only; image 2: class 1 missed, a class-2 prediction with no target
    tp_low = [True] * 5 + [False] * 5
    one = _stats([tp_low], [0.9], [0], [0])
    two = _stats([[False] * 10], [0.8], [2], [1])
    res = map_from_stats([one, two], ["a", "b", "c"])
    per = res["per_class_ap"]
    assert set(per) == {"a", "b"}  # "c" has no instance: no AP, as in Ultralytics' table
    assert per["a"]["ap50"] == pytest.approx(1.0, abs=0.01) and per["a"]["ap50_95"] == pytest.approx(0.5, abs=0.01)
    assert per["b"] == {"ap50": 0.0, "ap50_95": 0.0, "instances": 1}
    assert res["map50"] == pytest.approx((per["a"]["ap50"] + 0.0) / 2)  # mean over classes with instances
    assert res["map50_95"] == pytest.approx((per["a"]["ap50_95"] + 0.0) / 2)


def test_map_no_targets_is_zero():
    assert map_from_stats([], ["a"]) == {"map50": 0.0, "map50_95": 0.0, "per_class_ap": {}}
    s = _stats([[False] * 10], [0.5], [0], [])
    assert map_from_stats([s], ["a"]) == {"map50": 0.0, "map50_95": 0.0, "per_class_ap": {}}


def test_evaluate_returns_records_stats_and_per_class_ap_aligned_with_images(tmp_path, tiny_data):
    from al.steps.validate import evaluate

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    imgs = [str(tmp_path / "images" / f"{n}.jpg") for n in ("a", "b")]
    # a (200x100): one class-0 box at pixels (20, 10)-(60, 50); b (50x80): no objects
    (tmp_path / "labels" / "a.txt").write_text("0 0.2 0.3 0.2 0.4\n")
    box = [20.0, 10.0, 60.0, 50.0]
    preds = {
        imgs[1]: ImageEval(Prediction(imgs[1], 50, 80, np.array([[1.0, 1, 9, 9]]), np.array([1]), np.array([0.6])),
                           _stats([[False] * 10], [0.6], [1], [])),
        imgs[0]: ImageEval(Prediction(imgs[0], 200, 100, np.array([box, [100.0, 0, 150, 40]]), np.array([0, 0]),
                                      np.array([0.9, 0.1])),
                           _stats([[True] * 10, [False] * 10], [0.9, 0.1], [0, 0], [0])),
    }
    ctx = step_context(load_config(make_config(tmp_path, tiny_data, validation={"conf": 0.25})))
    out = evaluate(ctx, imgs, ["zero", "one"], preds)
    assert [r["image"] for r in out["records"]] == imgs
    a, b = out["records"]
    assert (a["width"], a["height"]) == (200, 100) and a["gt"] == [[0, *box]]
    assert a["pred"] == [[0, 0.9, *box]]  # the 0.1 prediction is below validation.conf
    assert a["tp"] == [[0, 0, 1.0]] and a["fp"] == [] and a["fn"] == []
    assert b["fp"] == [0] and b["gt"] == []
    assert out["overall"]["tp"] == 1 and out["overall"]["fp"] == 1
    assert [s is preds[i].stats for s, i in zip(out["stats"], imgs)] == [True, True]
    assert set(out["per_class_ap"]) == {"zero"} and out["per_class_ap"]["zero"]["instances"] == 1
    assert out["map50"] == pytest.approx(out["per_class_ap"]["zero"]["ap50"])
