"""Step 1: one inference pass over validation (+ a fixed train sample + test), IoU matching, metrics."""

from __future__ import annotations

import random
import time

import numpy as np

from al.core import artifacts
from al.core.context import StepContext
from al.core.errors import Interrupted, StepError
from al.core.events import Message, Progress
from al.data import dataset
from al.metrics.matching import match_record, summarize
from al.yolo import checkpoints, detector


def train_sample(ctx: StepContext, train: list[str], base_train: list[str]) -> list[str]:
    """A fixed sample of training images (drawn from the base training set, same every iteration)."""
    n = ctx.env.cfg.active_learning.train_f1_sample
    current = set(train)
    pool = [p for p in base_train if p in current] or train
    if n <= 0 or not pool:
        return []
    rng = random.Random(ctx.env.cfg.training.seed)
    return sorted(rng.sample(sorted(pool), min(n, len(pool))))


def evaluate(ctx: StepContext, images: list[str], names: list[str], preds: dict[str, detector.Prediction]) -> dict:
    """Per-image records, P/R/F1 at the configured conf, and mAP from the low-confidence predictions."""
    vc = ctx.env.cfg.validation
    nc = len(names)
    records, tps, confs, pcls, tcls = [], [], [], [], []
    for img in images:
        p = preds[img]
        gt = dataset.read_labels(dataset.label_path(img), nc, p.width, p.height)
        tps.append(detector.correct_matrix(gt[:, 0], gt[:, 1:], p.cls, p.conf, p.boxes))
        confs.append(p.conf)
        pcls.append(p.cls)
        tcls.append(gt[:, 0])
        keep = p.conf >= vc.conf
        pred = np.column_stack([p.cls[keep], p.conf[keep], p.boxes[keep]]) if keep.any() else np.zeros((0, 6))
        rec = {"image": img, "width": p.width, "height": p.height,
               "gt": [[int(r[0]), *[round(float(v), 2) for v in r[1:]]] for r in gt],
               "pred": [[int(r[0]), round(float(r[1]), 4), *[round(float(v), 2) for v in r[2:]]] for r in pred]}
        records.append(match_record(rec, vc.iou))
    out = summarize(records, names)
    out.update(detector.map_from_matches(tps, confs, pcls, tcls, nc))
    out["records"] = records
    return out


def run(ctx: StepContext) -> str:
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    weights = paths.best(k)
    checkpoints.ensure(weights, f"Iteration {k}'s model", warn=lambda text: ctx.say(text, "warning"),
                       fix=checkpoints.remake_advice(ctx.env, k))
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    _, base = dataset.read_snapshot(paths.dataset_version(0))
    names = list(ver["names"])
    model = ctx.models.model(weights)
    mnames = [model.names[i] for i in sorted(model.names)]
    if mnames != names:
        raise StepError(f"{weights}: model classes {mnames} differ from the dataset's {names} "
                        f"({paths.dataset_yaml(k)}). Train the baseline on this dataset or fix data.yaml names.")
    val, test = splits["val"], splits["test"]
    sample = train_sample(ctx, splits["train"], base["train"])
    todo = list(dict.fromkeys(val + sample + test))
    preds: dict[str, detector.Prediction] = {}
    t0 = time.perf_counter()
    vc = cfg.validation

    def progress(done, total):
        if ctx.ui.stop_requested():  # nothing is written before the pass ends, so stopping here is safe
            raise Interrupted("validation stopped; --resume re-runs it")
        ctx.ui.emit(Progress("validate", done, total, "images"))

    # One streamed pass over every image this step needs; later steps reuse its records, never re-predict.
    for p in detector.predict(weights, todo, imgsz=cfg.training.imgsz, conf=0.001, iou=vc.nms_iou, batch=vc.batch,
                              device=cfg.training.device, on_progress=progress, model=model):
        preds[p.path] = p
    missing = [i for i in todo if i not in preds]
    if missing:
        raise StepError(f"{len(missing)} images could not be read, e.g. {missing[0]}. Remove or fix them in "
                        f"{cfg.dataset.data_yaml}.")
    predict_s = time.perf_counter() - t0

    res = evaluate(ctx, val, names, preds)
    train_res = evaluate(ctx, sample, names, preds) if sample else None
    test_res = evaluate(ctx, test, names, preds) if test else None
    summary = artifacts.ValidationSummary(
        iteration=k, split="val", weights=str(weights), conf=vc.conf, iou=vc.iou, names=names,
        dataset_version=ver["id"], per_class=res["per_class"], overall=res["overall"],
        map50=res["map50"], map50_95=res["map50_95"],
        train_f1=train_res["overall"]["f1"] if train_res else None, train_sample=len(sample),
        test=(artifacts.SplitMetrics(map50=test_res["map50"], map50_95=test_res["map50_95"], **test_res["overall"],
                                     per_class=test_res["per_class"], images=len(test)) if test_res else None),
        timing=artifacts.Timing(predict_s=round(predict_s, 3), images=len(todo)))
    artifacts.save_validation(paths, k, summary, artifacts.ValidationRecords(iteration=k, images=res["records"]))
    o = summary.overall
    ctx.ui.emit(Message(f"[VALIDATE] P={o.precision:.4f} R={o.recall:.4f} F1={o.f1:.4f} "
                         f"mAP50={summary.map50:.4f} mAP50-95={summary.map50_95:.4f} "
                         f"(TP={o.tp} FP={o.fp} FN={o.fn}, {len(val)} images)"))
    if test_res:
        ctx.ui.emit(Message(f"[VALIDATE] test: mAP50={test_res['map50']:.4f} "
                             f"mAP50-95={test_res['map50_95']:.4f} F1={test_res['overall']['f1']:.4f}"))
    return "next"
