"""Label-efficiency statistics of a simulation (al.app.simulate): learning curves, labels to reach a target,
paired bootstrap intervals over seeds, and the annotator's cost of correcting pre-annotations (numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from al.metrics.matching import box_iou, match_image

FIX_IOU = 0.1
"""A leftover prediction and ground-truth box of the same class overlapping at least this much (but less than the
matching IoU) are one box to fix (drag its corners), not one to delete and one to draw."""


def labels_to_reach(labels: Sequence[float], scores: Sequence[float], target: float) -> float | None:
    """Labels at which the curve (points in label order) first reaches `target`, linear between measured points;
    None when it never does."""
    for i, (n, m) in enumerate(zip(labels, scores)):
        if m >= target - 1e-12:
            if i == 0:
                return float(n)
            n0, m0 = labels[i - 1], scores[i - 1]
            return float(n0 + (target - m0) / (m - m0) * (n - n0)) if m > m0 else float(n)
    return None


def curve_auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """Area under score vs labels (trapezoid) divided by the label range: reads as the curve's mean score. One
    point: its score; none: 0."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"labels ({len(x)}) and scores ({len(y)}) differ in length")
    if len(x) == 0:
        return 0.0
    if len(x) < 2 or x[-1] == x[0]:
        return float(y[0])
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / (x[-1] - x[0]))


def saving(needed: float | None, reference: float) -> float | None:
    """The share of the reference's labels an arm did not need (1 - needed / reference); None when not reached."""
    if needed is None or reference <= 0:
        return None
    return 1.0 - needed / reference


def bootstrap_interval(values: Sequence[float], *, stat: Callable[[np.ndarray], float] = np.median,
                       resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The statistic of per-seed values (a paired difference or a saving) with its percentile bootstrap interval:
    seeds are drawn with replacement `resamples` times (seeded: the report is reproducible). Returns
    {value, low, high, n}; no values give None figures."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")
    if len(v) == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    idx = np.random.default_rng(seed).integers(0, len(v), size=(resamples, len(v)))
    boot = np.array([stat(v[row]) for row in idx])
    low, high = np.percentile(boot, [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100])
    return {"value": float(stat(v)), "low": float(low), "high": float(high), "n": int(len(v))}


def paired_differences(a: dict[int, float | None], b: dict[int, float | None]) -> dict[int, float]:
    """Per-seed a - b over the seeds both have a value for (the pairing: same seed set, same baseline)."""
    out = {}
    for s in sorted(a):
        x, y = a[s], b.get(s)
        if x is not None and y is not None:
            out[s] = float(x) - float(y)
    return out


def annotation_cost(gt: np.ndarray, pred: np.ndarray, nc: int, iou: float = 0.5,
                    fix_iou: float = FIX_IOU) -> dict[str, np.ndarray]:
    """What an annotator does to turn the pre-annotations `pred` (rows cls, conf, x1, y1, x2, y2, already at the
    review threshold) into the ground truth `gt` (rows cls, x1, y1, x2, y2) of one image, per class:
      keep   predictions matching a ground-truth box of their class at IoU >= iou (nothing to do);
      fix    a leftover prediction paired (greedily, highest IoU first) with a leftover ground-truth box that it
             overlaps at IoU >= iou with the wrong class (change the class) or with the right class at
             fix_iou <= IoU < iou (move the box): one edit, counted under the ground-truth class;
      add    ground-truth boxes left over (drawn from scratch), under their class;
      delete predictions left over, under the predicted class.
    Returns {keep, fix, add, delete}: int arrays of length nc."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 5)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 6)
    out = {k: np.zeros(nc, dtype=np.int64) for k in ("keep", "fix", "add", "delete")}
    m = match_image(gt[:, 0], gt[:, 1:5], pred[:, 0], pred[:, 1], pred[:, 2:6], iou)
    for g, _p, _i in m.tp:
        out["keep"][int(gt[g, 0])] += 1
    fp, fn = list(m.fp), list(m.fn)
    if fp and fn:
        ov = box_iou(gt[fn, 1:5], pred[fp, 2:6])
        same = gt[fn, 0][:, None] == pred[fp, 0][None, :]
        ok = np.where(same, (ov >= fix_iou) & (ov < iou), ov >= iou)
        ov = np.where(ok, ov, -1.0)
        used_g, used_p = set(), set()
        for flat in np.argsort(-ov, axis=None, kind="stable"):
            gi, pi = divmod(int(flat), ov.shape[1])
            if ov[gi, pi] < 0:
                break
            if gi in used_g or pi in used_p:
                continue
            used_g.add(gi)
            used_p.add(pi)
            out["fix"][int(gt[fn[gi], 0])] += 1
        fn = [g for i, g in enumerate(fn) if i not in used_g]
        fp = [p for i, p in enumerate(fp) if i not in used_p]
    for g in fn:
        out["add"][int(gt[g, 0])] += 1
    for p in fp:
        out["delete"][int(pred[p, 0])] += 1
    return out
