"""Bootstrap intervals of the detection scores over images (numpy only)."""

from __future__ import annotations

import numpy as np


def prf_intervals(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, resamples: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 (micro: summed counts) of per-image counts, each with a percentile bootstrap
    interval: images are drawn with replacement `resamples` times (seeded, so a release is reproducible).
    Returns {metric: {value, low, high}}; an empty set gives zeros."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (tp, fp, fn))
    if not (len(tp) == len(fp) == len(fn)):
        raise ValueError("tp, fp and fn need one count per image each")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")
    value = _prf(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))
    if len(tp) == 0:
        return {m: {"value": 0.0, "low": 0.0, "high": 0.0} for m in value}
    idx = np.random.default_rng(seed).integers(0, len(tp), size=(resamples, len(tp)))
    boot = _prf(tp[idx].sum(1), fp[idx].sum(1), fn[idx].sum(1))
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    out = {}
    for m, v in value.items():
        low, high = np.percentile(boot[m], q)
        out[m] = {"value": float(v[0]), "low": float(low), "high": float(high)}
    return out


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {"precision": p, "recall": r, "f1": f1}
