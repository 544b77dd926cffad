"""mAP from our single prediction pass agrees with hand-computed AP and with Ultralytics' matching rules."""

import numpy as np
import pytest

from al.yolo.detector import correct_matrix, map_from_matches


def test_correct_matrix_thresholds_and_class():
    gt_cls = np.array([0, 1])
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    # pred0: IoU 0.81 with gt0; pred1: wrong class on gt1; pred2: exact duplicate of gt0
    pred = np.array([[0, 0, 9, 9], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    c = correct_matrix(gt_cls, gt, np.array([0, 0, 0]), np.array([0.9, 0.8, 0.3]), pred)
    assert not c[1].any()
    assert c[0].tolist() == [True] * 7 + [False] * 3  # thresholds 0.50..0.80 (IoU 0.81)
    assert c[2].tolist() == [False] * 7 + [True] * 3  # only above 0.81 is gt0 left for the duplicate
    assert (c.sum(axis=0) == 1).all()  # one target, one TP per threshold


def test_correct_matrix_equals_ultralytics_validator():
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator

    from al.metrics.matching import box_iou

    rng = np.random.default_rng(0)
    v = DetectionValidator()
    for _ in range(20):
        n_gt, n_pred = rng.integers(0, 8), rng.integers(0, 15)
        xy = rng.uniform(0, 80, (n_gt, 2))
        gt = np.column_stack([xy, xy + rng.uniform(5, 30, (n_gt, 2))])
        jitter = rng.normal(0, 3, (n_pred, 4))
        base = gt[rng.integers(0, max(n_gt, 1), n_pred)] if n_gt else rng.uniform(0, 80, (n_pred, 4))
        pred = np.column_stack([base[:, :2] + jitter[:, :2], base[:, 2:] + jitter[:, 2:]])
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        gc, pc = rng.integers(0, 3, n_gt), rng.integers(0, 3, n_pred)
        ours = correct_matrix(gc, gt, pc, rng.uniform(0, 1, n_pred), pred)
        theirs = v.match_predictions(torch.tensor(pc), torch.tensor(gc), torch.tensor(box_iou(gt, pred))).cpu().numpy()
        assert (ours == theirs.astype(bool)).all()


def test_map_hand_computed_single_class():
    # 2 targets; predictions by confidence: TP, FP, TP -> precision envelope 1.0 until recall 0.5, then 2/3 to 1.0
    tp = np.array([[True] * 10, [False] * 10, [True] * 10])
    res = map_from_matches([tp], [np.array([0.9, 0.8, 0.7])], [np.array([0, 0, 0])], [np.array([0, 0])], nc=1)
    # COCO 101-point interpolation: 0.5 * 1.0 + 0.5 * 2/3 ~= 0.8333 (Ultralytics integrates the same envelope)
    assert res["map50"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3, abs=0.01)
    assert res["map50_95"] == pytest.approx(res["map50"])


def test_map_no_targets_is_zero():
    res = map_from_matches([], [], [], [], nc=3)
    assert res == {"map50": 0.0, "map50_95": 0.0, "ap50_per_class": [0.0, 0.0, 0.0]}
