"""al.data.scenes, the helpers both scene generators paint and write with: exact clipping, boxes, IoU and label
text (the generators' own tests pin what they make of them)."""

from __future__ import annotations

import numpy as np
import pytest

from al.data import scenes
from al.data.scenes import PaintedObject


def test_overlap_clips_a_patch_at_the_borders():
    assert scenes.overlap(2, 3, (4, 5), (10, 10)) == ((slice(3, 7), slice(2, 7)), (slice(0, 4), slice(0, 5)))
    assert scenes.overlap(-2, 8, (4, 5), (10, 10)) == ((slice(8, 10), slice(0, 3)), (slice(0, 2), slice(2, 5)))
    assert scenes.overlap(10, 0, (4, 5), (10, 10)) is None
    assert scenes.overlap(0, -4, (4, 5), (10, 10)) is None


def test_mask_box_is_tight_in_image_pixels():
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = mask[2, 3] = True
    assert scenes.mask_box(mask, (slice(3, 7), slice(2, 7))) == (4, 4, 6, 6)
    assert scenes.mask_box(np.zeros((4, 5), bool), (slice(0, 4), slice(0, 5))) is None


def test_iou():
    assert scenes.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert scenes.iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert scenes.iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0


def test_drop_faint_keeps_the_rest():
    a = scenes.drop_faint(np.array([[0.1, 0.2, 0.9]]), 0.2)
    assert a.dtype == np.float32 and a.tolist() == [[0.0, np.float32(0.2), np.float32(0.9)]]


def test_yolo_lines_normalise_by_width_and_height():
    objects = [PaintedObject(2, (10, 20, 30, 60), False), PaintedObject(0, (0, 0, 1, 1), True)]
    assert scenes.yolo_lines(objects, 100, 200) == ("2 0.200000 0.200000 0.200000 0.200000\n"
                                                     "0 0.005000 0.002500 0.010000 0.005000\n")
    assert scenes.yolo_lines([], 100, 100) == ""
    assert scenes.class_counts([objects, [], objects[:1]], 3) == [1, 0, 2]


def test_luma_of_a_colour_and_of_pixels():
    assert scenes.luma((255, 0, 0)) == pytest.approx(0.114 * 255, abs=1e-4)
    assert scenes.luma(np.full((3, 2, 3), 100, np.uint8)) == pytest.approx(100, abs=1e-4)
