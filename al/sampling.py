"""Hard-example scoring and selection (seed 004's weighted score): pure functions of error records and counts.

score = class_balance_weight    * class_balance
      + size_diversity_weight   * size_diversity
      + spatial_diversity_weight * spatial_diversity
      + uncertainty_weight      * uncertainty          (seed 004's "visual_difficulty")

Each component lies in [0, 1]; the score is the plain weighted sum (in [0, sum of weights]), so with the default
weights (0.3, 0.3, 0.2, 0.2) it lies in [0, 1]. Records follow docs/DESIGN.md (error_report.json "errors").
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

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
