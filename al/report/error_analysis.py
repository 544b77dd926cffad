"""Error analysis of one validation: classify every FN/FP, save FN crops, plot, suggest fixes.

Reads a validation as a dict {iteration, names, images} (images: the records of validation_images.json) and
writes the `error_analysis/` folder of an iteration: error_report.json, fn_crops/, three PNGs and
prompt_suggestions.json. Pure numpy/OpenCV/matplotlib: no torch, no ultralytics, no textual.
"""

from __future__ import annotations

import heapq
import io
import logging
import math
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from al.core.errors import UserError
from al.core.store import write_bytes_atomic, write_json

log = logging.getLogger(__name__)

# --- size (COCO, original pixels) -------------------------------------------------------------
SMALL_AREA = 32 ** 2    # area < 1024 px -> small
MEDIUM_AREA = 96 ** 2   # area < 9216 px -> medium, else large
SIZES = ("small", "medium", "large")
POSITIONS = ("center", "edge", "corner")
DIFFICULTIES = ("low_contrast", "unusual_aspect", "normal")

# --- contrast -----------------------------------------------------------------------------------
# contrast = |mean_in - mean_ring| / 255 + CONTRAST_STD_WEIGHT * |std_in - std_ring| / 127.5, clamped to [0, 1],
# on the grey image. The mean term catches a brightness step at the box border (white mark on dark paper); the
# std term catches a textured object on a flat background of the same average grey. Texture counts half because
# noise and JPEG artefacts alone move the std. The ring is a band around the box of width
# max(RING_MIN_PX, RING_FRAC * longer box side), clipped to the image.
RING_FRAC = 0.25
RING_MIN_PX = 2
CONTRAST_STD_WEIGHT = 0.5

# --- difficulty ---------------------------------------------------------------------------------
LOW_CONTRAST = 0.10            # contrast below this -> bucket "low_contrast"
UNUSUAL_ASPECT_RATIO = 2.0     # aspect >= 2x or <= 1/2 of the class's median gt aspect -> "unusual_aspect"
CONTRAST_EASY = 0.30           # contrast at or above this adds nothing to difficulty
ASPECT_SATURATION = 4.0        # aspect 4x (or 1/4) off the class median gives the full aspect score
DIFFICULTY_CONTRAST_WEIGHT = 0.6
DIFFICULTY_ASPECT_WEIGHT = 0.4  # difficulty = 0.6 * low-contrast score + 0.4 * aspect score

# --- plots --------------------------------------------------------------------------------------
HEATMAP_BINS = 32
PLOT_MAX_CLASSES = 9           # more classes than this are lumped as "other" in the size plot

# --- prompt suggestions (each is emitted only when its threshold is met) -------------------------
MIN_ERRORS_FOR_SUGGESTION = 3  # no finding is drawn from fewer errors than this
SMALL_FN_SHARE = 0.5           # share of FNs that are small
SMALL_FN_SHARE_HIGH = 0.75
RECALL_GAP = 0.20              # class recall this far below the recall of all other classes
RECALL_GAP_HIGH = 0.40
MIN_GT_PER_CLASS = 3           # a class (and the rest) needs this many gt boxes for a recall comparison
BORDER_MISS_RATIO = 1.5        # miss rate at edge/corner cells vs the centre cell
BORDER_MISS_RATIO_HIGH = 3.0
LOW_CONTRAST_FN_SHARE = 0.30   # share of FNs with contrast < LOW_CONTRAST
UNUSUAL_ASPECT_FN_SHARE = 0.30  # share of FNs in the "unusual_aspect" bucket
FP_HEAVY_PRECISION = 0.50      # class precision at or below this with >= MIN_ERRORS_FOR_SUGGESTION FPs
FP_HEAVY_PRECISION_HIGH = 0.30

CROPS_DIR = "fn_crops"
REPORT_FILE = "error_report.json"
SUGGESTIONS_FILE = "prompt_suggestions.json"
SIZE_PLOT = "fn_size_distribution.png"
POSITION_PLOT = "fn_position_distribution.png"
HEATMAP_PLOT = "error_heatmap.png"


