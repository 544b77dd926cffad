"""Pool-based selection: streaming, cached scoring of candidate images; hard negatives; the strategies' picks.

Scoring is one batched Ultralytics predict pass (al.yolo.detector.predict_raw) that also yields the head's class
probabilities before NMS and a backbone embedding per image. What is kept per image is small (two uncertainty
numbers, nc class maxima, one embedding, the post-NMS boxes), so memory stays flat in the pool size: the boxes go
to the on-disk cache and are read back only for the picks.

Cache: <run_dir>/cache/pool_scores/<model sha1>-<settings key>/<chunk>.npz, one file per scored chunk, written
atomically. A row is found again by its image's content hash, so a re-run (--resume, or a second strategy on the
same model) recomputes nothing; a new model or other scoring settings use another folder.

Deployed detections (hard negatives from a model in production): a folder with one `<image stem>.txt` per image,
lines `cls xc yc w h conf` in normalised coordinates, as `yolo predict save_txt=True save_conf=True` writes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from al.core import store
from al.core.config import SamplingConfig
from al.core.errors import UserError
from al.data import hashing
from al.metrics.matching import box_iou
from al.selection import sampling

log = logging.getLogger("al")

CACHE_SCHEMA = 1
CHUNK = 256
"""Images per cache file: the unit of work lost when a scan is interrupted."""
MAX_CANDIDATES = 100
"""Pre-NMS anchors kept per image (the most confident ones)."""
LABELLED_REFERENCE = 256
"""Labelled training images embedded as the starting set of k-center greedy (a fixed sample when there are more)."""


class PoolError(UserError):
    """A pool input (deployed detections, cache) is unusable; the message names it and the fix."""


@dataclass(frozen=True)
class ScanSettings:
    """What a scan computes with; everything but batch/device is part of the cache key."""

    imgsz: int
    conf: float
    iou: float
    batch: int
    device: str
    cand_conf: float
    top_k: int
    max_candidates: int = MAX_CANDIDATES

    def key(self) -> str:
        blob = json.dumps({"schema": CACHE_SCHEMA, "imgsz": self.imgsz, "conf": self.conf, "iou": self.iou,
                           "cand_conf": self.cand_conf, "top_k": self.top_k, "max_cand": self.max_candidates},
                          sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


@dataclass
class PoolScores:
    """Per-image scores of a scan, row i for images[i]."""

    images: list[str]
    hashes: list[str]
    width: np.ndarray
    height: np.ndarray
    uncertainty: dict[str, np.ndarray]  # measure ("entropy" | "margin") -> (n,)
    class_max: np.ndarray  # (n, nc)
    embedding: np.ndarray  # (n, D)
    cached: int = 0
    """Rows found in the cache (not recomputed)."""
    where: dict[str, tuple[Path | None, int]] = field(default_factory=dict, repr=False)
    """image hash -> (cache file, row): where its post-NMS boxes are (no file without a cache folder: in_memory)."""
    in_memory: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """image hash -> its post-NMS boxes, for a scan without a cache folder (nothing on disk to read back)."""

    def predictions(self, i: int) -> np.ndarray:
        """Post-NMS detections of images[i] as (N, 6) [cls, conf, x1, y1, x2, y2] in original pixels."""
        h = self.hashes[i]
        if h in self.in_memory:
            return self.in_memory[h].astype(np.float64)
        f, row = self.where[h]
        if f is None:
            raise KeyError(f"{self.images[i]}: its boxes are neither cached nor in memory")
        with np.load(f, allow_pickle=False) as z:
            off = z["pred_off"]
            return z["pred"][off[row]:off[row + 1]].astype(np.float64)

    def box_counts(self, min_conf: float) -> np.ndarray:
        """Per image, how many of its post-NMS detections (predictions) have conf >= min_conf; each cache file is
        read once, not once per image."""
        out = np.zeros(len(self.images), dtype=np.int64)
        rows_in: dict[Path, list[tuple[int, int]]] = {}
        for i, h in enumerate(self.hashes):
            if h in self.in_memory:
                out[i] = int(np.count_nonzero(self.in_memory[h][:, 1].astype(np.float64) >= min_conf))
                continue
            f, row = self.where[h]
            if f is None:
                raise KeyError(f"{self.images[i]}: its boxes are neither cached nor in memory")
            rows_in.setdefault(f, []).append((i, row))
        for f, rows in rows_in.items():
            with np.load(f, allow_pickle=False) as z:
                off, conf = z["pred_off"], z["pred"][:, 1].astype(np.float64)  # as predictions() compares them
            for i, row in rows:
                out[i] = int(np.count_nonzero(conf[off[row]:off[row + 1]] >= min_conf))
        return out

    def subset(self, idx: Sequence[int]) -> PoolScores:
        ix = np.asarray(idx, dtype=int)
        return PoolScores(images=[self.images[i] for i in ix], hashes=[self.hashes[i] for i in ix],
                          width=self.width[ix], height=self.height[ix],
                          uncertainty={m: v[ix] for m, v in self.uncertainty.items()},
                          class_max=self.class_max[ix], embedding=self.embedding[ix], cached=self.cached,
                          where=self.where, in_memory=self.in_memory)


def chunk_name(hashes: Sequence[str]) -> str:
    """A cache file's name: derived from the image hashes it holds, so both engines name a shard alike."""
    return hashlib.sha1("".join(hashes).encode()).hexdigest()[:16] + ".npz"


