"""The promotion gate's statistics (pure numpy): a model's per-image results on the decision set, AP the way
Ultralytics computes it (also on weighted, i.e. resampled, images), a paired bootstrap over images of the
challenger-minus-champion difference, per-class AP deltas and regression alarms, and the verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("f1", "map50", "map50_95")
EPS = 1e-9
"""Slack of the threshold comparisons (float noise must not flip a verdict)."""
_AP_EPS = 1e-16  # Ultralytics' recall denominator slack (ap_per_class)
_GRID = np.linspace(0, 1, 101)  # Ultralytics' 101-point interpolation (COCO)


@dataclass
class DecisionArrays:
    """One model on the decision images, per image: the counts behind F1 at the configured conf and IoU, and the
    IoU-0.50:0.95 matches of every low-confidence prediction behind mAP (what ap_per_class reads), each prediction
    and each ground-truth box tagged with its image's index."""

    images: list[str]
    img_tp: np.ndarray  # (n,) int
    img_fp: np.ndarray
    img_fn: np.ndarray
    pred_tp: np.ndarray  # (P, 10) bool
    pred_conf: np.ndarray  # (P,)
    pred_cls: np.ndarray  # (P,) int
    pred_img: np.ndarray  # (P,) int
    tgt_cls: np.ndarray  # (T,) int
    tgt_img: np.ndarray  # (T,) int

    @classmethod
    def build(cls, images: Sequence[str], records: Sequence[Mapping], stats: Sequence[Mapping],
              order: Sequence[int] | None = None) -> DecisionArrays:
        """From the validate step's records (matched at conf/iou: tp, fp, fn lists) and stats (tp [n_pred, 10],
        conf, pred_cls, target_cls), all aligned with `images`. The predictions are laid end to end in `order`
        (image indices; default: as given): the validator's order makes AP equal to its own on ties of
        confidence, since ap_per_class sorts the pooled predictions with an unstable sort."""
        if not (len(images) == len(records) == len(stats)):
            raise ValueError(f"{len(images)} images, {len(records)} records and {len(stats)} stats: not aligned")
        idx = list(range(len(images))) if order is None else [int(i) for i in order]
        if sorted(idx) != list(range(len(images))):
            raise ValueError("order must list every image index once")
        seq = [stats[i] for i in idx]
        n_pred = [len(s["conf"]) for s in seq]
        n_tgt = [len(s["target_cls"]) for s in seq]

        def cat(key: str, dtype, shape=(0,)) -> np.ndarray:
            parts = [np.asarray(s[key], dtype=dtype).reshape((-1, *shape[1:])) for s in seq]
            return np.concatenate(parts) if parts else np.zeros(shape, dtype)

        return cls(images=list(images),
                   img_tp=np.array([len(r.get("tp", [])) for r in records], dtype=np.int64),
                   img_fp=np.array([len(r.get("fp", [])) for r in records], dtype=np.int64),
                   img_fn=np.array([len(r.get("fn", [])) for r in records], dtype=np.int64),
                   pred_tp=cat("tp", bool, (0, 10)), pred_conf=cat("conf", np.float64),
                   pred_cls=cat("pred_cls", np.int64), pred_img=np.repeat(np.array(idx, dtype=np.int64), n_pred),
                   tgt_cls=cat("target_cls", np.int64), tgt_img=np.repeat(np.array(idx, dtype=np.int64), n_tgt))

    def as_dict(self) -> dict[str, np.ndarray]:
        """The arrays to store (np.savez); `from_dict` reads them back."""
        return {"images": np.array(self.images, dtype=str), "img_tp": self.img_tp, "img_fp": self.img_fp,
                "img_fn": self.img_fn, "pred_tp": self.pred_tp, "pred_conf": self.pred_conf,
                "pred_cls": self.pred_cls, "pred_img": self.pred_img, "tgt_cls": self.tgt_cls,
                "tgt_img": self.tgt_img}

    @classmethod
    def from_dict(cls, d: Mapping[str, np.ndarray]) -> DecisionArrays:
        return cls(images=[str(x) for x in d["images"]], img_tp=np.asarray(d["img_tp"]),
                   img_fp=np.asarray(d["img_fp"]), img_fn=np.asarray(d["img_fn"]),
                   pred_tp=np.asarray(d["pred_tp"], dtype=bool).reshape(-1, 10), pred_conf=np.asarray(d["pred_conf"]),
                   pred_cls=np.asarray(d["pred_cls"]), pred_img=np.asarray(d["pred_img"]),
                   tgt_cls=np.asarray(d["tgt_cls"]), tgt_img=np.asarray(d["tgt_img"]))

    def instances(self, nc: int) -> np.ndarray:
        """Ground-truth boxes per class."""
        return np.bincount(self.tgt_cls, minlength=nc)[:nc]


