"""Hard-example scoring and selection: pure functions of error records, counts and (numpy) model outputs.

Seed 004's weighted FN score (strategy fn_weighted):

score = class_balance_weight    * class_balance
      + size_diversity_weight   * size_diversity
      + spatial_diversity_weight * spatial_diversity
      + uncertainty_weight      * uncertainty          (seed 004's "visual_difficulty")

Each component lies in [0, 1]; the score is the plain weighted sum (in [0, sum of weights]), so with the default
weights (0.3, 0.3, 0.2, 0.2) it lies in [0, 1]. Records follow docs/DESIGN.md (error_report.json "errors").

Pool strategies (entropy, combined; the second half of this module) score images from the detection head's class
probabilities *before* NMS, so boxes that NMS suppresses still count, and from backbone embeddings (diversity).
Two baselines isolate single ingredients: most_boxes ranks by the number of boxes the model predicts (the control
for a strategy that wins by picking busier images), diversity is k-center greedy on the embeddings alone.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

WEIGHT_KEYS = ("class_balance_weight", "size_diversity_weight", "spatial_diversity_weight", "uncertainty_weight")
COMPONENT_KEYS = ("class_balance", "size_diversity", "spatial_diversity", "uncertainty")
SIZE_BUCKETS = ("small", "medium", "large")

# Seed 004: "Prefer edge/corner cases".
SPATIAL_SCORE = {"corner": 1.0, "edge": 0.6, "center": 0.2}

# Seed 004: "Prefer rare sizes (tiny/large)". size_diversity blends how rare the bucket is with a fixed bonus for
# the two extreme buckets, so small and large boxes stay preferred even when they happen to be common.
SIZE_RARITY_SHARE = 0.75
SIZE_EXTREME_SHARE = 0.25
EXTREME_SIZES = frozenset({"small", "large"})

# Only used to word the human-readable reasons; they do not change the score.
LOW_CONTRAST_BELOW = 0.15
UNUSUAL_ASPECT_ABOVE = 2.0  # w/h above this or below its inverse


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Return the four weights as floats; raise ValueError naming the key if one is missing, unknown, negative,
    not a finite number, or if all are 0."""
    unknown = sorted(set(weights) - set(WEIGHT_KEYS))
    if unknown:
        raise ValueError(f"unknown sampling weight {unknown[0]!r}; expected exactly {', '.join(WEIGHT_KEYS)}")
    out: dict[str, float] = {}
    for key in WEIGHT_KEYS:
        if key not in weights:
            raise ValueError(f"sampling weight {key!r} is missing; expected exactly {', '.join(WEIGHT_KEYS)}")
        try:
            value = float(weights[key])
        except (TypeError, ValueError):
            raise ValueError(f"sampling weight {key!r} = {weights[key]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"sampling weight {key!r} = {weights[key]!r}; it must be a finite number >= 0")
        out[key] = value
    if sum(out.values()) <= 0:
        raise ValueError(f"all sampling weights ({', '.join(WEIGHT_KEYS)}) are 0; set at least one above 0")
    return out


def _class_count_map(class_counts: Mapping[int, int] | Sequence[int] | None) -> dict[int, int]:
    if class_counts is None:
        return {}
    if isinstance(class_counts, Mapping):
        return {int(k): int(v) for k, v in class_counts.items()}
    return {i: int(v) for i, v in enumerate(class_counts)}


def class_balance(cls: int, class_counts: Mapping[int, int] | Sequence[int] | None) -> float:
    """1 - count[cls] / max(count): 0 for the most frequent class, 1 for a class with no labelled training boxes.

    `class_counts` maps class id -> labelled training boxes (a list is indexed by class id); a class absent from
    it counts 0. With no counts at all (or all 0) every class gets 1.0: no class is preferred.
    """
    counts = _class_count_map(class_counts)
    top = max(counts.values(), default=0)
    if top <= 0:
        return 1.0
    return 1.0 - max(0, counts.get(int(cls), 0)) / top


def size_rarity(size: str, bucket_counts: Mapping[str, int]) -> float:
    """(1 - freq[size]) / max over the three buckets of (1 - freq[b]), so the rarest bucket gets 1.0.

    freq[b] = bucket_counts[b] / sum(bucket_counts); a bucket absent from the counts has freq 0 (rarity 1).
    With no counts at all every bucket gets 1.0.
    """
    _check_size(size)
    total = sum(max(0, int(bucket_counts.get(b, 0))) for b in SIZE_BUCKETS)
    if total <= 0:
        return 1.0
    rarity = {b: 1.0 - max(0, int(bucket_counts.get(b, 0))) / total for b in SIZE_BUCKETS}
    top = max(rarity.values())
    # top > 0 always: at most one bucket can hold every box, leaving the other two at rarity 1.
    return rarity[size] / top


def size_diversity(size: str, bucket_counts: Mapping[str, int]) -> float:
    """SIZE_RARITY_SHARE * size_rarity + SIZE_EXTREME_SHARE * (1 if size is small or large else 0)."""
    extreme = 1.0 if size in EXTREME_SIZES else 0.0
    return SIZE_RARITY_SHARE * size_rarity(size, bucket_counts) + SIZE_EXTREME_SHARE * extreme


def spatial_diversity(position: str) -> float:
    """corner 1.0, edge 0.6, center 0.2."""
    try:
        return SPATIAL_SCORE[position]
    except KeyError:
        raise ValueError(f"error position {position!r} is not one of {', '.join(SPATIAL_SCORE)}") from None


def conf_uncertainty(conf: float, threshold: float = 0.5) -> float:
    """Closeness of a confidence to the decision threshold: 1 - |conf - t| / max(t, 1 - t), clipped to [0, 1].

    With t = 0.5 this is 1 - |2 * conf - 1|: 1.0 at conf 0.5, 0.0 at conf 0 or 1.
    """
    span = max(threshold, 1.0 - threshold)
    return _clip01(1.0 - abs(float(conf) - threshold) / span)


def uncertainty(record: Mapping) -> float:
    """Visual difficulty of an error, in [0, 1].

    FN records: their "difficulty" (computed by analyze from low contrast / unusual aspect).
    Other kinds (FP, prediction-only pool candidates) that carry a "conf": conf_uncertainty(conf).
    Otherwise "difficulty"; a record with neither scores 0.
    """
    if record.get("kind") != "fn" and record.get("conf") is not None:
        return conf_uncertainty(record["conf"])
    if record.get("difficulty") is not None:
        return _clip01(float(record["difficulty"]))
    if record.get("conf") is not None:
        return conf_uncertainty(record["conf"])
    return 0.0


def score_errors(
    errors: Iterable[Mapping],
    class_counts: Mapping[int, int] | Sequence[int] | None,
    weights: Mapping[str, float],
    train_size_counts: Mapping[str, int] | None = None,
    *,
    kinds: Collection[str] = ("fn",),
) -> list[dict]:
    """Score the records whose "kind" is in `kinds` (fn_weighted: FNs only); return copies with "score" and
    "components" added, in input order.

    Size rarity is measured among `train_size_counts` ({small|medium|large: labelled training boxes}) when given,
    otherwise among the scored candidates themselves.
    """
    w = validate_weights(weights)
    candidates = [e for e in errors if e.get("kind") in kinds]
    if train_size_counts is None:
        bucket_counts: Mapping[str, int] = Counter(e["size"] for e in candidates)
    else:
        bucket_counts = train_size_counts
    out = []
    for e in candidates:
        comp = {
            "class_balance": class_balance(e["cls"], class_counts),
            "size_diversity": size_diversity(e["size"], bucket_counts),
            "spatial_diversity": spatial_diversity(e["position"]),
            "uncertainty": uncertainty(e),
        }
        score = sum(w[f"{k}_weight"] * comp[k] for k in COMPONENT_KEYS)
        out.append({**e, "score": score, "components": comp})
    return out


def describe(record: Mapping, names: Sequence[str] | None = None) -> str:
    """One human-readable reason, e.g. "fn small 'four' at corner, low contrast (difficulty 0.71)"."""
    cls = int(record["cls"])
    label = names[cls] if names is not None and 0 <= cls < len(names) else f"class {cls}"
    tags = []
    contrast = record.get("contrast")
    if contrast is not None and float(contrast) < LOW_CONTRAST_BELOW:
        tags.append("low contrast")
    aspect = record.get("aspect")
    if aspect is not None and float(aspect) > 0 and max(float(aspect), 1 / float(aspect)) > UNUSUAL_ASPECT_ABOVE:
        tags.append("unusual aspect")
    text = f"{record.get('kind', '?')} {record.get('size', '?')} '{label}' at {record.get('position', '?')}"
    if tags:
        text += ", " + ", ".join(tags)
    if record.get("kind") != "fn" and record.get("conf") is not None:
        return f"{text} (conf {float(record['conf']):.2f})"
    if record.get("difficulty") is not None:
        return f"{text} (difficulty {float(record['difficulty']):.2f})"
    return text


def select_images(
    scored: Iterable[Mapping],
    max_images: int,
    exclude: Collection[str] = frozenset(),
    *,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """Group scored errors by image and return up to `max_images` picks, best first, never an excluded image.

    An image's score is its best error's score; ties go to the image with more errors, then to the smaller
    path (so the result does not depend on input order). Each pick is
    {"image", "score", "components" (of the best error), "reasons" (one per error), "errors" (best first)}.
    """
    if max_images < 0:
        raise ValueError(f"max_images is {max_images}; it must be >= 0")
    excluded = {str(p) for p in exclude}
    by_image: dict[str, list[dict]] = {}
    for e in scored:
        image = str(e["image"])
        if image not in excluded:
            by_image.setdefault(image, []).append(dict(e))
    groups = []
    for image, errs in by_image.items():
        # Stable order inside an image: score, then the record's index.
        errs.sort(key=lambda r: (-float(r["score"]), r.get("kind", ""), int(r.get("index", 0))))
        groups.append((image, errs))
    groups.sort(key=lambda g: (-float(g[1][0]["score"]), -len(g[1]), g[0]))
    picks = []
    for image, errs in groups[:max_images]:
        best = errs[0]
        picks.append({
            "image": image,
            "score": float(best["score"]),
            "components": dict(best["components"]),
            "reasons": [describe(r, names) for r in errs],
            "errors": errs,
        })
    return picks


def random_baseline(
    candidate_images: Iterable[str], k: int, seed: int, *, exclude: Collection[str] = frozenset()
) -> list[str]:
    """Up to k distinct images drawn uniformly with `seed`; the same set of candidates and seed give the same
    picks whatever their order."""
    excluded = {str(p) for p in exclude}
    pool = sorted({str(p) for p in candidate_images} - excluded)
    return random.Random(seed).sample(pool, min(max(k, 0), len(pool)))


def format_console(selected: int, candidates: int, kind: str = "FNs") -> str:
    """Seed 004's console line: "[SAMPLING] Selected 20 hard examples from 45 FNs"."""
    return f"[SAMPLING] Selected {selected} hard examples from {candidates} {kind}"


def _check_size(size: str) -> None:
    if size not in SIZE_BUCKETS:
        raise ValueError(f"error size {size!r} is not one of {', '.join(SIZE_BUCKETS)}")


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


# --- pool strategies: uncertainty before NMS, diversity, class balance --------------------------------------------

MEASURES = ("entropy", "margin")
COMBINED_KEYS = ("uncertainty", "diversity", "class_balance")
_EPS = 1e-7


def binary_entropy(p) -> np.ndarray:
    """Entropy of "object or not" for each probability, in bits: 1.0 at p = 0.5, 0.0 at p = 0 or 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where(h < 1e-5, 0.0, h)


def class_confusion(probs, measure: str = "entropy") -> np.ndarray:
    """Per candidate (rows of (M, nc) per-class probabilities): how undecided it is between classes, in [0, 1].

    The scores are normalised to a distribution q = p / sum(p). entropy: H(q) / ln(nc); margin: 1 - (q1 - q2)
    with q1 >= q2 the two largest. One class, or all-zero scores: 0.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1) if len(probs) else np.zeros((0, 1))
    m, nc = probs.shape
    if m == 0 or nc < 2:
        return np.zeros(m)
    total = probs.sum(axis=1, keepdims=True)
    q = np.divide(probs, total, out=np.zeros_like(probs), where=total > 0)
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=1)
        out = h / math.log(nc)
    elif measure == "margin":
        top2 = -np.sort(-q, axis=1)[:, :2]
        out = 1.0 - (top2[:, 0] - top2[:, 1])
    else:
        raise ValueError(f"uncertainty measure {measure!r} is not one of {', '.join(MEASURES)}")
    return np.where(total[:, 0] > 0, np.clip(out, 0.0, 1.0), 0.0)