class AnalysisError(UserError):
    """An input of the analysis cannot be used; the message names it and says what to do."""


# --- pure helpers (also used by sampling) ---------------------------------------------------------

def size_bucket(area: float) -> str:
    """COCO size bucket of a box area in original pixels: small < 32^2 <= medium < 96^2 <= large."""
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < MEDIUM_AREA else "large"


def grid_cell(box, w: float, h: float) -> tuple[int, int]:
    """(row, col) of the box centre in a 3x3 grid over a w x h image (centres outside are clamped in)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    col = int(3 * ((x1 + x2) / 2) / w) if w > 0 else 1
    row = int(3 * ((y1 + y2) / 2) / h) if h > 0 else 1
    return min(max(row, 0), 2), min(max(col, 0), 2)


def position_of(cell) -> str:
    """"center" for the middle cell, "corner" for the four corner cells, "edge" for the other border cells."""
    row, col = int(cell[0]), int(cell[1])
    if row == 1 and col == 1:
        return "center"
    return "corner" if row != 1 and col != 1 else "edge"


def _pixel_box(box, w: int, h: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds covering a float xyxy box, clipped to a w x h image."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return (min(max(math.floor(x1), 0), w), min(max(math.floor(y1), 0), h),
            min(max(math.ceil(x2), 0), w), min(max(math.ceil(y2), 0), h))


def box_contrast(gray: np.ndarray, box) -> float:
    """How much the box interior differs from a ring around it on a grey image, in [0, 1] (formula above)."""
    h, w = gray.shape[:2]
    x1, y1, x2, y2 = _pixel_box(box, w, h)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    r = max(RING_MIN_PX, int(round(RING_FRAC * max(x2 - x1, y2 - y1))))
    ox1, oy1, ox2, oy2 = max(x1 - r, 0), max(y1 - r, 0), min(x2 + r, w), min(y2 + r, h)
    outer = gray[oy1:oy2, ox1:ox2].astype(np.float64)
    ring_mask = np.ones(outer.shape[:2], dtype=bool)
    ring_mask[y1 - oy1:y2 - oy1, x1 - ox1:x2 - ox1] = False
    inner, ring = outer[~ring_mask], outer[ring_mask]
    if ring.size == 0:
        # the box fills the image: nothing to compare with, so its own texture is the best available proxy
        return float(min(1.0, CONTRAST_STD_WEIGHT * inner.std() / 127.5))
    c = abs(inner.mean() - ring.mean()) / 255.0 + CONTRAST_STD_WEIGHT * abs(inner.std() - ring.std()) / 127.5
    return float(min(max(c, 0.0), 1.0))


def aspect_of(box) -> float:
    """Width / height; sides under one pixel count as one pixel so degenerate boxes stay finite."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return max(x2 - x1, 1.0) / max(y2 - y1, 1.0)


def class_median_aspects(validation: dict) -> dict[int, float]:
    """Median w/h of the ground-truth boxes of each class over all images of a validation."""
    per_cls: dict[int, list[float]] = {}
    for rec in validation.get("images", []):
        for g in rec["gt"]:
            per_cls.setdefault(int(g[0]), []).append(aspect_of(g[1:5]))
    return {c: float(np.median(v)) for c, v in per_cls.items()}


def aspect_score(aspect: float, reference: float = 1.0) -> float:
    """0 at the reference aspect, rising with |log ratio| to 1 at ASPECT_SATURATION times off."""
    return float(min(1.0, abs(math.log(aspect / reference)) / math.log(ASPECT_SATURATION)))


def difficulty_of(contrast: float, aspect: float, reference: float = 1.0) -> float:
    """Weighted mix of low contrast (1 at contrast 0, 0 from CONTRAST_EASY up) and unusual aspect, in [0, 1]."""
    low = min(max(1.0 - contrast / CONTRAST_EASY, 0.0), 1.0)
    return DIFFICULTY_CONTRAST_WEIGHT * low + DIFFICULTY_ASPECT_WEIGHT * aspect_score(aspect, reference)