def score_row(h: str, raw: Any, settings: ScanSettings) -> dict[str, Any]:
    """The cached scores of one image (content hash `h`) from its detector.RawPrediction."""
    p = raw.pred
    return {"hash": h, "width": p.width, "height": p.height,
            "entropy": sampling.image_uncertainty(raw.candidates, settings.top_k, "entropy"),
            "margin": sampling.image_uncertainty(raw.candidates, settings.top_k, "margin"),
            "class_max": raw.class_max, "embedding": raw.embedding,
            "pred": np.column_stack([p.cls, p.conf, p.boxes]).reshape(-1, 6)}


def chunk_bytes(rows: list[dict]) -> bytes:
    """The .npz bytes of one cache file holding `rows` (score_row dicts), in order."""
    preds = [r["pred"] for r in rows]
    off = np.zeros(len(rows) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(p) for p in preds])
    arrays: dict[str, np.ndarray] = {
        "hash": np.array([r["hash"] for r in rows], dtype="U40"),
        "width": np.array([r["width"] for r in rows], dtype=np.int32),
        "height": np.array([r["height"] for r in rows], dtype=np.int32),
        "unc_entropy": np.array([r["entropy"] for r in rows], dtype=np.float64),
        "unc_margin": np.array([r["margin"] for r in rows], dtype=np.float64),
        "class_max": np.stack([r["class_max"] for r in rows]).astype(np.float32),
        "embedding": np.stack([r["embedding"] for r in rows]).astype(np.float32),
        "pred_off": off,
        "pred": (np.concatenate(preds) if off[-1] else np.zeros((0, 6))).astype(np.float32),
    }
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)  # no object arrays here; the reader refuses pickles too
    return buf.getvalue()


_COLUMNS = ("width", "height", "unc_entropy", "unc_margin", "class_max", "embedding")


def _columns(z: Any) -> tuple[list[str], dict[str, np.ndarray]]:
    return z["hash"].tolist(), {k: z[k] for k in _COLUMNS}


def _row_vals(cols: Mapping[str, np.ndarray], row: int) -> dict[str, Any]:
    return {"width": cols["width"][row], "height": cols["height"][row], "entropy": cols["unc_entropy"][row],
            "margin": cols["unc_margin"][row], "class_max": cols["class_max"][row],
            "embedding": cols["embedding"][row]}


