import numpy as np
import pytest

from al.metrics.matching import box_iou, match_image, match_record, prf, summarize


def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    # overlap 50 / union 150 = 1/3; disjoint 0; contained 25/100
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.25])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_match_greedy_by_confidence_and_class():
    gt_cls = [0, 0, 1]
    gt = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]
    # pred 0: low-conf duplicate of gt0; pred 1: high-conf on gt0; pred 2: right place wrong class for gt2;
    # pred 3: gt1 with IoU 0.6 (shifted 2.5 px -> inter 75/125)
    pred_cls = [0, 0, 0, 0]
    conf = [0.3, 0.9, 0.8, 0.7]
    pred = [[0, 0, 10, 10], [0, 0, 10, 10], [40, 0, 50, 10], [22.5, 0, 32.5, 10]]
    m = match_image(gt_cls, gt, pred_cls, conf, pred, iou_thr=0.5)
    assert [(g, p) for g, p, _ in m.tp] == [(0, 1), (1, 3)]
    assert m.tp[1][2] == pytest.approx(75 / 125)
    assert m.fp == [0, 2]
    assert m.fn == [2]


def test_match_threshold_is_inclusive_and_empty_inputs():
    m = match_image([0], [[0, 0, 10, 10]], [0], [0.5], [[5, 0, 15, 10]], iou_thr=1 / 3)
    assert len(m.tp) == 1
    m = match_image([], np.zeros((0, 4)), [0], [0.5], [[0, 0, 1, 1]])
    assert m.fp == [0] and m.fn == [] and m.tp == []
    m = match_image([1], [[0, 0, 1, 1]], [], [], np.zeros((0, 4)))
    assert m.fn == [0] and m.fp == []


def test_prf_and_zero_division():
    assert prf(3, 1, 2) == pytest.approx((0.75, 0.6, 2 * 0.75 * 0.6 / 1.35))
    assert prf(0, 0, 0) == (0.0, 0.0, 0.0)
    assert prf(0, 5, 0) == (0.0, 0.0, 0.0)


def test_summarize_per_class_and_micro():
    recs = [
        match_record({"gt": [[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]],
                      "pred": [[0, 0.9, 0, 0, 10, 10], [1, 0.8, 50, 50, 60, 60]]}),
        match_record({"gt": [[1, 0, 0, 10, 10]], "pred": [[1, 0.6, 0, 0, 10, 10], [0, 0.4, 30, 30, 40, 40]]}),
    ]
    s = summarize(recs, ["a", "b"])
    assert s["per_class"]["a"] == {"tp": 1, "fp": 1, "fn": 0, "precision": 0.5, "recall": 1.0,
                                   "f1": pytest.approx(2 / 3)}
    assert (s["per_class"]["b"]["tp"], s["per_class"]["b"]["fp"], s["per_class"]["b"]["fn"]) == (1, 1, 1)
    o = s["overall"]
    assert (o["tp"], o["fp"], o["fn"]) == (2, 2, 1)
    assert o["precision"] == 0.5 and o["recall"] == pytest.approx(2 / 3)