def resample_weights(n: int, resamples: int, seed: int | Sequence[int]) -> np.ndarray:
    """(resamples, n) int: how often each image is drawn in each bootstrap resample (n draws with replacement).
    The same seed gives the same matrix, and both models of a comparison use it (the bootstrap is paired)."""
    if n <= 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (idx + (np.arange(resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


def f1_values(a: DecisionArrays, w: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) of each row of image weights `w` (B, n); 0 where nothing was counted."""
    tp, fp, fn = (w @ a.img_tp).astype(float), (w @ a.img_fp).astype(float), (w @ a.img_fn).astype(float)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def class_ap(a: DecisionArrays, w: np.ndarray, nc: int,
             thresholds: Sequence[int] = range(10)) -> tuple[np.ndarray, np.ndarray]:
    """AP at the ten IoU thresholds of every class for each row of image weights `w` (B, n): (B, nc, 10), and which
    classes have ground truth in that row (B, nc). With unit weights this is Ultralytics' ap_per_class: predictions
    sorted by confidence, cumulative TP/FP, the precision envelope, 101-point interpolation, trapezoid rule; a
    weight k counts the image k times (a bootstrap resample). Only the IoU `thresholds` (column indices) asked
    for are computed (mAP50 needs column 0 alone); the others stay 0.

    The curve is kept at the points that can change the result, so the cost grows with the true positives, not
    with every low-confidence prediction: each TP, and the end of each run of FPs before it (the points inside
    a run share its recall and lie below the envelope; FPs after the last TP only precede the (recall, 0)
    sentinel). The FP counts before each TP are one matrix product of the weights."""
    w = np.asarray(w, dtype=np.float64)
    b = w.shape[0]
    ap = np.zeros((b, nc, 10))
    n_l = np.zeros((b, nc))
    if len(a.tgt_cls):
        tgt_counts = np.zeros((len(a.images), nc))
        np.add.at(tgt_counts, (a.tgt_img, a.tgt_cls), 1)
        n_l = w @ tgt_counts
    order = np.argsort(-a.pred_conf)  # the same (unstable) sort as ap_per_class, so ties fall the same way
    cls, img, tp = a.pred_cls[order], a.pred_img[order], a.pred_tp[order]
    n = len(a.images)
    for c in range(nc):
        i = cls == c
        if not i.any() or not (n_l[:, c] > 0).any():
            continue
        img_c, tp_c = img[i], tp[i]
        for j in thresholds:
            hits = np.flatnonzero(tp_c[:, j])
            if not len(hits):
                continue  # no TP: precision 0 at recall 0, AP 0
            # FPs of each image before each TP (cumulative), then weighted by the resamples
            fp_at = np.zeros((n, len(hits)))
            fp_pos = np.flatnonzero(~tp_c[: hits[-1], j])
            if len(fp_pos):
                k = np.searchsorted(hits, fp_pos)  # the TP each FP precedes
                np.add.at(fp_at, (img_c[fp_pos], k), 1)
                fp_at = np.cumsum(fp_at, axis=1)
            cfp = w @ fp_at  # (B, m)
            ctp = np.cumsum(w[:, img_c[hits]], axis=1)
            ap[:, c, j] = _ap_compressed(ctp, cfp, n_l[:, c])
    return ap, n_l > 0


def _ap_compressed(ctp: np.ndarray, cfp: np.ndarray, n_l: np.ndarray) -> np.ndarray:
    """(B,) AP of one class at one IoU threshold from the weighted cumulative TP and FP counts at each TP (B, m):
    the curve's points are, for each TP k, the end of the FP run before it (the recall of TP k-1) and TP k."""
    b, m = ctp.shape
    prev = np.concatenate([np.zeros((b, 1)), ctp[:, :-1]], axis=1)
    tpc = np.stack([prev, ctp], axis=2).reshape(b, 2 * m)  # run end k, then TP k
    fpc = np.repeat(cfp, 2, axis=1)
    recall = tpc / (n_l[:, None] + _AP_EPS)
    den = tpc + fpc
    # before a resample's first drawn prediction nothing is counted: precision 1, the value of the curve's start
    precision = np.divide(tpc, den, out=np.ones_like(den), where=den > 0)
    # Ultralytics' sentinels (compute_ap): recall 0 at precision 1 first, then the last recall again at
    # precision 0, then recall 1 at precision 0
    mrec = np.concatenate([np.zeros((b, 1)), recall, recall[:, -1:], np.ones((b, 1))], axis=1)
    mpre = np.concatenate([np.ones((b, 1)), precision, np.zeros((b, 2))], axis=1)
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre, axis=1), axis=1), axis=1)
    y = _interp_rows(mrec, mpre)
    out = ((y[:, 1:] + y[:, :-1]) * np.diff(_GRID) / 2).sum(1)  # np.trapezoid
    return np.where(n_l > 0, out, 0.0)