def candidate_uncertainty(probs, measure: str = "entropy") -> np.ndarray:
    """Per pre-NMS candidate: max(binary_entropy(p_max), p_max * class_confusion), in [0, 1].

    The first term is "is this an object?" (highest at p_max = 0.5); the second is "which class?", weighted by
    p_max so faint background anchors with flat, meaningless class scores do not count as confusion.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return np.zeros(0)
    probs = probs.reshape(len(probs), -1)
    pmax = probs.max(axis=1)
    return np.maximum(binary_entropy(pmax), pmax * class_confusion(probs, measure))


def image_uncertainty(probs, top_k: int, measure: str = "entropy") -> float:
    """Mean of the top_k largest candidate uncertainties, counting missing candidates as 0 (so in [0, 1]):
    an image with several undecided objects outranks one with a single undecided anchor."""
    if top_k < 1:
        raise ValueError(f"top_k is {top_k}; it must be >= 1")
    u = candidate_uncertainty(probs, measure)
    if u.size == 0:
        return 0.0
    top = np.sort(u)[::-1][:top_k]
    return float(top.sum() / top_k)


def inverse_frequency(class_counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weight per class: (min count + 1) / (count + 1): 1.0 for the rarest labelled class, less for common ones."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 0)
    if counts.size == 0:
        return counts
    return (counts.min() + 1.0) / (counts + 1.0)


def rare_class_score(class_max, class_counts: Sequence[int]) -> tuple[float, int]:
    """(score, class): max over classes of P(image holds class c) * inverse_frequency[c], in [0, 1].

    P(image holds c) is the highest probability of class c at any anchor of the image (before NMS).
    """
    p = np.asarray(class_max, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return 0.0, -1
    w = inverse_frequency(class_counts)
    if w.size != p.size:
        raise ValueError(f"{p.size} class probabilities but {w.size} class counts")
    v = p * w
    c = int(np.argmax(v))
    return float(v[c]), c


def relative_class_probs(class_max) -> np.ndarray:
    """(n, nc) per-image class probabilities divided by each class's highest value over the n images (a class no
    image scores stays 0): 1.0 marks the image that most likely holds that class."""
    p = np.asarray(class_max, dtype=np.float64)
    if p.size == 0:
        return p
    top = p.max(axis=0, keepdims=True)
    return np.divide(p, top, out=np.zeros_like(p), where=top > 0)


def class_difficulty(ap50: Sequence[float | None]) -> np.ndarray:
    """Per class: (1 - AP50) / mean over classes of (1 - AP50), the weight difficulty calibration gives the
    uncertainty of images that likely hold the class (mean 1.0; a class the model fails on entirely weighs most). A
    class with no AP (no validation instance: None) counts as the hardest measured one; with no AP at all, or every
    class at AP50 1.0, every weight is 1.0."""
    vals = [None if a is None else min(max(float(a), 0.0), 1.0) for a in ap50]
    known = [1.0 - a for a in vals if a is not None]
    if not vals:
        return np.zeros(0)
    if not known:
        return np.ones(len(vals))
    hardest = max(known)
    d = np.array([hardest if a is None else 1.0 - a for a in vals], dtype=np.float64)
    mean = float(d.mean())
    return d / mean if mean > 0 else np.ones(len(vals))


def calibrate_uncertainty(uncertainty, class_max, difficulty) -> np.ndarray:
    """Each image's uncertainty x the difficulty of the classes it likely holds: sum_c q_c x difficulty_c, with q
    the image's per-class highest probability (class_max) normalised to sum 1 (an image with no class score keeps its
    uncertainty: weight 1.0)."""
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    p = np.asarray(class_max, dtype=np.float64).reshape(len(u), -1) if len(u) else np.zeros((0, len(difficulty)))
    w = np.asarray(difficulty, dtype=np.float64).reshape(-1)
    if p.shape[1] != w.size:
        raise ValueError(f"{p.shape[1]} class probabilities per image but {w.size} class difficulties")
    total = p.sum(axis=1)
    weight = np.where(total > 0, (p @ w) / np.where(total > 0, total, 1.0), 1.0)
    return u * weight


def normalize_rows(x) -> np.ndarray:
    """L2-normalise each row (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def _min_cos_dist(x: np.ndarray, ref: np.ndarray | None, chunk: int = 4096) -> np.ndarray:
    """Cosine distance of each (normalised) row of x to its nearest row of ref; +inf where ref is empty."""
    out = np.full(len(x), np.inf)
    if ref is None or len(ref) == 0:
        return out
    for s in range(0, len(ref), chunk):
        out = np.minimum(out, (1.0 - x @ ref[s:s + chunk].T).min(axis=1))
    return np.maximum(out, 0.0)


def validate_combined_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The three combined weights (uncertainty, diversity, class_balance) as floats >= 0, not all 0."""
    out = {}
    for key in COMBINED_KEYS:
        if key not in weights:
            raise ValueError(f"combined weight {key!r} is missing; expected {', '.join(COMBINED_KEYS)}")
        v = float(weights[key])
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"combined weight {key!r} = {weights[key]!r}; it must be a finite number >= 0")
        out[key] = v
    unknown = sorted(set(weights) - set(COMBINED_KEYS))
    if unknown:
        raise ValueError(f"unknown combined weight {unknown[0]!r}; expected {', '.join(COMBINED_KEYS)}")
    if sum(out.values()) <= 0:
        raise ValueError("all combined weights are 0; set at least one above 0")
    return out


def combined_select(uncertainty, rare, emb, k: int, weights: Mapping[str, float],
                    labelled_emb=None, *, saturate: bool = True, class_probs=None,
                    class_counts: Sequence[float] | None = None, boxes_per_image: float = 1.0) -> list[dict]:
    """Greedy batch: each step takes the image with the highest
        w_u * uncertainty / max(uncertainty) + w_d * diversity + w_c * rare
    and then updates every image's cosine distance d to the nearest labelled or already-picked image (the k-center
    greedy update), so a batch does not take ten near-identical frames.

    diversity = min(1, d / tau), tau = the median over the candidates of their distance to the labelled set (with
    nothing labelled: of their distance to the first pick; before that diversity is 1). Diversity thus only
    penalises redundancy: an image as far from what is covered as a typical pool image counts as fully new, and
    outliers earn nothing extra, which is where pure k-center is known to go wrong at small budgets. With
    saturate=False, diversity = d / max(d over the remaining images): the pure k-center form.

    With class_probs ((n, nc) relative class probabilities, relative_class_probs) and class_counts (labelled boxes
    per class), the class-balance term is updated within the batch: each pick counts as boxes_per_image x its class
    probabilities more labelled boxes of those classes, and `rare` is recomputed (rare_class_score) from the
    updated counts, so a batch spreads over the rare classes instead of every pick chasing the rarest one.

    Returns up to k dicts {"index", "score", "components": {uncertainty, diversity, class_balance}} (and with the
    update "rare_class", the class its class-balance term came from), in pick order. Ties go to the lower index.
    """
    w = validate_combined_weights(weights)
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    r = np.asarray(rare, dtype=np.float64).reshape(-1)
    n = len(u)
    if len(r) != n or len(emb) != n:
        raise ValueError(f"uncertainty ({n}), rare ({len(r)}) and embeddings ({len(emb)}) differ in length")
    top = u.max() if n else 0.0
    un = u / top if top > 0 else np.zeros(n)
    update = class_probs is not None and class_counts is not None and len(class_counts) > 0
    if update:
        cp = np.asarray(class_probs, dtype=np.float64).reshape(n, -1)
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 0.0)
        if cp.shape[1] != counts.size:
            raise ValueError(f"{cp.shape[1]} class probabilities per image but {counts.size} class counts")
        if not math.isfinite(boxes_per_image) or boxes_per_image < 0:
            raise ValueError(f"boxes_per_image is {boxes_per_image}; it must be a finite number >= 0")
    x = normalize_rows(emb) if n else np.zeros((0, 1))
    ref = normalize_rows(labelled_emb) if labelled_emb is not None and len(labelled_emb) else None
    d = _min_cos_dist(x, ref)
    tau = float(np.median(d)) if n and ref is not None else None
    taken = np.zeros(n, dtype=bool)
    out = []
    for _ in range(min(max(k, 0), n)):
        finite = d[~taken & np.isfinite(d)]
        if saturate:
            if tau is None and finite.size:
                tau = float(np.median(finite))
            scale = tau if tau else 0.0
        else:
            scale = finite.max() if finite.size else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            div = np.where(np.isinf(d), 1.0, np.minimum(1.0, d / scale) if scale > 0 else (d > 0) * 1.0)
        if update:
            weighted = cp * inverse_frequency(counts)  # rare_class_score for every image at once
            r = weighted.max(axis=1)
        score = w["uncertainty"] * un + w["diversity"] * div + w["class_balance"] * r
        score = np.where(taken, -np.inf, score)
        i = int(np.argmax(score))
        out.append({"index": i, "score": float(score[i]),
                    "components": {"uncertainty": float(un[i]), "diversity": float(div[i]),
                                   "class_balance": float(r[i])}})
        if update:
            out[-1]["rare_class"] = int(np.argmax(weighted[i]))
            counts = counts + boxes_per_image * cp[i]
        taken[i] = True
        d = np.minimum(d, np.maximum(1.0 - x @ x[i], 0.0))
    return out


def top_uncertain(uncertainty, k: int) -> list[int]:
    """Indices of the k most uncertain images, most uncertain first; ties go to the lower index."""
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(u)), -u))
    return [int(i) for i in order[:max(k, 0)]]


def most_boxes_order(boxes, uncertainty, k: int, seed: int) -> list[int]:
    """Indices of the k images with the most predicted boxes, busiest first; ties go to the more uncertain image,
    then to a random order drawn with `seed` (the same candidates in the same order and seed give the same picks)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1)
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    if len(u) != len(b):
        raise ValueError(f"box counts ({len(b)}) and uncertainties ({len(u)}) differ in length")
    tie = np.random.default_rng(seed).permutation(len(b))
    order = np.lexsort((tie, -u, -b))  # the last key sorts first
    return [int(i) for i in order[:max(k, 0)]]


