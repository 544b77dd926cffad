"""Label-efficiency statistics of a simulation (al.app.simulate): learning curves, labels to reach a target,
paired intervals and tests over seeds, the checks a comparison must pass before it has a verdict, and the
annotator's cost of correcting pre-annotations (numpy; scipy imported where a quantile is needed)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

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


MEDIAN_MIN_VALUES = 10
"""Fewest values whose median bootstrap_interval will bound: below it the percentile ends are the min and max (up
to 5 values) or their neighbours (6 to 9)."""

_MEDIANS: tuple[Callable, ...] = (np.median, np.nanmedian, statistics.median)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")


def _values(values: Sequence[float | None], what: str) -> np.ndarray:
    """The values as floats; a None or NaN is refused by its index (a missing measurement is not a number)."""
    out = np.empty(len(values), dtype=np.float64)
    for i, x in enumerate(values):
        if x is None or math.isnan(float(x)):
            raise ValueError(f"{what} {i} is missing ({x}): a missing measurement is not a value (never 0); "
                             "measure it again or leave that point out")
        out[i] = float(x)
    return out


def bootstrap_interval(values: Sequence[float], *, stat: Callable[[np.ndarray], float] = np.median,
                       resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The statistic of per-seed values (a paired difference or a saving) with its percentile bootstrap interval:
    seeds are drawn with replacement `resamples` times (seeded: the report is reproducible). Returns
    {value, low, high, n}; no values give None figures. A median of fewer than MEDIAN_MIN_VALUES values is refused."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    _check_confidence(confidence)
    if len(v) == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    if any(stat is m for m in _MEDIANS) and len(v) < MEDIAN_MIN_VALUES:
        raise ValueError(f"a percentile bootstrap interval of a median of {len(v)} values is refused: its ends are "
                         "the values' extremes (or their neighbours), not an interval with the stated coverage; use "
                         f"paired_t_interval or bca_interval, or give at least {MEDIAN_MIN_VALUES} values")
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


def paired_t_interval(diffs: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of per-seed paired differences with its Student t interval (n - 1 degrees of freedom)."""
    from scipy.stats import t as student_t

    _check_confidence(confidence)
    d = _values(diffs, "difference")
    n = len(d)
    out: dict = {"mean": None, "low": None, "high": None, "sd": None, "n": n, "method": "paired t"}
    if n == 0:
        return out
    if np.ptp(d) == 0:
        # taken as is: the float mean of equal values can miss them by an ulp, which would make a non-zero sd
        out["mean"] = float(d[0])
        if n >= 2:
            out.update(sd=0.0, low=float(d[0]), high=float(d[0]))
        return out
    out["mean"] = float(np.mean(d))
    if n < 2:
        return out
    sd = float(np.std(d, ddof=1))
    half = float(student_t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    out.update(sd=sd, low=out["mean"] - half, high=out["mean"] + half)
    return out


def sign_test(diffs: Sequence[float], tol: float = 0.0) -> dict:
    """Exact two-sided binomial test of wins (d > tol) against losses (d < -tol); ties (|d| <= tol) are dropped.
    Returns {wins, losses, ties, n, p}; n counts every difference, p is 1.0 with no wins or losses."""
    d = _values(diffs, "difference")
    wins, losses = int(np.sum(d > tol)), int(np.sum(d < -tol))
    m = wins + losses
    # exact rational sum: the p of a few seeds is a round binary fraction (7 of 8: 0.0703125), kept as such
    tail = sum((Fraction(math.comb(m, k), 2 ** m) for k in range(min(wins, losses) + 1)), Fraction(0))
    return {"wins": wins, "losses": losses, "ties": len(d) - m, "n": len(d), "p": float(min(Fraction(1), 2 * tail))}


def bca_interval(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean, resamples: int = 4000,
                 confidence: float = 0.95, seed: int = 0) -> dict:
    """The statistic with its bias-corrected and accelerated bootstrap interval (acceleration from the jackknife;
    seeded). Returns {value, low, high, n, method}: fewer than 3 values give no interval, equal values a point."""
    from scipy.stats import norm

    _check_confidence(confidence)
    v = _values(values, "value")
    n = len(v)
    out: dict = {"value": float(stat(v)) if n else None, "low": None, "high": None, "n": n, "method": "BCa"}
    if n < 3:
        return out
    if np.ptp(v) == 0:
        out.update(value=float(v[0]), low=float(v[0]), high=float(v[0]))
        return out
    theta = out["value"]
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    boot = np.array([float(stat(v[row])) for row in idx])
    # the share of resamples below the estimate, ties counted half (a median's resamples often equal it); kept
    # within what `resamples` draws can resolve, so the bias correction stays finite
    share = (np.sum(boot < theta) + np.sum(boot <= theta)) / (2 * resamples)
    z0 = float(norm.ppf(np.clip(share, 0.5 / resamples, 1 - 0.5 / resamples)))
    jack = np.array([float(stat(np.delete(v, i))) for i in range(n)])
    dev = jack.mean() - jack
    spread = float(np.sum(dev ** 2))
    accel = float(np.sum(dev ** 3)) / (6 * spread ** 1.5) if spread > 0 else 0.0
    ends = []
    for z in norm.ppf([(1 - confidence) / 2, (1 + confidence) / 2]):
        w = z0 + float(z)
        den = 1 - accel * w
        # den -> 0+ sends the adjusted level to the end on w's side; past it the formula has no meaning
        level = float(norm.cdf(z0 + w / den)) if den > 0 else (1.0 if w > 0 else 0.0)
        ends.append(float(np.quantile(boot, level)))
    out.update(low=ends[0], high=ends[1])
    return out


def _curve(labels: Sequence[float], scores: Sequence[float | None], name: str = "the curve"
           ) -> tuple[np.ndarray, np.ndarray]:
    """A learning curve as arrays, refused when empty, of unequal lengths, out of label order or missing a score."""
    x = _values(labels, f"{name}: labels")
    y = _values(scores, f"{name}: score")
    if len(x) != len(y):
        raise ValueError(f"{name}: labels ({len(x)}) and scores ({len(y)}) differ in length")
    if len(x) == 0:
        raise ValueError(f"{name} has no points")
    if np.any(np.diff(x) < 0):
        raise ValueError(f"{name}: labels {x.tolist()} are not in increasing order")
    return x, y


def labels_needed(labels: Sequence[float], scores: Sequence[float | None], target: float) -> dict:
    """Labels at which a curve (points in label order, one protocol) first reaches `target`, linear between the two
    points that bracket it: {labels, censored, bound, at_start}."""
    # Never reached: labels None, censored, and bound the last labels (it needs more). Reached: bound = labels.
    # at_start: the first point already reaches it, so labels is only an upper bound (how few would have done
    # is not measured); paired_label_ratio needs to know.
    x, y = _curve(labels, scores)
    for i in range(len(x)):
        if y[i] >= target - 1e-12:
            if i == 0:
                n = float(x[0])
            elif y[i] > y[i - 1]:
                n = float(x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))
            else:
                n = float(x[i])
            return {"labels": n, "censored": False, "bound": n, "at_start": i == 0}
    return {"labels": None, "censored": True, "bound": float(x[-1]), "at_start": False}


