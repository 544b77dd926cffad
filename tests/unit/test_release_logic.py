"""The ONNX check's detection matching and the bootstrap intervals of the model card, with exact values."""

from __future__ import annotations

import numpy as np
import pytest

from al.metrics.intervals import prf_intervals
from al.yolo.export import match_detections

A = np.array([[10, 10, 50, 50, 0.9, 1], [60, 60, 90, 90, 0.6, 0]], dtype=float)


def test_identical_detections_match_in_any_order():
    box, conf, problems = match_detections(A, A[::-1], conf=0.25)
    assert box == [0.0, 0.0] and conf == [0.0, 0.0] and problems == []


def test_small_differences_are_measured():
    b = A + np.array([[0.5, 0, 0, -0.25, 0.0005, 0], [0, 0, 0.75, 0, 0, 0]])
    box, conf, problems = match_detections(A, b, conf=0.25)
    assert box == [0.5, 0.75] and conf == pytest.approx([0.0005, 0.0]) and problems == []


def test_a_box_too_far_fails():
    b = A.copy()
    b[0, 2] += 1.5
    _, _, problems = match_detections(A, b, conf=0.25)
    assert problems == ["PyTorch detection class 1 conf 0.900 box [10.0, 10.0, 50.0, 50.0] is 1.50 px from the "
                        "nearest ONNX detection of its class class 1 conf 0.900 box [10.0, 10.0, 51.5, 50.0] "
                        "(tolerance 1.0 px)",
                        "ONNX detection class 1 conf 0.900 box [10.0, 10.0, 51.5, 50.0] has no PyTorch detection "
                        "of the same class"]


def test_another_class_or_a_confidence_gap_fails():
    b = A.copy()
    b[1, 5] = 2
    _, _, problems = match_detections(A, b, conf=0.25)
    assert [p.split(" has")[0] for p in problems] == [
        "PyTorch detection class 0 conf 0.600 box [60.0, 60.0, 90.0, 90.0]",
        "ONNX detection class 2 conf 0.600 box [60.0, 60.0, 90.0, 90.0]"]
    c = A.copy()
    c[0, 4] = 0.85
    _, _, problems = match_detections(A, c, conf=0.25)
    assert problems == ["PyTorch detection class 1 conf 0.900 box [10.0, 10.0, 50.0, 50.0]: ONNX confidence "
                        "0.8500 differs by 0.0500 (tolerance 0.001)"]


def test_a_missing_detection_fails_unless_it_sits_at_the_threshold():
    _, _, problems = match_detections(A, A[:1], conf=0.25)
    assert problems == ["PyTorch detection class 0 conf 0.600 box [60.0, 60.0, 90.0, 90.0] has no ONNX detection "
                        "of the same class"]
    edge = A.copy()
    edge[1, 4] = 0.2505  # rounding may put it on either side of conf 0.25
    assert match_detections(edge, edge[:1], conf=0.25)[2] == []
    assert match_detections(edge[:1], edge, conf=0.25)[2] == []


def test_intervals_of_identical_images_are_a_point():
    out = prf_intervals([2, 2, 2], [1, 1, 1], [1, 1, 1], resamples=200)
    for m, v in (("precision", 6 / 9), ("recall", 6 / 9), ("f1", 6 / 9)):
        assert out[m] == pytest.approx({"value": v, "low": v, "high": v})


def test_intervals_bracket_the_value_and_are_seeded():
    tp, fp, fn = [5, 0, 3, 1, 4, 0, 2, 2], [0, 2, 1, 0, 1, 3, 0, 1], [1, 3, 0, 2, 0, 1, 1, 0]
    a = prf_intervals(tp, fp, fn, seed=1)
    assert a == prf_intervals(tp, fp, fn, seed=1)
    assert a["precision"]["value"] == pytest.approx(17 / 25) and a["recall"]["value"] == pytest.approx(17 / 25)
    for m in a:
        assert a[m]["low"] < a[m]["value"] < a[m]["high"]
    assert prf_intervals([], [], [])["f1"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ValueError, match="one count per image"):
        prf_intervals([1], [1, 2], [0])