def _interp_rows(xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp(_GRID, xp[r], fp[r]) for every row r (xp rows non-decreasing in [0, 1]) in one np.interp call: row
    r is shifted by 2r, so the rows lie end to end without overlapping. One row is Ultralytics' call exactly; the
    shift costs the resampled rows at most ~1e-10 of rounding, and keeps np.interp's rule for equal recalls."""
    if len(xp) == 1:
        return np.interp(_GRID, xp[0], fp[0])[None]
    shift = 2.0 * np.arange(len(xp))[:, None]
    return np.interp((_GRID[None, :] + shift).ravel(), (xp + shift).ravel(), fp.ravel()).reshape(len(xp), -1)


def map_values(ap: np.ndarray, present: np.ndarray, metric: str) -> np.ndarray:
    """mAP50 or mAP50-95 per row, the mean over the classes with ground truth (as Ultralytics averages)."""
    per = ap[:, :, 0] if metric == "map50" else ap.mean(2)
    k = present.sum(1)
    return np.divide((per * present).sum(1), k, out=np.zeros(len(k)), where=k > 0)


def metric_values(a: DecisionArrays, w: np.ndarray, metric: str, nc: int) -> np.ndarray:
    """The gate's metric for each row of image weights."""
    if metric == "f1":
        return f1_values(a, w)
    if metric not in METRICS:
        raise ValueError(f"unknown gate metric {metric!r}; use one of {METRICS}")
    ap, present = class_ap(a, w, nc, (0,) if metric == "map50" else range(10))
    return map_values(ap, present, metric)


def per_class_ap(a: DecisionArrays, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """(nc,) AP50 and (nc,) AP50-95 of each class on the whole set (unit weights)."""
    ap, _ = class_ap(a, np.ones((1, len(a.images))), nc)
    return ap[0, :, 0], ap[0].mean(1)


@dataclass(frozen=True)
class GateResult:
    """The verdict on a challenger: its metric and the champion's, the paired difference with its bootstrap
    interval, the per-class AP50-95 change, the classes that raised an alarm, promoted or not and why."""

    metric: str
    challenger_value: float
    champion_value: float
    delta: float
    ci_low: float
    ci_high: float
    per_class_delta: dict[str, float]
    alarms: list[str]
    promoted: bool
    reason: str


def compare(champion: DecisionArrays, challenger: DecisionArrays, names: Sequence[str], *, metric: str,
            margin: float, require_significant: bool, confidence: float, resamples: int, seed: int | Sequence[int],
            max_class_drop: float, min_class_instances: int) -> GateResult:
    """Paired bootstrap over the decision images (the same resampled images for both models) of challenger minus
    champion, and the rule: promoted when the difference is above `margin`, the interval's lower bound is above 0
    (only with require_significant), and no class with at least `min_class_instances` boxes lost more than
    `max_class_drop` AP50-95."""
    if champion.images != challenger.images:
        raise ValueError("the two models were evaluated on different decision images; evaluate both on the same set")
    nc = len(names)
    n = len(challenger.images)
    one = np.ones((1, n))
    w = np.vstack([one, resample_weights(n, resamples, seed)])  # row 0: the whole set, once each
    # one AP pass per model gives the point value, the resamples and the per-class AP50-95 of the alarms
    cols = (0,) if metric == "map50" else range(10)
    ch_ap, ch_pres = class_ap(challenger, w if metric == "map50_95" else one, nc)
    cp_ap, cp_pres = class_ap(champion, w if metric == "map50_95" else one, nc)
    if metric == "f1":
        ch_vals, cp_vals = f1_values(challenger, w), f1_values(champion, w)
    elif metric == "map50_95":
        ch_vals, cp_vals = map_values(ch_ap, ch_pres, metric), map_values(cp_ap, cp_pres, metric)
    elif metric == "map50":
        ch_vals = map_values(*class_ap(challenger, w, nc, cols), metric)
        cp_vals = map_values(*class_ap(champion, w, nc, cols), metric)
    else:
        raise ValueError(f"unknown gate metric {metric!r}; use one of {METRICS}")
    ch_val, cp_val = float(ch_vals[0]), float(cp_vals[0])
    diffs = ch_vals[1:] - cp_vals[1:]
    delta = ch_val - cp_val
    alpha = (1.0 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(diffs, [alpha, 1 - alpha])) if len(diffs) else (delta, delta)
    ch_ap, cp_ap = ch_ap[0].mean(1), cp_ap[0].mean(1)  # AP50-95 per class on the whole set
    inst = challenger.instances(nc)
    per_class = {name: round(float(ch_ap[i] - cp_ap[i]), 6) for i, name in enumerate(names)}
    alarms = [name for i, name in enumerate(names)
              if inst[i] > 0 and inst[i] >= min_class_instances and cp_ap[i] - ch_ap[i] > max_class_drop + EPS]
    why = []
    if not delta > margin + EPS:
        why.append(f"{metric} {delta:+.4f} is not above the margin {margin:+.4f}")
    if require_significant and not lo > EPS:
        why.append(f"the {confidence:.0%} interval's lower bound {lo:+.4f} is not above 0")
    if alarms:
        why.append("AP50-95 of " + ", ".join(f"'{a}' {per_class[a]:+.4f}" for a in alarms)
                   + f" dropped by more than {max_class_drop:.4f}")
    promoted = not why
    reason = (f"{metric} {delta:+.4f} > margin {margin:+.4f}" + (", interval above 0" if require_significant else "")
              + ", no class regression") if promoted else "; ".join(why)
    return GateResult(metric=metric, challenger_value=ch_val, champion_value=cp_val, delta=delta, ci_low=lo,
                      ci_high=hi, per_class_delta=per_class, alarms=alarms, promoted=promoted, reason=reason)