class ScanEngine(Protocol):
    """Where a scan's work runs: the content hashes of the images and the scoring of shards of them. The scan
    itself (cache lookup, cache files, assembling PoolScores) is the same for every engine."""

    shard_size: int
    """Images per shard: one cache file, one unit of work (lost when a scan is interrupted)."""

    def hash_images(self, images: Sequence[str]) -> list[str]:
        """Content hashes (al.data.hashing) of `images`, in order."""
        ...

    def score(self, weights: Path, shards: Sequence[Sequence[tuple[str, str]]], settings: ScanSettings,
              tick: Callable[[str], None]) -> Iterator[tuple[int, bytes]]:
        """Score every shard ((hash, image path) pairs); yield (shard index, chunk_bytes of its rows in the
        shard's order), in any order. `tick(hash)` is called as images are scored (it may raise to stop)."""
        ...


class LocalEngine:
    """The scan in this process: one model, one batched Ultralytics predict pass per shard."""

    def __init__(self, model: Any = None, shard_size: int = CHUNK, loader: Callable[[Path], Any] | None = None):
        self.model = model
        self.shard_size = shard_size
        self.loader = loader
        """Loads the model on first use when none is given (a scan whose rows are all cached loads none)."""

    def hash_images(self, images: Sequence[str]) -> list[str]:
        return [hashing.file_hash(p) for p in images]

    def score(self, weights: Path, shards: Sequence[Sequence[tuple[str, str]]], settings: ScanSettings,
              tick: Callable[[str], None]) -> Iterator[tuple[int, bytes]]:
        from al.yolo import detector

        if shards and self.model is None and self.loader is not None:
            self.model = self.loader(weights)
        for i, shard in enumerate(shards):
            rows: list[dict[str, Any]] = []
            gen = detector.predict_raw(weights, [img for _, img in shard], imgsz=settings.imgsz, conf=settings.conf,
                                       iou=settings.iou, batch=settings.batch, device=settings.device,
                                       cand_conf=settings.cand_conf, max_candidates=settings.max_candidates,
                                       model=self.model)
            try:
                for (h, _), raw in zip(shard, gen):
                    rows.append(score_row(h, raw, settings))
                    tick(h)
            finally:
                gen.close()
            if len(rows) != len(shard):
                raise PoolError(f"the detector returned {len(rows)} results for {len(shard)} images; check that "
                                f"every image is readable")
            yield i, chunk_bytes(rows)


