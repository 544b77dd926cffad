"""IoU matching of predictions to ground truth, per image and class (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N,4) x (M,4) -> (N,M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class ImageMatch:
    """Outcome of matching one image: (gt_idx, pred_idx, iou) pairs, unmatched preds, unmatched gts."""

    tp: list[tuple[int, int, float]] = field(default_factory=list)
    fp: list[int] = field(default_factory=list)
    fn: list[int] = field(default_factory=list)


def match_image(
    gt_cls, gt_boxes, pred_cls, pred_conf, pred_boxes, iou_thr: float = 0.5
) -> ImageMatch:
    """Greedy class-aware matching: predictions in descending confidence each take the
    still-unmatched ground-truth box of the same class with the highest IoU >= iou_thr."""
    gt_cls = np.asarray(gt_cls, dtype=int).reshape(-1)
    pred_cls = np.asarray(pred_cls, dtype=int).reshape(-1)
    pred_conf = np.asarray(pred_conf, dtype=float).reshape(-1)
    iou = box_iou(gt_boxes, pred_boxes)
    taken = np.zeros(len(gt_cls), dtype=bool)
    out = ImageMatch()
    # stable sort keeps the input order among equal confidences, so results are deterministic
    for p in np.argsort(-pred_conf, kind="stable"):
        if len(gt_cls):
            cand = np.where((gt_cls == pred_cls[p]) & ~taken, iou[:, p], -1.0)
            g = int(np.argmax(cand))
            if cand[g] >= iou_thr:
                taken[g] = True
                out.tp.append((g, int(p), float(cand[g])))
                continue
        out.fp.append(int(p))
    out.fn = [int(g) for g in np.where(~taken)[0]]
    out.tp.sort()
    out.fp.sort()
    return out


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; a zero denominator gives 0.0."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1


def summarize(records: list[dict], names: list[str]) -> dict:
    """Per-class and overall (micro) counts and P/R/F1 from image records that carry
    "gt" ([cls,x1,y1,x2,y2]), "pred" ([cls,conf,x1,y1,x2,y2]), "tp", "fp", "fn" as written by validate."""
    n = len(names)
    tp = np.zeros(n, dtype=int)
    fp = np.zeros(n, dtype=int)
    fn = np.zeros(n, dtype=int)
    for rec in records:
        gt, pred = rec["gt"], rec["pred"]
        for g, _p, _iou in rec["tp"]:
            tp[int(gt[g][0])] += 1
        for p in rec["fp"]:
            fp[int(pred[p][0])] += 1
        for g in rec["fn"]:
            fn[int(gt[g][0])] += 1
    per_class = {}
    for c, name in enumerate(names):
        p, r, f1 = prf(int(tp[c]), int(fp[c]), int(fn[c]))
        per_class[name] = {"tp": int(tp[c]), "fp": int(fp[c]), "fn": int(fn[c]),
                           "precision": p, "recall": r, "f1": f1}
    p, r, f1 = prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    overall = {"tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()),
               "precision": p, "recall": r, "f1": f1}
    return {"per_class": per_class, "overall": overall}


def match_record(rec: dict, iou_thr: float = 0.5) -> dict:
    """Fill rec's "tp"/"fp"/"fn" from its "gt" and "pred" lists; returns rec."""
    gt = np.asarray(rec["gt"], dtype=float).reshape(-1, 5)
    pred = np.asarray(rec["pred"], dtype=float).reshape(-1, 6)
    m = match_image(gt[:, 0], gt[:, 1:5], pred[:, 0], pred[:, 1], pred[:, 2:6], iou_thr)
    rec["tp"] = [[g, p, round(i, 4)] for g, p, i in m.tp]
    rec["fp"] = m.fp
    rec["fn"] = m.fn
    return rec