def reach_targets(labels: Sequence[float], scores: Sequence[float | None], targets: Sequence[float]) -> list[dict]:
    """labels_needed of the curve for each target, in the targets' order."""
    return [labels_needed(labels, scores, t) for t in targets]


SAVING_KINDS = ("exact", "lower_bound", "arm_not_reached", "neither_reached", "reference_at_start")
"""How a seed's saving is known: exactly; at least this much (the reference never reached the target, or the arm
already had at its first point); not at all (the arm never reached it; neither did; the reference reached it at
its first point, where no labels needed can be measured)."""


def paired_label_ratio(arm: Mapping[int, dict], ref: Mapping[int, dict], confidence: float = 0.95) -> dict:
    """Per seed, the saving of an arm's labels against the reference's for one target (labels_needed results), with
    a paired t-interval of log(arm / ref) and a sign test that keeps censored seeds; {per_seed, t, saving, sign,
    seeds, unpaired}."""
    # The saving 1 - arm / ref is reported as it is: capped at +1, unbounded below (-2 is three times the labels),
    # never clipped, and None where it is undefined; those seeds are listed in `seeds`, never given a value.
    # The interval is of the log-ratio, which treats half and twice the labels alike (-log 2, +log 2); `saving` is
    # it back on the saving scale (1 - exp, ends swapped): the saving of the geometric-mean ratio. It counts the
    # exact and lower-bound seeds; a lower bound taken as exact pulls it towards no saving, while leaving out the
    # seeds where the arm never reached the target favours the arm, so it is read with seeds["arm_not_reached"]
    # and with `sign`, which counts every seed whose direction is known: an exact one by its sign, a lower bound
    # above 0 as a win, an arm that did not reach the target within at least the reference's labels as a loss.
    per_seed: dict[int, dict] = {}
    signs: list[float] = []
    for s in sorted(set(arm) & set(ref)):
        a, r = arm[s], ref[s]
        ratio: float | None = None
        if a["censored"]:
            kind = "neither_reached" if r["censored"] else "arm_not_reached"
            if not r["censored"] and not r.get("at_start") and a["bound"] >= r["labels"]:
                signs.append(-1.0)  # it needed more than its last labels, which are already the reference's or more
        elif r.get("at_start"):
            kind = "reference_at_start"
        else:
            kind = "lower_bound" if r["censored"] or a.get("at_start") else "exact"
            if a["labels"] <= 0 or r["bound"] <= 0:
                raise ValueError(f"seed {s}: labels needed {a['labels']} against {r['bound']}: a ratio of labels "
                                 "needs positive counts (a curve whose first point is at 0 labels)")
            ratio = a["labels"] / r["bound"]
            if kind == "exact":
                signs.append(float(np.sign(1 - ratio)))
            elif ratio < 1:
                signs.append(1.0)
        per_seed[s] = {"saving": None if ratio is None else 1 - ratio,
                       "log_ratio": None if ratio is None else math.log(ratio), "kind": kind}
    logs = [d["log_ratio"] for d in per_seed.values() if d["kind"] in ("exact", "lower_bound")]
    t = paired_t_interval(logs, confidence)
    back = {"mean": None if t["mean"] is None else 1 - math.exp(t["mean"]),
            "low": None if t["high"] is None else 1 - math.exp(t["high"]),
            "high": None if t["low"] is None else 1 - math.exp(t["low"]),
            "n": t["n"], "method": "paired t of log(arm / reference), as a saving"}
    return {"per_seed": per_seed, "t": t, "saving": back, "sign": sign_test(signs),
            "seeds": {k: [s for s, d in per_seed.items() if d["kind"] == k] for k in SAVING_KINDS},
            "unpaired": sorted(set(arm) ^ set(ref))}