def scan(
    weights: Path,
    images: Sequence[str],
    settings: ScanSettings,
    cache_dir: Path | None,
    *,
    model=None,
    on_progress: Callable[[int, int], None] | None = None,
    engine: ScanEngine | None = None,
) -> PoolScores:
    """Score `images` with the model `weights`, reusing cached rows (same model file bytes, same image bytes, same
    settings) and caching new ones shard by shard. `on_progress(done, total)` may raise to stop; finished shards
    stay cached. `engine` runs the hashing and the scoring (default: LocalEngine(model), in this process); any
    engine gives the same rows and the same cache files."""
    engine = engine or LocalEngine(model)
    images = [str(p) for p in images]
    n = len(images)
    hashes = engine.hash_images(images)
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / f"{hashing.file_hash(weights)[:16]}-{settings.key()}"
        folder.mkdir(parents=True, exist_ok=True)
    rows_of: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        rows_of.setdefault(h, []).append(i)
    out: dict = {}

    def put(h: str, vals: Mapping, f: Path | None, row: int) -> None:
        if "class_max" not in out:
            nc, dim = len(vals["class_max"]), len(vals["embedding"])
            out.update(width=np.zeros(n, np.int32), height=np.zeros(n, np.int32), entropy=np.zeros(n),
                       margin=np.zeros(n), class_max=np.zeros((n, nc), np.float32),
                       embedding=np.zeros((n, dim), np.float32), where={})
        for i in rows_of[h]:
            for key in ("width", "height", "entropy", "margin", "class_max", "embedding"):
                out[key][i] = vals[key]
        out["where"][h] = (f, row)

    if folder is not None:
        for f in sorted(folder.glob("*.npz")):
            try:
                with np.load(f, allow_pickle=False) as z:
                    if not any(h in rows_of for h in z["hash"].tolist()):
                        continue
                    fh, cols = _columns(z)
            except Exception as e:  # a torn or foreign file: the cache is only a shortcut, recompute its rows
                log.warning("pool score cache %s unreadable (%s); its images are scored again", f, e)
                continue
            for row, h in enumerate(fh):
                if h in rows_of and h not in out.get("where", {}):
                    put(h, _row_vals(cols, row), f, row)
    known = set(out.get("where", {}))
    todo = [h for h in rows_of if h not in known]  # each distinct content once
    cached = sum(len(rows_of[h]) for h in known)
    done = cached
    if on_progress:
        on_progress(done, n)

    def tick(h: str) -> None:
        nonlocal done
        done += len(rows_of[h])
        if on_progress:
            on_progress(done, n)

    size = max(1, engine.shard_size)
    shards = [[(h, images[rows_of[h][0]]) for h in todo[s:s + size]] for s in range(0, len(todo), size)]
    for i, blob in engine.score(weights, shards, settings, tick):
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            fh, cols = _columns(z)
            if fh != [h for h, _ in shards[i]]:
                raise PoolError(f"the scan engine returned shard {i} with other images than it was given "
                                f"({len(fh)} rows for {len(shards[i])} images); check that every image is readable")
            preds = (z["pred"], z["pred_off"]) if folder is None else None
        chunk = None
        if folder is not None:
            chunk = folder / chunk_name(fh)
            store.write_bytes_atomic(chunk, blob)
        for row, h in enumerate(fh):
            put(h, _row_vals(cols, row), chunk, row)
            if preds is not None:  # no cache: keep the boxes in memory instead
                out.setdefault("mem_pred", {})[h] = preds[0][preds[1][row]:preds[1][row + 1]]
    if n == 0:
        return PoolScores([], [], np.zeros(0, np.int32), np.zeros(0, np.int32),
                          {"entropy": np.zeros(0), "margin": np.zeros(0)}, np.zeros((0, 0), np.float32),
                          np.zeros((0, 0), np.float32))
    return PoolScores(images=images, hashes=hashes, width=out["width"], height=out["height"],
                      uncertainty={"entropy": out["entropy"], "margin": out["margin"]},
                      class_max=out["class_max"], embedding=out["embedding"], cached=cached, where=out["where"],
                      in_memory=out.get("mem_pred", {}))


# --- hard negatives -------------------------------------------------------------------------------------------

