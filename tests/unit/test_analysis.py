"""Error analysis on tiny synthetic validations with real image files; expected values computed by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from al.core.store import read_json
from al.report import error_analysis
from al.report.error_analysis import (
    analyze,
    box_contrast,
    grid_cell,
    position_of,
    size_bucket,
)

PNGS = ("fn_size_distribution.png", "fn_position_distribution.png", "error_heatmap.png")


def write_img(tmp_path, name, arr):
    path = tmp_path / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return str(path)


def black(w=100, h=100):
    return np.zeros((h, w, 3), dtype=np.uint8)


def rec(image, gt=(), pred=(), tp=(), fp=(), fn=(), w=100, h=100):
    return {"image": image, "width": w, "height": h, "gt": [list(g) for g in gt], "pred": [list(p) for p in pred],
            "tp": [list(t) for t in tp], "fp": list(fp), "fn": list(fn)}


def val(images, names=("a", "b"), iteration=0):
    return {"schema": 1, "iteration": iteration, "names": list(names), "images": images}


# --- pure helpers -----------------------------------------------------------------------------------

def test_size_bucket_at_coco_thresholds():
    assert size_bucket(31 * 31) == "small"
    assert size_bucket(32 * 32 - 1) == "small"
    assert size_bucket(32 * 32) == "medium"
    assert size_bucket(96 * 96 - 1) == "medium"
    assert size_bucket(96 * 96) == "large"
    assert size_bucket(0) == "small"


@pytest.mark.parametrize("centre,cell,pos", [
    ((50, 50), (0, 0), "corner"), ((150, 50), (0, 1), "edge"), ((250, 50), (0, 2), "corner"),
    ((50, 150), (1, 0), "edge"), ((150, 150), (1, 1), "center"), ((250, 150), (1, 2), "edge"),
    ((50, 250), (2, 0), "corner"), ((150, 250), (2, 1), "edge"), ((250, 250), (2, 2), "corner"),
    ((100, 200), (2, 1), "edge"),       # a centre exactly on a cell line belongs to the next cell
    ((-20, 400), (2, 0), "corner"),     # centres outside the image are clamped into the border cells
])
def test_grid_cell_and_position(centre, cell, pos):
    cx, cy = centre
    box = (cx - 10, cy - 10, cx + 10, cy + 10)
    assert grid_cell(box, 300, 300) == cell
    assert position_of(cell) == pos


def test_grid_cell_non_square_image():
    # 600 wide x 90 high: x thirds at 200/400, y thirds at 30/60
    assert grid_cell((390, 0, 410, 20), 600, 90) == (0, 2)
    assert grid_cell((380, 40, 390, 50), 600, 90) == (1, 1)


def test_contrast_white_square_on_black_is_one():
    img = np.zeros((100, 100), dtype=np.uint8)
    img[40:60, 40:60] = 255
    assert box_contrast(img, (40, 40, 60, 60)) == pytest.approx(1.0)


def test_contrast_uniform_grey_is_zero():
    img = np.full((100, 100), 128, dtype=np.uint8)
    assert box_contrast(img, (30, 30, 70, 70)) == pytest.approx(0.0)
    # a box covering the whole image has no ring; its own (flat) texture gives 0 too
    assert box_contrast(img, (0, 0, 100, 100)) == pytest.approx(0.0)


def test_contrast_flat_step_is_mean_difference():
    img = np.full((100, 100), 200, dtype=np.uint8)
    img[40:60, 40:60] = 100
    assert box_contrast(img, (40, 40, 60, 60)) == pytest.approx(100 / 255)


def test_contrast_texture_with_same_mean_counts_half():
    img = np.full((100, 100), 127, dtype=np.uint8)
    checker = (np.indices((20, 20)).sum(axis=0) % 2 * 254).astype(np.uint8)  # 0/254: mean 127, std 127
    img[40:60, 40:60] = checker
    assert box_contrast(img, (40, 40, 60, 60)) == pytest.approx(0.5 * 127 / 127.5)


def test_contrast_degenerate_box_is_zero():
    img = np.full((50, 50), 255, dtype=np.uint8)
    assert box_contrast(img, (10, 10, 10, 30)) == 0.0
    assert box_contrast(img, (60, 60, 80, 80)) == 0.0  # entirely outside


def test_difficulty_mixes_contrast_and_aspect():
    assert error_analysis.difficulty_of(1.0, 2.0, 2.0) == pytest.approx(0.0)
    assert error_analysis.difficulty_of(0.0, 1.0, 1.0) == pytest.approx(0.6)
    assert error_analysis.difficulty_of(0.15, 4.0, 1.0) == pytest.approx(0.6 * 0.5 + 0.4 * 1.0)
    assert error_analysis.difficulty_of(0.0, 0.1, 1.0) == pytest.approx(1.0)  # aspect score saturates at 1
    assert error_analysis.difficulty_bucket(0.05, 5.0, 1.0) == "low_contrast"
    assert error_analysis.difficulty_bucket(0.5, 2.0, 1.0) == "unusual_aspect"
    assert error_analysis.difficulty_bucket(0.5, 0.5, 1.0) == "unusual_aspect"
    assert error_analysis.difficulty_bucket(0.5, 1.9, 1.0) == "normal"


# --- the step ---------------------------------------------------------------------------------------

def test_error_records_exact(tmp_path):
    img = black()
    img[20:40, 10:50] = 255
    path = write_img(tmp_path, "one.png", img)
    v = val([rec(path, gt=[(0, 10, 20, 50, 40)], pred=[(1, 0.9, 60, 60, 90, 70)], fp=[0], fn=[0])])
    report = analyze(v, tmp_path / "ea")
    fn, fp = report["errors"]
    crop = str(tmp_path / "ea" / "fn_crops" / "one_fn0_a.jpg")
    assert fn == {"kind": "fn", "image": path, "index": 0, "cls": 0, "box": [10.0, 20.0, 50.0, 40.0],
                  "area": 800.0, "size": "small", "position": "corner", "grid": [0, 0], "contrast": 1.0,
                  "aspect": 2.0, "difficulty": 0.0, "crop": crop}
    # class 1 has no gt: aspect 3 is judged against 1 -> ln3/ln4; black all round -> contrast 0
    assert fp == {"kind": "fp", "image": path, "index": 0, "cls": 1, "box": [60.0, 60.0, 90.0, 70.0],
                  "area": 300.0, "size": "small", "position": "edge", "grid": [1, 2], "contrast": 0.0,
                  "aspect": 3.0, "difficulty": round(0.6 + 0.4 * math.log(3) / math.log(4), 4), "crop": None}
    assert report["by_difficulty"] == {"low_contrast": {"fn": 0, "fp": 1}, "unusual_aspect": {"fn": 0, "fp": 0},
                                       "normal": {"fn": 1, "fp": 0}}


def test_counts_match_hand_counts(tmp_path):
    p1 = write_img(tmp_path, "p1.png", black(300, 300))
    p2 = write_img(tmp_path, "p2.png", black(300, 300))
    v = val([
        # p1: gt 0 small (31x31) FN in top-left corner, gt 1 medium (32x32) FN in the centre,
        #     gt 2 large (96x96) TP; pred 1 (class b, 20x20) FP at top edge
        rec(p1, gt=[(0, 0, 0, 31, 31), (1, 134, 134, 166, 166), (0, 200, 200, 296, 296)],
            pred=[(0, 0.9, 200, 200, 296, 296), (1, 0.5, 140, 0, 160, 20)],
            tp=[(2, 0, 1.0)], fp=[1], fn=[0, 1], w=300, h=300),
        # p2: gt 0 large (100x100) FN bottom-right corner; FPs: class a 40x40 centre, class a 10x10 left edge
        rec(p2, gt=[(1, 200, 200, 300, 300)], pred=[(0, 0.8, 130, 130, 170, 170), (0, 0.3, 0, 145, 10, 155)],
            fp=[0, 1], fn=[0], w=300, h=300),
    ])
    r = analyze(v, tmp_path / "ea")
    assert r["schema"] == 1 and r["iteration"] == 0
    assert r["totals"] == {"fn": 3, "fp": 3, "tp": 1}
    assert r["by_size"] == {"small": {"fn": 1, "fp": 2}, "medium": {"fn": 1, "fp": 1}, "large": {"fn": 1, "fp": 0}}
    assert r["by_position"] == {"center": {"fn": 1, "fp": 1}, "edge": {"fn": 0, "fp": 2},
                                "corner": {"fn": 2, "fp": 0}}
    assert r["by_grid"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert r["by_class"] == {"a": {"fn": 1, "fp": 2}, "b": {"fn": 2, "fp": 1}}
    assert sum(d["fn"] for d in r["by_difficulty"].values()) == 3
    assert sum(d["fp"] for d in r["by_difficulty"].values()) == 3
    assert [(e["kind"], e["index"]) for e in r["errors"]] == [("fn", 0), ("fn", 1), ("fp", 1), ("fn", 0),
                                                            ("fp", 0), ("fp", 1)]
    assert read_json(tmp_path / "ea" / "error_report.json") == json.loads(json.dumps(r))


def test_crops_margin_and_border_clipping(tmp_path):
    yy, xx = np.mgrid[0:100, 0:120]
    img = np.dstack([xx * 2, yy * 2, np.full_like(xx, 100)]).astype(np.uint8)  # smooth: JPEG keeps it close
    path = write_img(tmp_path, "scene.png", img)
    v = val([rec(path, gt=[(0, 10, 10, 30, 50), (1, 0, 0, 20, 20), (0, 100, 80, 120, 100)], fn=[0, 1, 2],
                 w=120, h=100)])
    r = analyze(v, tmp_path / "ea", crop_margin=0.25)
    crops = tmp_path / "ea" / "fn_crops"
    assert sorted(p.name for p in crops.iterdir()) == ["scene_fn0_a.jpg", "scene_fn1_b.jpg", "scene_fn2_a.jpg"]
    # 20x40 box: margin 5 px across is less than the 32 px minimum side -> 6 px; 10 px down -> x 4..36, y 0..60
    assert cv2.imread(str(crops / "scene_fn0_a.jpg")).shape == (60, 32, 3)
    # top-left corner box, 20x20 widened to 32: x,y -6..26 clipped to 0..26
    assert cv2.imread(str(crops / "scene_fn1_b.jpg")).shape == (26, 26, 3)
    # bottom-right corner box: x 94..126 -> 94..120, y 74..106 -> 74..100
    assert cv2.imread(str(crops / "scene_fn2_a.jpg")).shape == (26, 26, 3)
    assert [e["crop"] for e in r["errors"]] == [str(crops / n) for n in
                                                ("scene_fn0_a.jpg", "scene_fn1_b.jpg", "scene_fn2_a.jpg")]
    # the crop is the image region (JPEG is lossy: compare loosely)
    got = cv2.imread(str(crops / "scene_fn0_a.jpg")).astype(int)
    assert np.abs(got - img[0:60, 4:36].astype(int)).mean() < 3


def test_max_crops_keeps_the_hardest(tmp_path):
    img = np.full((100, 100, 3), 128, dtype=np.uint8)
    img[5:25, 5:25] = 255     # high contrast, square
    img[40:60, 40:60] = 255   # high contrast, square
    path = write_img(tmp_path, "x.png", img)
    # gt 2 is on flat grey (contrast 0) -> the hardest
    v = val([rec(path, gt=[(0, 5, 5, 25, 25), (0, 40, 40, 60, 60), (0, 70, 70, 90, 90)], fn=[0, 1, 2])])
    r = analyze(v, tmp_path / "ea", max_crops=1)
    assert [e["crop"] is not None for e in r["errors"]] == [False, False, True]
    assert [p.name for p in (tmp_path / "ea" / "fn_crops").iterdir()] == ["x_fn2_a.jpg"]
    r0 = analyze(v, tmp_path / "ea0", max_crops=0)
    assert all(e["crop"] is None for e in r0["errors"])


def test_rerun_overwrites_and_removes_stale_crops(tmp_path):
    path = write_img(tmp_path, "img.png", black())
    out = tmp_path / "ea"
    first = val([rec(path, gt=[(0, 10, 10, 30, 30), (1, 50, 50, 80, 80)], fn=[0, 1])])
    analyze(first, out)
    crops = out / "fn_crops"
    assert sorted(p.name for p in crops.iterdir()) == ["img_fn0_a.jpg", "img_fn1_b.jpg"]
    second = val([rec(path, gt=[(0, 10, 10, 30, 30), (1, 50, 50, 80, 80)], tp=[(0, 0, 0.9)],
                      pred=[(0, 0.9, 10, 10, 30, 30)], fn=[1])])
    analyze(second, out)
    analyze(second, out)
    assert [p.name for p in crops.iterdir()] == ["img_fn1_b.jpg"]


def test_same_stem_in_two_folders_gets_distinct_names(tmp_path):
    a = write_img(tmp_path, "d1/im.png", black())
    b = write_img(tmp_path, "d2/im.png", black())
    v = val([rec(a, gt=[(0, 10, 10, 30, 30)], fn=[0]), rec(b, gt=[(0, 10, 10, 30, 30)], fn=[0])])
    r = analyze(v, tmp_path / "ea")
    assert [e["crop"].rsplit("/", 1)[1] for e in r["errors"]] == ["im_fn0_a.jpg", "im_fn0_a_2.jpg"]


def test_plots_are_valid_pngs(tmp_path):
    path = write_img(tmp_path, "p.png", black(200, 100))
    v = val([rec(path, gt=[(0, 0, 0, 20, 20), (1, 90, 40, 110, 60)], pred=[(1, 0.4, 150, 70, 200, 100)],
                 fp=[0], fn=[0, 1], w=200, h=100)])
    analyze(v, tmp_path / "ea")
    for name in PNGS:
        data = (tmp_path / "ea" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = cv2.imread(str(tmp_path / "ea" / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 400


def _small_vs_large(tmp_path, small_fn: bool):
    """4 small and 4 large gt boxes of class a over 4 images; either the small ones are all missed, or
    one small, one large and one medium are missed (balanced)."""
    recs = []
    for i in range(4):
        p = write_img(tmp_path, f"s{i}.png", black(300, 300))
        gt = [(0, 10, 10, 30, 30), (0, 150, 150, 260, 260)]
        if small_fn:
            recs.append(rec(p, gt=gt, pred=[(0, 0.9, 150, 150, 260, 260)], tp=[(1, 0, 1.0)], fn=[0], w=300, h=300))
        elif i == 0:
            recs.append(rec(p, gt=gt, fn=[0, 1], w=300, h=300))
        elif i == 1:
            recs.append(rec(p, gt=gt + [(0, 100, 100, 150, 150)], pred=[(0, 0.9, 10, 10, 30, 30),
                            (0, 0.9, 150, 150, 260, 260)], tp=[(0, 0, 1.0), (1, 1, 1.0)], fn=[2], w=300, h=300))
        else:
            recs.append(rec(p, gt=gt, pred=[(0, 0.9, 10, 10, 30, 30), (0, 0.9, 150, 150, 260, 260)],
                            tp=[(0, 0, 1.0), (1, 1, 1.0)], w=300, h=300))
    return val(recs, names=["a"])


def test_suggestion_for_mostly_small_fns(tmp_path):
    analyze(_small_vs_large(tmp_path, True), tmp_path / "ea")
    sugg = read_json(tmp_path / "ea" / "prompt_suggestions.json")["suggestions"]
    small = [s for s in sugg if "small objects" in s["finding"]]
    assert len(small) == 1
    s = small[0]
    assert s["priority"] == "high"
    assert s["finding"].startswith("100% of false negatives are small")
    assert s["evidence"]["fn_small"] == 4 and s["evidence"]["fn_total"] == 4
    assert s["evidence"]["small_miss_rate"] == 1.0 and s["evidence"]["other_miss_rate"] == 0.0
    assert "imgsz" in s["suggestion"]
    for s in sugg:
        assert set(s) == {"finding", "evidence", "suggestion", "priority"}


def test_no_small_suggestion_when_balanced(tmp_path):
    r = analyze(_small_vs_large(tmp_path, False), tmp_path / "ea")
    assert r["by_size"] == {"small": {"fn": 1, "fp": 0}, "medium": {"fn": 1, "fp": 0}, "large": {"fn": 1, "fp": 0}}
    sugg = read_json(tmp_path / "ea" / "prompt_suggestions.json")["suggestions"]
    assert not [s for s in sugg if "small objects" in s["finding"]]


def test_recall_gap_and_fp_heavy_suggestions(tmp_path):
    recs = []
    for i in range(4):
        p = write_img(tmp_path, f"c{i}.png", black(300, 300))
        # class a always found, class b always missed; one FP of class a per image -> precision 4/8
        pred = [(0, 0.9, 0, 0, 100, 100), (0, 0.5, 200, 0, 300, 100)]
        recs.append(rec(p, gt=[(0, 0, 0, 100, 100), (1, 100, 100, 200, 200)], pred=pred, tp=[(0, 0, 1.0)],
                        fp=[1], fn=[1], w=300, h=300))
    analyze(val(recs), tmp_path / "ea")
    sugg = read_json(tmp_path / "ea" / "prompt_suggestions.json")["suggestions"]
    recall = [s for s in sugg if "recall" in s["finding"]]
    assert len(recall) == 1
    assert recall[0]["evidence"] == {"class": "b", "tp": 0, "fn": 4, "recall": 0.0, "other_recall": 1.0}
    assert recall[0]["priority"] == "high"
    fp = [s for s in sugg if "false positives" in s["finding"]]
    assert len(fp) == 1
    assert fp[0]["evidence"] == {"class": "a", "tp": 4, "fp": 4, "precision": 0.5}
    assert fp[0]["priority"] == "medium"
    assert [s["priority"] for s in sugg] == sorted((s["priority"] for s in sugg),
                                                   key=["high", "medium", "low"].index)


def test_no_fp_suggestion_above_precision_threshold(tmp_path):
    recs = []
    for i in range(4):
        p = write_img(tmp_path, f"q{i}.png", black(300, 300))
        # 4 TP and 3 FP of class a: precision 4/7 = 0.57 > 0.5
        pred = [(0, 0.9, 0, 0, 100, 100)] + ([(0, 0.5, 200, 0, 300, 100)] if i < 3 else [])
        recs.append(rec(p, gt=[(0, 0, 0, 100, 100)], pred=pred, tp=[(0, 0, 1.0)], fp=[1] if i < 3 else [],
                        w=300, h=300))
    analyze(val(recs), tmp_path / "ea")
    sugg = read_json(tmp_path / "ea" / "prompt_suggestions.json")["suggestions"]
    assert not [s for s in sugg if "false positives" in s["finding"]]


def test_no_errors_writes_empty_files_and_opens_nothing(tmp_path, monkeypatch):
    path = write_img(tmp_path, "ok.png", black())
    calls = []
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: calls.append(a) or None)
    out = tmp_path / "ea"
    (out / "fn_crops").mkdir(parents=True)
    (out / "fn_crops" / "old_fn0_a.jpg").write_bytes(b"stale")
    v = val([rec(path, gt=[(0, 10, 10, 30, 30)], pred=[(0, 0.9, 10, 10, 30, 30)], tp=[(0, 0, 1.0)])])
    r = analyze(v, out)
    assert calls == []
    assert r["errors"] == [] and r["totals"] == {"fn": 0, "fp": 0, "tp": 1}
    assert r["by_grid"] == [[0, 0, 0]] * 3
    assert read_json(out / "error_report.json")["errors"] == []
    assert read_json(out / "prompt_suggestions.json")["suggestions"] == []
    assert list((out / "fn_crops").iterdir()) == []
    for name in PNGS:
        assert (out / name).stat().st_size > 0


def test_only_images_with_errors_are_read_once(tmp_path, monkeypatch):
    bad = write_img(tmp_path, "bad.png", black())
    good = write_img(tmp_path, "good.png", black())
    real = cv2.imread
    calls = []
    monkeypatch.setattr(cv2, "imread", lambda p, *a: calls.append(p) or real(p, *a))
    v = val([rec(good, gt=[(0, 10, 10, 30, 30)], pred=[(0, 0.9, 10, 10, 30, 30)], tp=[(0, 0, 1.0)]),
             rec(bad, gt=[(0, 10, 10, 30, 30), (1, 40, 40, 60, 60)], pred=[(1, 0.3, 70, 70, 90, 90)],
                 fp=[0], fn=[0, 1])])
    analyze(v, tmp_path / "ea")
    assert calls == [bad]


def test_unreadable_image_raises_a_helpful_error(tmp_path):
    v = val([rec(str(tmp_path / "missing.png"), gt=[(0, 10, 10, 30, 30)], fn=[0])])
    with pytest.raises(error_analysis.AnalysisError, match="missing.png.*cannot be read"):
        analyze(v, tmp_path / "ea")


def test_module_imports_no_heavy_or_ui_packages():
    code = ("import sys, al.report.error_analysis; "
            "bad = [m for m in ('torch', 'ultralytics', 'textual') if m in sys.modules];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_border_and_low_contrast_suggestions(tmp_path):
    recs = []
    for i in range(4):
        img = black(300, 300)
        img[140:160, 140:160] = 255
        p = write_img(tmp_path, f"b{i}.png", img)
        # centre box (white on black) found; corner box (black on black: contrast 0) missed
        recs.append(rec(p, gt=[(0, 140, 140, 160, 160), (0, 0, 0, 20, 20)], pred=[(0, 0.9, 140, 140, 160, 160)],
                        tp=[(0, 0, 1.0)], fn=[1], w=300, h=300))
    analyze(val(recs, names=["a"]), tmp_path / "ea")
    sugg = read_json(tmp_path / "ea" / "prompt_suggestions.json")["suggestions"]
    border = [s for s in sugg if "border" in s["finding"]]
    assert len(border) == 1 and border[0]["priority"] == "high"
    assert border[0]["evidence"]["border_miss_rate"] == 1.0 and border[0]["evidence"]["center_miss_rate"] == 0.0
    low = [s for s in sugg if "low contrast" in s["finding"]]
    assert len(low) == 1 and low[0]["evidence"]["fn_low_contrast"] == 4 and "hsv_v" in low[0]["suggestion"]