def _interp_at(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """The curve's score at `at` (inside its range), linear between points; the first of equal labels wins."""
    i = int(np.searchsorted(x, at, side="left"))
    if x[i] == at:
        return float(y[i])
    return float(y[i - 1] + (at - x[i - 1]) / (x[i] - x[i - 1]) * (y[i] - y[i - 1]))


def auc_common_range(curves: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
                     lo: float | None = None, hi: float | None = None) -> dict[str, float]:
    """Each curve's mean score over the same label range [lo, hi] (trapezoid, linear at the ends): the
    intersection of the curves' ranges unless given, so curves of different label spans (a box budget) compare
    over the labels they all have. A range outside a curve is refused (no extrapolation); lo == hi gives the
    score there."""
    arrays = {name: _curve(lab, sc, f"curve {name!r}") for name, (lab, sc) in curves.items()}
    if not arrays:
        return {}
    lo = max(float(x[0]) for x, _ in arrays.values()) if lo is None else float(lo)
    hi = min(float(x[-1]) for x, _ in arrays.values()) if hi is None else float(hi)
    if lo > hi:
        raise ValueError(f"label range [{lo:g}, {hi:g}] is empty: the curves' label ranges do not overlap")
    out = {}
    for name, (x, y) in arrays.items():
        if lo < x[0] or hi > x[-1]:
            raise ValueError(f"label range [{lo:g}, {hi:g}] is outside curve {name!r}'s [{x[0]:g}, {x[-1]:g}]")
        if lo == hi:
            out[name] = _interp_at(x, y, lo)
            continue
        area = 0.0
        for i in range(len(x) - 1):
            a, b = max(float(x[i]), lo), min(float(x[i + 1]), hi)
            if b > a:  # the segment's share of [lo, hi]; segments of no width add nothing
                slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
                area += (2 * y[i] + slope * (a - x[i] + b - x[i])) / 2 * (b - a)
        out[name] = float(area / (hi - lo))
    return out


VERDICTS = ("better", "worse", "no difference", "inconclusive")


def verdict(interval: dict, *, higher_is_better: bool, floor_ok: bool = True, reference_rises: bool = True,
            compute_ok: bool = True, min_n: int = 3) -> dict:
    """One of VERDICTS for an arm against its reference from a paired interval ({low, high, n}) and the checks
    that make one meaningful; {verdict, reason}. Every failed check is named, and any makes it inconclusive."""
    n = interval.get("n") or 0
    failed = []
    if n < min_n:
        failed.append(f"{n} seeds, fewer than the {min_n} a verdict needs")
    if not floor_ok:
        failed.append("the arm's or the reference's models did not learn (best mAP50-95 under the floor or the "
                      "share of the upper bound)")
    if not reference_rises:
        failed.append("the reference curve is flat (its last point is not above its first by more than the "
                      "retraining noise), so these labels show no learning to compare")
    if not compute_ok:
        failed.append("the points are compute-limited (more training raised mAP50-95 by more than the noise), so "
                      "the curves measure the training budget, not the labels")
    low, high = interval.get("low"), interval.get("high")
    if not failed and (low is None or high is None):
        failed.append("there is no interval")
    if failed or low is None or high is None:
        return {"verdict": "inconclusive", "reason": "Inconclusive: " + "; ".join(failed) + "."}
    span = f"[{low:+.4g}, {high:+.4g}] over {n} seeds"
    if low > 0 or high < 0:
        up = low > 0
        word = "better" if up == higher_is_better else "worse"
        return {"verdict": word, "reason": f"The interval {span} is {'above' if up else 'below'} 0."}
    return {"verdict": "no difference", "reason": f"The interval {span} includes 0: no difference shown."}


def learned(scores: Sequence[float | None], upper_bound: float, *, floor: float = 0.1, share: float = 0.2) -> bool:
    """Whether a curve's best point reaches the absolute floor (mAP50-95) and `share` of the upper bound (the
    model trained on the whole pool)."""
    best = float(np.max(_values(scores, "score"))) if len(scores) else -math.inf
    return best >= floor and best >= share * upper_bound


def rises(scores: Sequence[float | None], noise: float) -> bool:
    """Whether a curve's last point is above its first by more than `noise` (retrain_noise's threshold)."""
    y = _values(scores, "score")
    return len(y) >= 2 and float(y[-1] - y[0]) > noise


def retrain_noise(pairs: Sequence[tuple[float, float]]) -> dict:
    """The noise of one training from pairs of mAP50-95 of the same point trained twice: {sd, threshold, n}, where
    threshold = 2 * sd * sqrt 2 is what a difference of two trainings must exceed to be above the noise."""
    # sd = RMS of the pair differences / sqrt 2, about 0 rather than their mean: which of a pair comes first is
    # arbitrary, so the differences' true mean is 0 and estimating it would only cost a degree of freedom
    if not pairs:
        raise ValueError("retraining noise needs at least one pair of trainings of the same point")
    a = _values([p[0] for p in pairs], "pair")
    b = _values([p[1] for p in pairs], "pair")
    sd = math.sqrt(float(np.mean((a - b) ** 2))) / math.sqrt(2)
    return {"sd": sd, "threshold": 2 * sd * math.sqrt(2), "n": len(pairs)}


def compute_check(base: Sequence[float], doubled: Sequence[float], noise: dict) -> dict:
    """Whether curve points are compute-limited, from the same points trained with the usual and with doubled
    compute: {gains, median_gain, threshold, limited, reason}, limited when the median gain is above the noise."""
    # The median, not a t-interval above the threshold: the threshold already stands two SDs above the noise, and
    # an interval above it as well would miss a real limit at a few pairs, letting a training-budget artefact
    # pass as a label effect; one outlying pair cannot move the median past it alone.
    b, d = _values(base, "base"), _values(doubled, "doubled")
    if len(b) != len(d) or len(b) == 0:
        raise ValueError(f"base ({len(b)}) and doubled ({len(d)}) must be the same, non-zero number of points")
    gains = (d - b).tolist()
    med = float(np.median(gains))
    thr = float(noise["threshold"])
    limited = med > thr
    reason = (f"median gain {med:+.4g} from doubled compute is {'above' if limited else 'within'} the retraining "
              f"noise threshold {thr:.4g} over {len(gains)} points")
    return {"gains": gains, "median_gain": med, "threshold": thr, "limited": limited, "reason": reason}


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