def difficulty_bucket(contrast: float, aspect: float, reference: float = 1.0) -> str:
    """"low_contrast" wins over "unusual_aspect" so that each error lands in exactly one bucket."""
    if contrast < LOW_CONTRAST:
        return "low_contrast"
    if abs(math.log(aspect / reference)) >= math.log(UNUSUAL_ASPECT_RATIO):
        return "unusual_aspect"
    return "normal"


# --- the step ---------------------------------------------------------------------------------------

def analyze(validation: dict, out_dir: Path, *, crop_margin: float = 0.25, max_crops: int = 500) -> dict:
    """Analyse every FN and FP of a validation, write out_dir's artefacts and return the error report."""
    out_dir = Path(out_dir)
    names = list(validation.get("names", []))
    images = validation.get("images", [])
    ref_aspect = class_median_aspects(validation)

    def cls_name(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    # Crop names are fixed up front in a deterministic order, so that which crops make the max_crops cut never
    # changes a name. Two images with the same stem get "_2", "_3", ... appended.
    used: Counter = Counter()
    crop_names: dict[tuple[int, int], str] = {}
    for i, rec in enumerate(images):
        for g in rec["fn"]:
            cname = re.sub(r"[^\w.-]+", "_", cls_name(int(rec["gt"][g][0])))
            base = f"{Path(rec['image']).stem}_fn{g}_{cname}"
            used[base] += 1
            crop_names[(i, g)] = base + ("" if used[base] == 1 else f"_{used[base]}") + ".jpg"

    errors: list[dict] = []
    # min-heap of the hardest FN crops so far, JPEG-encoded: bounded memory and each image read once
    best: list[tuple[float, int, int, int, bytes]] = []
    for i, rec in enumerate(images):
        if not rec["fn"] and not rec["fp"]:
            continue  # never opened
        img = cv2.imread(str(rec["image"]), cv2.IMREAD_COLOR)
        if img is None:
            raise AnalysisError(
                f"{rec['image']}: listed in validation_images.json but cannot be read. Restore the image, or "
                f"validate again without it (--start-iteration {validation.get('iteration', 'K')}).")
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        w, h = rec.get("width") or img.shape[1], rec.get("height") or img.shape[0]
        items = [("fn", g, rec["gt"][g][0], rec["gt"][g][1:5]) for g in rec["fn"]]
        items += [("fp", p, rec["pred"][p][0], rec["pred"][p][2:6]) for p in rec["fp"]]
        for kind, idx, c, box in items:
            c, box = int(c), [float(v) for v in box]
            area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
            cell = grid_cell(box, w, h)
            contrast = box_contrast(gray, box)
            aspect = aspect_of(box)
            ref = ref_aspect.get(c, 1.0)
            err = {"kind": kind, "image": str(rec["image"]), "index": int(idx), "cls": c, "box": box,
                   "area": round(area, 2), "size": size_bucket(area), "position": position_of(cell),
                   "grid": list(cell), "contrast": round(contrast, 4), "aspect": round(aspect, 4),
                   "difficulty": round(difficulty_of(contrast, aspect, ref), 4), "crop": None,
                   "_bucket": difficulty_bucket(contrast, aspect, ref)}
            errors.append(err)
            if kind == "fn" and max_crops > 0:
                key = (err["difficulty"], -len(errors))  # ties: the earlier error wins
                if len(best) < max_crops or key > best[0][:2]:
                    crop = _crop(img, box, crop_margin)
                    if crop is not None:
                        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
                        if ok:
                            entry = (key[0], key[1], len(errors) - 1, i, buf.tobytes())
                            (heapq.heappush if len(best) < max_crops else heapq.heapreplace)(best, entry)
        del img, gray

    crops_dir = out_dir / CROPS_DIR
    crops_dir.mkdir(parents=True, exist_ok=True)
    kept = set()
    for _d, _k, e, rec_i, data in best:
        err = errors[e]
        name = crop_names[(rec_i, err["index"])]
        # crops are review material, not state: a half-written one is simply rewritten by the re-run
        (crops_dir / name).write_bytes(data)
        err["crop"] = str(crops_dir / name)
        kept.add(name)
    for stale in crops_dir.glob("*.jpg"):  # left over from an earlier run of this folder
        if stale.name not in kept:
            stale.unlink()

    report = _summarise(validation, errors, names)
    suggestions = suggest(validation, report)
    _plot_sizes(report, errors, names, out_dir / SIZE_PLOT)
    _plot_positions(report, errors, out_dir / POSITION_PLOT)
    _plot_heatmap(errors, images, out_dir / HEATMAP_PLOT)
    write_json(out_dir / SUGGESTIONS_FILE, {"iteration": validation.get("iteration"), "suggestions": suggestions})
    write_json(out_dir / REPORT_FILE, report)  # last: its presence means the step finished
    return report


MIN_CROP_SIDE = 32
"""Crops are at least this many pixels a side (where the image allows): a reviewer needs context, and a crop that
goes back into training (a Roboflow crop upload) must pass Ultralytics' 10-pixel minimum."""


def _crop(img: np.ndarray, box, margin: float) -> np.ndarray | None:
    """The box plus `margin` of its width/height on each side (at least MIN_CROP_SIDE), clipped to the image; None
    if empty."""
    x1, y1, x2, y2 = box
    mw = max(margin * (x2 - x1), (MIN_CROP_SIDE - (x2 - x1)) / 2)
    mh = max(margin * (y2 - y1), (MIN_CROP_SIDE - (y2 - y1)) / 2)
    h, w = img.shape[:2]
    cx1, cy1, cx2, cy2 = _pixel_box((x1 - mw, y1 - mh, x2 + mw, y2 + mh), w, h)
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    return img[cy1:cy2, cx1:cx2]


def _summarise(validation: dict, errors: list[dict], names: list[str]) -> dict:
    """Counts per size/position/grid/class/difficulty; strips the private bucket field from the records."""
    def zero():
        return {"fn": 0, "fp": 0}

    by_size = {s: zero() for s in SIZES}
    by_position = {p: zero() for p in POSITIONS}
    by_difficulty = {d: zero() for d in DIFFICULTIES}
    by_class = {n: zero() for n in names}
    by_grid = [[0] * 3 for _ in range(3)]
    for e in errors:
        k = e["kind"]
        by_size[e["size"]][k] += 1
        by_position[e["position"]][k] += 1
        by_difficulty[e.pop("_bucket")][k] += 1
        by_class.setdefault(names[e["cls"]] if 0 <= e["cls"] < len(names) else str(e["cls"]), zero())[k] += 1
        if k == "fn":
            by_grid[e["grid"][0]][e["grid"][1]] += 1
    images = validation.get("images", [])
    totals = {"fn": sum(e["kind"] == "fn" for e in errors), "fp": sum(e["kind"] == "fp" for e in errors),
              "tp": sum(len(r["tp"]) for r in images)}
    return {"schema": 1, "iteration": validation.get("iteration"), "totals": totals, "by_size": by_size,
            "by_position": by_position, "by_grid": by_grid, "by_class": by_class,
            "by_difficulty": by_difficulty, "errors": errors}


# --- suggestions --------------------------------------------------------------------------------------

def suggest(validation: dict, report: dict) -> list[dict]:
    """Data-driven fixes for the error patterns whose thresholds are met, high priority first."""
    out: list[dict] = []
    fns = [e for e in report["errors"] if e["kind"] == "fn"]
    n_fn = len(fns)
    images = validation.get("images", [])
    names = list(validation.get("names", []))

    # ground truth per size and position bucket (FN records share their gt box's buckets)
    gt_size: Counter = Counter()
    gt_border = gt_center = 0
    for rec in images:
        for g in rec["gt"]:
            x1, y1, x2, y2 = (float(v) for v in g[1:5])
            gt_size[size_bucket(max(x2 - x1, 0) * max(y2 - y1, 0))] += 1
            if position_of(grid_cell(g[1:5], rec["width"], rec["height"])) == "center":
                gt_center += 1
            else:
                gt_border += 1
    n_gt = sum(gt_size.values())

    if n_fn >= MIN_ERRORS_FOR_SUGGESTION:
        small = report["by_size"]["small"]["fn"]
        share = small / n_fn
        small_miss = small / gt_size["small"] if gt_size["small"] else 0.0
        other_gt = n_gt - gt_size["small"]
        other_miss = (n_fn - small) / other_gt if other_gt else 0.0
        # the miss-rate check keeps a dataset of mostly small objects from being blamed on size alone
        if share >= SMALL_FN_SHARE and small_miss >= other_miss:
            out.append({
                "finding": f"{share:.0%} of false negatives are small objects (< {SMALL_AREA} px area); "
                           f"{small_miss:.0%} of small ground-truth boxes are missed vs {other_miss:.0%} of the others",
                "evidence": {"fn_small": small, "fn_total": n_fn, "fn_small_share": round(share, 4),
                             "gt_small": gt_size["small"], "gt_total": n_gt,
                             "small_miss_rate": round(small_miss, 4), "other_miss_rate": round(other_miss, 4)},
                "suggestion": "Raise the training imgsz (or train on tiles) so small objects keep more pixels, "
                              "and add more labelled examples of small objects.",
                "priority": "high" if share >= SMALL_FN_SHARE_HIGH else "medium"})

        fn_border = report["by_position"]["edge"]["fn"] + report["by_position"]["corner"]["fn"]
        fn_center = report["by_position"]["center"]["fn"]
        if fn_border >= MIN_ERRORS_FOR_SUGGESTION and gt_border and gt_center:
            border_miss, center_miss = fn_border / gt_border, fn_center / gt_center
            ratio = border_miss / center_miss if center_miss else math.inf
            if ratio >= BORDER_MISS_RATIO:
                out.append({
                    "finding": f"objects near the image border are missed {border_miss:.0%} of the time vs "
                               f"{center_miss:.0%} in the centre",
                    "evidence": {"fn_border": fn_border, "gt_border": gt_border, "fn_center": fn_center,
                                 "gt_center": gt_center, "border_miss_rate": round(border_miss, 4),
                                 "center_miss_rate": round(center_miss, 4),
                                 "by_grid_fn": report["by_grid"]},
                    "suggestion": "Add training images with objects cut by or touching the border (border crops), "
                                  "keep mosaic on longer (raise close_mosaic) and use translate/scale augmentation.",
                    "priority": "high" if ratio >= BORDER_MISS_RATIO_HIGH else "medium"})

        low = report["by_difficulty"]["low_contrast"]["fn"]
        if low >= MIN_ERRORS_FOR_SUGGESTION and low / n_fn >= LOW_CONTRAST_FN_SHARE:
            out.append({
                "finding": f"{low / n_fn:.0%} of false negatives have low contrast with their surroundings "
                           f"(contrast < {LOW_CONTRAST})",
                "evidence": {"fn_low_contrast": low, "fn_total": n_fn, "share": round(low / n_fn, 4),
                             "threshold": LOW_CONTRAST},
                "suggestion": "Strengthen brightness/contrast augmentation (raise hsv_v, e.g. to 0.6) and add "
                              "faint, washed-out or dark examples to the training set.",
                "priority": "medium"})

        odd = report["by_difficulty"]["unusual_aspect"]["fn"]
        if odd >= MIN_ERRORS_FOR_SUGGESTION and odd / n_fn >= UNUSUAL_ASPECT_FN_SHARE:
            out.append({
                "finding": f"{odd / n_fn:.0%} of false negatives have an aspect ratio at least "
                           f"{UNUSUAL_ASPECT_RATIO:g}x off their class's median",
                "evidence": {"fn_unusual_aspect": odd, "fn_total": n_fn, "share": round(odd / n_fn, 4)},
                "suggestion": "Add examples with these unusual shapes (rotated, stretched or partial objects) and "
                              "check their labels; consider shear/perspective augmentation.",
                "priority": "low"})

    # per-class recall and precision from the match lists themselves
    tp: Counter = Counter()
    fn: Counter = Counter()
    fp: Counter = Counter()
    for rec in images:
        for g, _p, _iou in rec["tp"]:
            tp[int(rec["gt"][g][0])] += 1
        for g in rec["fn"]:
            fn[int(rec["gt"][g][0])] += 1
        for p in rec["fp"]:
            fp[int(rec["pred"][p][0])] += 1

    def name(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    classes = sorted(set(tp) | set(fn) | set(fp))
    total_tp, total_fn = sum(tp.values()), sum(fn.values())
    for c in classes:
        n_c = tp[c] + fn[c]
        n_rest = (total_tp + total_fn) - n_c
        if n_c < MIN_GT_PER_CLASS or n_rest < MIN_GT_PER_CLASS:
            continue
        recall, rest = tp[c] / n_c, (total_tp - tp[c]) / n_rest
        if rest - recall >= RECALL_GAP:
            out.append({
                "finding": f"class '{name(c)}' has recall {recall:.0%} vs {rest:.0%} for the other classes",
                "evidence": {"class": name(c), "tp": tp[c], "fn": fn[c], "recall": round(recall, 4),
                             "other_recall": round(rest, 4)},
                "suggestion": f"Add more labelled '{name(c)}' examples (the hard-example picks should favour it) "
                              f"and check its labels for consistency; refine its text prompt if one is used.",
                "priority": "high" if rest - recall >= RECALL_GAP_HIGH else "medium"})
    for c in classes:
        if fp[c] < MIN_ERRORS_FOR_SUGGESTION:
            continue
        precision = tp[c] / (tp[c] + fp[c])
        if precision <= FP_HEAVY_PRECISION:
            out.append({
                "finding": f"class '{name(c)}' has {fp[c]} false positives (precision {precision:.0%})",
                "evidence": {"class": name(c), "tp": tp[c], "fp": fp[c], "precision": round(precision, 4)},
                "suggestion": f"Add hard negatives: images with look-alikes of '{name(c)}' and no label "
                              f"(background images), and make its prompt more specific.",
                "priority": "high" if precision <= FP_HEAVY_PRECISION_HIGH else "medium"})

    rank = {"high": 0, "medium": 1, "low": 2}
    return sorted(out, key=lambda s: rank[s["priority"]])  # stable: emission order within a priority


# --- plots (Figure objects, never pyplot: no global state, safe from a worker thread, nothing to close) ----

def _save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes_atomic(path, buf.getvalue())


def _plot_sizes(report: dict, errors: list[dict], names: list[str], path: Path) -> None:
    """FN and FP counts per size bucket, stacked by class (the most frequent classes, the rest as 'other')."""
    counts: dict[str, Counter] = {}
    for e in errors:
        n = names[e["cls"]] if 0 <= e["cls"] < len(names) else str(e["cls"])
        counts.setdefault(n, Counter())[(e["kind"], e["size"])] += 1
    order = sorted(counts, key=lambda n: -sum(counts[n].values()))
    if len(order) > PLOT_MAX_CLASSES:
        other: Counter[tuple[str, str]] = Counter()
        for n in order[PLOT_MAX_CLASSES - 1:]:
            other.update(counts.pop(n))
        order = order[:PLOT_MAX_CLASSES - 1] + ["other classes"]
        counts["other classes"] = other
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(SIZES))
    colors = [f"C{i}" for i in range(10)]
    peak = 0.0
    for ax, kind, title in ((axes[0], "fn", "False negatives"), (axes[1], "fp", "False positives")):
        bottom = np.zeros(len(SIZES))
        for j, n in enumerate(order):
            vals = np.array([counts[n][(kind, s)] for s in SIZES], dtype=float)
            ax.bar(x, vals, bottom=bottom, color=colors[j % 10], label=n, width=0.6)
            bottom += vals
        for xi, tot in zip(x, bottom):
            ax.text(xi, tot, f"{int(tot)}", ha="center", va="bottom")
        peak = max(peak, float(bottom.max()))
        total = report["totals"][kind]
        ax.set_xlim(-0.6, len(SIZES) - 0.4)  # keep the buckets in place when no bar is drawn
        if not total:
            ax.text(0.5, 0.5, f"no {title.lower()}", transform=ax.transAxes, ha="center", color="gray")
        ax.set_title(f"{title} by object size (n={total})")
        ax.set_xticks(x, [f"small\n< {SMALL_AREA} px²", f"medium\n< {MEDIUM_AREA} px²", "large"])
        ax.set_xlabel("size bucket (box area, original pixels)")
        ax.set_ylabel("count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylim(0, max(peak * 1.15, 1))  # room for the total above the tallest bar (y is shared)
    if order:
        axes[1].legend(title="class", loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle("Errors by object size (COCO buckets)")
    _save(fig, path)


def _plot_positions(report: dict, errors: list[dict], path: Path) -> None:
    """3x3 heat tables of FN and FP box centres, and FN/FP bars by center/edge/corner."""
    fp_grid = np.zeros((3, 3), dtype=int)
    for e in errors:
        if e["kind"] == "fp":
            fp_grid[e["grid"][0], e["grid"][1]] += 1
    fig = Figure(figsize=(14, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, grid, title, cmap in ((axes[0], np.array(report["by_grid"]), "False negatives", "Reds"),
                                  (axes[1], fp_grid, "False positives", "Blues")):
        total = int(grid.sum())
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=max(int(grid.max()), 1))
        for (r, c), v in np.ndenumerate(grid):
            pct = f"\n{v / total:.0%}" if total else ""
            ax.text(c, r, f"{v}{pct}", ha="center", va="center",
                    color="white" if grid.max() and v > 0.6 * grid.max() else "black", fontsize=11)
        ax.set_xticks(range(3), ["left", "middle", "right"])
        ax.set_yticks(range(3), ["top", "middle", "bottom"])
        ax.set_xlabel("column of box centre")
        ax.set_ylabel("row of box centre")
        ax.set_title(f"{title} per 3x3 image cell (n={total})")
    x = np.arange(len(POSITIONS))
    fn_v = [report["by_position"][p]["fn"] for p in POSITIONS]
    fp_v = [report["by_position"][p]["fp"] for p in POSITIONS]
    ax = axes[2]
    ax.bar(x - 0.2, fn_v, width=0.4, color="C3", label="false negatives")
    ax.bar(x + 0.2, fp_v, width=0.4, color="C0", label="false positives")
    ax.set_xticks(x, ["center\n(1 cell)", "edge\n(4 cells)", "corner\n(4 cells)"])
    ax.set_xlabel("position of box centre")
    ax.set_ylabel("count")
    ax.set_ylim(0, max(max(fn_v + fp_v) * 1.1, 1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Errors by position")
    ax.legend(frameon=False)
    fig.suptitle("Where errors are in the image")
    _save(fig, path)


def _plot_heatmap(errors: list[dict], images: list[dict], path: Path) -> None:
    """FN and FP box centres on a normalised HEATMAP_BINS x HEATMAP_BINS image grid."""
    size = {str(r["image"]): (r["width"], r["height"]) for r in images}
    fig = Figure(figsize=(11, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, title, cmap in ((axes[0], "fn", "False negative", "magma"),
                                  (axes[1], "fp", "False positive", "viridis")):
        xs, ys = [], []
        for e in errors:
            if e["kind"] == kind:
                w, h = size[e["image"]]
                x1, y1, x2, y2 = e["box"]
                xs.append(min(max((x1 + x2) / 2 / w, 0.0), 1.0))
                ys.append(min(max((y1 + y2) / 2 / h, 0.0), 1.0))
        hist, _, _ = np.histogram2d(ys, xs, bins=HEATMAP_BINS, range=[[0, 1], [0, 1]])
        im = ax.imshow(hist, cmap=cmap, extent=(0, 1, 1, 0), vmin=0, vmax=max(hist.max(), 1),
                       interpolation="nearest")
        for t in (1 / 3, 2 / 3):  # the 3x3 cells of the position buckets
            ax.axvline(t, color="white", lw=0.8, ls="--", alpha=0.6)
            ax.axhline(t, color="white", lw=0.8, ls="--", alpha=0.6)
        ax.set_xlabel("box centre x / image width")
        ax.set_ylabel("box centre y / image height (0 = top)")
        ax.set_title(f"{title} box centres (n={len(xs)})")
        fig.colorbar(im, ax=ax, label="errors per cell", shrink=0.85, ticks=MaxNLocator(integer=True))
    fig.suptitle(f"Error heatmap ({HEATMAP_BINS}x{HEATMAP_BINS} normalised grid)")
    _save(fig, path)
