"""Step 4: score candidates with seed 004's weighted formula and pick the top images for review."""

from __future__ import annotations

from pathlib import Path

from al import analysis, dataset, detector, sampling, store
from al.context import Context, StepError
from al.events import Message, Progress

POOL_MIN_CONF = 0.05
"""Pool predictions below this confidence are noise, not candidates."""


def _pool_candidates(ctx: Context, exclude: set[str]) -> tuple[list[dict], int]:
    """Predict the unlabelled pool once; every predicted box becomes a candidate whose uncertainty is its
    closeness to the decision threshold (the pool has no labels, so there are no FNs to score)."""
    k, paths, cfg = ctx.k, ctx.paths, ctx.cfg
    pool_dir = cfg.dataset.pool_dir
    taken = {Path(p).name for p in exclude}
    images = sorted(str(p.resolve()) for p in pool_dir.rglob("*")
                    if p.suffix.lower() in dataset.IMG_SUFFIXES and p.name not in taken)
    if not images:
        raise StepError(f"The pool {pool_dir} has no images left to mine; add images or set "
                        f"dataset.mining_source: val.")
    vc = cfg.validation
    records, cands = [], []
    preds = detector.predict(paths.best(k), images, imgsz=cfg.training.imgsz, conf=POOL_MIN_CONF, iou=vc.nms_iou,
                             batch=vc.batch, device=cfg.training.device, model=ctx.model(paths.best(k)),
                             on_progress=lambda d, t: ctx.bus.emit(Progress("extract", d, t, "images")))
    for p in preds:
        rec = {"image": p.path, "width": p.width, "height": p.height, "gt": [],
               "pred": [[int(c), round(float(s), 4), *[round(float(v), 2) for v in b]]
                        for c, s, b in zip(p.cls, p.conf, p.boxes)]}
        records.append(rec)
        for i, (c, s, b) in enumerate(zip(p.cls, p.conf, p.boxes)):
            x1, y1, x2, y2 = (float(v) for v in b)
            cell = analysis.grid_cell((x1, y1, x2, y2), p.width, p.height)
            area = (x2 - x1) * (y2 - y1)
            cands.append({"kind": "fn", "image": p.path, "index": i, "cls": int(c), "box": [x1, y1, x2, y2],
                          "area": area, "size": analysis.size_bucket(area), "position": analysis.position_of(cell),
                          "grid": list(cell), "aspect": (x2 - x1) / max(y2 - y1, 1e-6), "conf": float(s),
                          "difficulty": 1.0 - abs(2.0 * float(s) - 1.0), "crop": None})
    store.write_json(paths.pool_predictions(k), {"iteration": k, "names": ctx_names(ctx), "images": records})
    return cands, len(images)


def ctx_names(ctx: Context) -> list[str]:
    return list(store.read_json(ctx.paths.dataset_version(ctx.k) / "version.json")["names"])


def run(ctx: Context) -> str:
    k, paths, cfg = ctx.k, ctx.paths, ctx.cfg
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    names = list(ver["names"])
    exclude = set(splits["train"]) | set(splits["test"])  # the test split is never a source
    source = cfg.dataset.mining_source
    if source == "val":
        report = store.read_json(paths.error_report(k), required=("errors",))
        cands = [e for e in report["errors"] if e["kind"] == "fn" and e["image"] not in exclude]
        unit = "FNs"
    else:
        added = [p for p in splits["train"] if str(paths.dataset_root) in p]
        cands, _n = _pool_candidates(ctx, exclude | set(added))
        unit = "uncertain pool detections"
    counts = dataset.class_counts(splits["train"], len(names))
    scored = sampling.score_errors(cands, dict(enumerate(counts)), cfg.sampling_strategy.weights())
    picks = sampling.select_images(scored, cfg.active_learning.max_samples_per_iteration, exclude=exclude,
                                   names=names)
    for pk in picks:
        for e in pk["errors"]:
            e["class_name"] = names[e["cls"]]
    store.write_json(paths.hard_examples(k), {
        "iteration": k, "source": source, "strategy": "fn_weighted", "weights": cfg.sampling_strategy.weights(),
        "candidates": len(cands), "train_class_counts": dict(zip(names, counts)), "picks": picks})
    ctx.bus.emit(Message(sampling.format_console(len(picks), len(cands), unit)))
    return "next"