def read_detections(path: Path, width: int, height: int) -> np.ndarray:
    """A deployed model's detections file -> (N, 6) [cls, conf, x1, y1, x2, y2] in pixels. Lines are
    'cls xc yc w h conf' (normalised); a line without the confidence column or with bad numbers is skipped
    with a warning naming file:line."""
    out = []
    for ln_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        vals = line.split()
        if not vals:
            continue
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            nums = []
        if len(nums) != 6 or nums[0] != int(nums[0]) or nums[0] < 0:
            log.warning("%s:%d: expected 'cls xc yc w h conf', line skipped: %r", path, ln_no, line[:60])
            continue
        c, xc, yc, w, h, conf = nums
        out.append([c, conf, (xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width,
                    (yc + h / 2) * height])
    return np.asarray(out, dtype=np.float64).reshape(-1, 6)


def deployed_files(folder: Path) -> dict[str, Path]:
    """<image stem> -> detections file of a deployed-detections folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PoolError(f"sampling_strategy.deployed_detections_dir = {str(folder)!r}: folder not found. Point it at "
                        f"the folder of the deployed model's detection .txt files (one per image), or remove it.")
    return {f.stem: f for f in sorted(folder.glob("*.txt"))}


def unconfirmed(dets: np.ndarray, ref: np.ndarray, min_conf: float, iou: float) -> list[int]:
    """Indices of detections (N, 6 [cls, conf, box]) with conf >= min_conf that no reference box (M, 5
    [cls, box]) of the same class overlaps with IoU >= iou: false positives when `ref` is the ground truth."""
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 5)
    if len(dets) == 0:
        return []
    ious = box_iou(dets[:, 2:6], ref[:, 1:5]) * (dets[:, :1] == ref[None, :, 0]) if len(ref) else \
        np.zeros((len(dets), 0))
    hit: np.ndarray = np.any(ious >= iou, axis=1) if ious.size else np.zeros(len(dets), dtype=bool)
    return [i for i in range(len(dets)) if dets[i, 1] >= min_conf and not hit[i]]


def hard_negative_pick(image: str, fps: list[dict], names: Sequence[str]) -> dict:
    """A pick for an image with confident false positives; its score is the most confident one's confidence."""
    fps = sorted(fps, key=lambda e: (-e["conf"], e.get("index", 0)))
    reasons = []
    for e in fps:
        label = names[e["cls"]] if 0 <= e["cls"] < len(names) else f"class {e['cls']}"
        if e["source"] == "validation":
            reasons.append(f"hard negative: confident false positive '{label}' (conf {e['conf']:.2f}) on a "
                           f"labelled validation image")
        elif e["source"] == "deployed-labelled":
            reasons.append(f"hard negative: the deployed model detected '{label}' (conf {e['conf']:.2f}) where the "
                           f"labels have none")
        else:
            reasons.append(f"hard negative: the deployed model detected '{label}' (conf {e['conf']:.2f}) and the "
                           f"current model does not confirm it (likely false positive)")
    return {"image": image, "kind": "hard_negative", "score": float(fps[0]["conf"]),
            "components": {"hard_negative": float(fps[0]["conf"])}, "reasons": reasons, "errors": fps}


def hard_negatives_from_validation(errors: Sequence[Mapping], records: Mapping[str, Mapping], min_conf: float,
                                   allowed: set[str]) -> dict[str, list[dict]]:
    """image -> its FP records (error_report.json) whose confidence (looked up in validation.json) >= min_conf."""
    out: dict[str, list[dict]] = {}
    for e in errors:
        if e.get("kind") != "fp" or e["image"] not in allowed:
            continue
        rec = records.get(e["image"])
        if rec is None or not 0 <= int(e["index"]) < len(rec["pred"]):
            continue
        conf = float(rec["pred"][int(e["index"])][1])
        if conf >= min_conf:
            out.setdefault(e["image"], []).append({**e, "conf": conf, "source": "validation"})
    return out


def hard_negatives_from_deployed(folder: Path, images: Mapping[str, tuple[int, int]],
                                 reference: Callable[[str], np.ndarray], *, labelled: bool, min_conf: float,
                                 iou: float) -> dict[str, list[dict]]:
    """image -> the deployed model's confident detections on it that `reference(image)` (ground truth when
    `labelled`, else the current model's detections, as (M, 5) [cls, box]) does not confirm."""
    files = deployed_files(folder)
    by_stem = {Path(img).stem: img for img in images}
    out: dict[str, list[dict]] = {}
    for stem, f in files.items():
        img = by_stem.get(stem)
        if img is None:
            continue
        w, h = images[img]
        dets = read_detections(f, w, h)
        idx = unconfirmed(dets, reference(img), min_conf, iou)
        if idx:
            src = "deployed-labelled" if labelled else "deployed"
            out[img] = [{"kind": "fp", "image": img, "index": i, "cls": int(dets[i, 0]), "conf": float(dets[i, 1]),
                         "box": [float(v) for v in dets[i, 2:6]], "source": src} for i in idx]
    return out


# --- the strategies ---------------------------------------------------------------------------------------------

def _label(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else f"class {c}"


def uncertainty_reason(u: float, measure: str, top_k: int) -> str:
    return f"uncertainty {u:.3f} (mean of the top {top_k} pre-NMS candidates, {measure})"


def boxes_reason(n: int, conf: float) -> str:
    return f"{n} box{'' if n == 1 else 'es'} predicted by the current model at conf >= {conf:g} (validation.conf)"


def diversity_reason(d: float, labelled: bool, first: bool) -> str:
    if first and not labelled:
        return (f"cosine distance {d:.3f} of its backbone embedding to the pool's mean embedding (nothing labelled to "
                f"compare with: k-center greedy starts from the image least like the pool's average)")
    return (f"cosine distance {d:.3f} of its backbone embedding to the nearest labelled or already-picked image "
            f"(k-center greedy: the farthest image still uncovered; 0 = a duplicate)")


def choose(
    strategy: str,
    candidates: Sequence[str],
    budget: int,
    *,
    scores: PoolScores | None = None,
    labelled_emb: np.ndarray | None = None,
    class_counts: Sequence[int] = (),
    names: Sequence[str] = (),
    measure: str = "entropy",
    top_k: int = 10,
    weights: Mapping[str, float] | None = None,
    hard_negatives: Mapping[str, list[dict]] | None = None,
    hard_negative_share: float = 0.0,
    class_balance_update: bool = False,
    labelled_images: int = 0,
    class_difficulty: Sequence[float] | None = None,
    seed: int = 0,
    box_conf: float = 0.25,
) -> list[dict]:
    """The picks of one strategy, each {"image", "kind", "score", "components", "reasons", "errors"}, best first.

    random: `budget` images drawn with `seed`. entropy: the most uncertain (scores.uncertainty[measure]).
    most_boxes: the images with the most stored post-NMS boxes at conf >= box_conf (validation.conf), ties to the
    more uncertain, then a random order drawn with `seed` (sampling.most_boxes_order). diversity: k-center greedy on
    the backbone embeddings alone, starting from `labelled_emb` (sampling.k_center_greedy).
    combined: first up to round(hard_negative_share * budget) hard negatives (most confident FP first), then
    sampling.combined_select over the rest, with the labelled images and the hard negatives as the starting set of
    the diversity term; with class_balance_update, each pick's likely classes count as labelled for the next
    (sampling.combined_select's in-batch update; a pick adds the labelled set's mean boxes per image,
    sum(class_counts) / labelled_images). With class_difficulty (sampling.class_difficulty, one weight per class),
    combined's uncertainty is calibrated by it first (sampling.calibrate_uncertainty). `scores` rows must be
    `candidates`, in order.
    """
    if budget <= 0 or not candidates:
        return []
    if strategy == "random":
        return [{"image": img, "kind": "random", "score": 0.0, "components": {},
                 "reasons": [f"random draw (seed {seed}): a control, not a judgement"], "errors": []}
                for img in sampling.random_baseline(candidates, budget, seed)]
    if scores is None or list(scores.images) != list(candidates):
        raise ValueError("strategy needs the scan of exactly the candidate images")
    unc = scores.uncertainty[measure]
    if strategy == "entropy":
        return [{"image": scores.images[i], "kind": "uncertain", "score": float(unc[i]),
                 "components": {"uncertainty": float(unc[i])},
                 "reasons": [uncertainty_reason(float(unc[i]), measure, top_k)], "errors": []}
                for i in sampling.top_uncertain(unc, budget)]
    if strategy == "most_boxes":
        boxes = scores.box_counts(box_conf)
        return [{"image": scores.images[i], "kind": "most_boxes", "score": float(boxes[i]),
                 "components": {"boxes": float(boxes[i]), "uncertainty": float(unc[i])},
                 "reasons": [boxes_reason(int(boxes[i]), box_conf),
                             uncertainty_reason(float(unc[i]), measure, top_k) + ": the tie-break among images with "
                             "as many boxes (then a seeded random order)"], "errors": []}
                for i in sampling.most_boxes_order(boxes, unc, budget, seed)]
    if strategy == "diversity":
        labelled = labelled_emb is not None and len(labelled_emb) > 0
        return [{"image": scores.images[i], "kind": "diversity", "score": d, "components": {"diversity": d},
                 "reasons": [diversity_reason(d, labelled, rank == 0)], "errors": []}
                for rank, (i, d) in enumerate(sampling.k_center_greedy(scores.embedding, budget, labelled_emb))]
    if strategy != "combined":
        raise ValueError(f"strategy {strategy!r} is not one of random, entropy, most_boxes, diversity, combined")
    picks: list[dict] = []
    hn = hard_negatives or {}
    n_hn = reserved_share(hard_negative_share, budget, len(hn))["filled"]
    if n_hn:
        ranked = sorted(hn.items(), key=lambda kv: (-max(e["conf"] for e in kv[1]), kv[0]))
        picks = [hard_negative_pick(img, fps, names) for img, fps in ranked[:n_hn]]
    taken = {p["image"] for p in picks}
    rest = [i for i, img in enumerate(scores.images) if img not in taken]
    raw_unc = unc
    if class_difficulty is not None:
        unc = sampling.calibrate_uncertainty(unc, scores.class_max, class_difficulty)
    ref = [labelled_emb] if labelled_emb is not None and len(labelled_emb) else []
    ref += [scores.embedding[[i for i, img in enumerate(scores.images) if img in taken]]] if taken else []
    ref_emb = np.concatenate(ref) if ref else None
    # a young model's class probabilities are low and poorly calibrated; their rank within the pool is what
    # tells which images most likely hold a class
    rel = sampling.relative_class_probs(scores.class_max[rest])
    rare = [sampling.rare_class_score(rel[j], class_counts) for j in range(len(rest))]
    per_image = float(sum(class_counts)) / labelled_images if labelled_images > 0 else 1.0
    sel = sampling.combined_select(unc[rest], [r[0] for r in rare], scores.embedding[rest], budget - len(picks),
                                   weights or SamplingConfig().combined_weights(),
                                   labelled_emb=ref_emb, class_probs=rel if class_balance_update else None,
                                   class_counts=list(class_counts) if class_balance_update else None,
                                   boxes_per_image=per_image)
    for s in sel:
        j = s["index"]
        i = rest[j]
        comp = s["components"]
        rscore, rc = rare[j]
        if "rare_class" in s:  # the in-batch update: the term as it stood when this image was picked
            rscore, rc = comp["class_balance"], s["rare_class"]
        p_c = float(scores.class_max[i][rc]) if rc >= 0 else 0.0
        r_c = float(rel[j][rc]) if rc >= 0 else 0.0
        calibrated = (f", x class difficulty {unc[i] / raw_unc[i]:.2f}" if class_difficulty is not None
                      and raw_unc[i] > 0 else "")
        reasons = [uncertainty_reason(float(raw_unc[i]), measure, top_k) + calibrated
                   + f", {comp['uncertainty']:.2f} of the pool's highest",
                   f"diversity {comp['diversity']:.2f} (backbone-embedding distance to the nearest labelled or "
                   f"already-picked image; 1.00 = at least as far as a typical pool image is from the labelled set)",
                   f"class balance {rscore:.2f}: may hold '{_label(names, rc)}' (p {p_c:.2f}, {r_c:.2f} of the "
                   f"pool's highest for that class, x inverse labelled frequency "
                   f"{rscore / r_c if r_c > 0 else 0.0:.2f}"
                   + (", counts updated within the batch)" if "rare_class" in s else ")")]
        picks.append({"image": scores.images[i], "kind": "uncertain", "score": s["score"],
                      "components": {**comp, "raw_uncertainty": float(raw_unc[i])}, "reasons": reasons,
                      "errors": []})
    return picks


def reserved_share(share: float, budget: int, available: int) -> dict[str, int]:
    """A share of the budget reserved for one kind of pick (hard negatives): {reserved: round(share * budget),
    filled: what the candidates fill, given_back: the slots without a candidate, which the other picks take}."""
    reserved = int(math.floor(share * max(budget, 0) + 0.5))
    filled = min(reserved, max(available, 0))
    return {"reserved": reserved, "filled": filled, "given_back": reserved - filled}


def labelled_reference(train: Sequence[str], seed: int, limit: int = LABELLED_REFERENCE) -> list[str]:
    """The labelled images whose embeddings start k-center greedy: all of them, or a fixed sample of `limit`."""
    import random

    train = sorted(dict.fromkeys(train))
    return train if len(train) <= limit else sorted(random.Random(seed).sample(train, limit))