KCENTER_CHUNK = 32
"""Labelled embeddings compared at once when k-center greedy starts: bounds the temporary to n x 32 distances."""


def k_center_greedy(emb, k: int, labelled_emb=None) -> list[tuple[int, float]]:
    """Farthest-first traversal: each pick is the image whose cosine distance (1 - cos of the L2-normalised
    embeddings, in [0, 2]) to its nearest labelled or already-picked image is largest. Returns up to k
    (index, that distance at the time of the pick), in pick order; ties go to the lower index, so an exact
    duplicate of a pick (distance 0) comes after every image that is not one.

    With no labelled embeddings the first pick is the image farthest from the candidates' mean direction, and
    its distance is to that mean. Memory is O(n): one running min-distance vector, never an n x n matrix; each
    pick costs one n x dims product."""
    n = len(emb)
    if n == 0 or k <= 0:
        return []
    x = normalize_rows(np.asarray(emb).reshape(n, -1))
    ref = normalize_rows(labelled_emb) if labelled_emb is not None and len(labelled_emb) else None
    if ref is None:
        centre = normalize_rows(x.mean(axis=0, keepdims=True))[0]
        d = np.maximum(1.0 - x @ centre, 0.0)
    else:
        d = _min_cos_dist(x, ref, chunk=KCENTER_CHUNK)
    out: list[tuple[int, float]] = []
    for _ in range(min(k, n)):
        i = int(np.argmax(d))  # picked images hold -1, below any distance
        out.append((i, float(d[i])))
        if ref is None and len(out) == 1:
            d = np.full(n, np.inf)  # the mean was only the start: from here on, distances to picks
        d = np.minimum(d, np.maximum(1.0 - x @ x[i], 0.0))
        d[i] = -1.0
    return out
