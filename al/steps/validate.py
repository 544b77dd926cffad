"""Step 1: Ultralytics' validator over validation (+ a fixed train sample + test), once per image; mAP from its
statistics (the number `yolo val` gives), IoU matching and P/R/F1 at the configured conf (docs/METRICS.md)."""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from al.core import artifacts, store
from al.core.context import StepContext
from al.core.errors import Interrupted, StepError
from al.core.events import Message, Progress
from al.data import dataset
from al.metrics.matching import match_record, summarize
from al.steps import gate
from al.yolo import checkpoints
from al.yolo.validator import ImageEval, SplitEval, SplitValidator, map_from_stats


def train_sample(ctx: StepContext, train: list[str], base_train: list[str]) -> list[str]:
    """A fixed sample of training images (drawn from the base training set, same every iteration)."""
    n = ctx.env.cfg.active_learning.train_f1_sample
    current = set(train)
    pool = [p for p in base_train if p in current] or train
    if n <= 0 or not pool:
        return []
    rng = random.Random(ctx.env.cfg.training.seed)
    return sorted(rng.sample(sorted(pool), min(n, len(pool))))


def evaluate(ctx: StepContext, images: list[str], names: list[str], preds: dict[str, ImageEval]) -> dict:
    """Per-image records and P/R/F1 at validation.conf (the loop's matching at validation.iou), and mAP and
    per-class AP from the validator's own per-image statistics (`stats`, aligned with `images`). The statistics
    are pooled in the order of `preds` (the validator's order), so over a whole split mAP is the validator's."""
    vc = ctx.env.cfg.validation
    nc = len(names)
    records, stats = [], []
    for img in images:
        p = preds[img].pred
        gt = dataset.read_labels(dataset.label_path(img), nc, p.width, p.height)
        stats.append(preds[img].stats)
        keep = p.conf >= vc.conf
        pred = np.column_stack([p.cls[keep], p.conf[keep], p.boxes[keep]]) if keep.any() else np.zeros((0, 6))
        rec = {"image": img, "width": p.width, "height": p.height,
               "gt": [[int(r[0]), *[round(float(v), 2) for v in r[1:]]] for r in gt],
               "pred": [[int(r[0]), round(float(r[1]), 4), *[round(float(v), 2) for v in r[2:]]] for r in pred]}
        records.append(match_record(rec, vc.iou))
    out = summarize(records, names)
    rank = {img: i for i, img in enumerate(preds)}
    out.update(map_from_stats([preds[i].stats for i in sorted(dict.fromkeys(images), key=rank.__getitem__)], names))
    out["records"] = records
    out["stats"] = stats
    return out


def _keyed(res: SplitEval, images: list[str], where: Path) -> dict[str, ImageEval]:
    """The validator's images (read through mirror links) under their own paths, in the validator's order."""
    by_link = {dataset.mirror_name(i): i for i in images}
    out = {}
    for e in res.images:
        img = by_link.get(Path(e.pred.path).name)
        if img is None:
            raise StepError(f"{e.pred.path}: validated, but not an image of {where}. Its link folder is out of step "
                            f"with the split list; delete {Path(e.pred.path).parent.parent} and run again.")
        e.pred.path = img
        out[img] = e
    return out


def _ensure_mirror(root: Path, images: list[str]) -> None:
    """The split's link folder (dataset.link_mirror) holds exactly its images; re-linked if not (a version
    written before the mirror existed, or a folder edited by hand)."""
    want = {dataset.mirror_name(i) for i in images}
    have = set(os.listdir(root / "images")) if (root / "images").is_dir() else set()
    if have != want:
        dataset.link_mirror(root, images)


def validator_pass(ctx: StepContext, model, names: list[str], val: list[str], sample: list[str],
                   test: list[str]) -> dict[str, ImageEval]:
    """Ultralytics' validator on val and test of iteration k's dataset version (what `yolo val data=<its
    data.yaml> split=val|test` reads) and on the train sample's images that are in neither (a temporary mirror):
    each image validated once. Progress per batch; a stop request between batches raises Interrupted."""
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    vc = cfg.validation
    in_splits = set(val) | set(test)
    extra = [i for i in dict.fromkeys(sample) if i not in in_splits]
    total = len(set(val)) + len(set(test)) + len(extra)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        if ctx.ui.stop_requested():  # nothing is written before the pass ends, so stopping here is safe
            raise Interrupted("validation stopped; --resume re-runs it")
        done += n
        ctx.ui.emit(Progress("validate", done, total, "images"))

    validator = SplitValidator(model, imgsz=cfg.training.imgsz, batch=vc.batch, iou=vc.nms_iou,
                               device=cfg.training.device, workers=cfg.training.workers)

    def run_split(data_yaml: Path, split: str) -> SplitEval:
        return validator.run(data_yaml, split, on_batch)

    out: dict[str, ImageEval] = {}
    vdir = paths.dataset_version(k)
    for split, images in (("val", val), ("test", test)):
        if images:
            _ensure_mirror(vdir / dataset.MIRROR / split, images)
            out.update(_keyed(run_split(paths.dataset_yaml(k), split), images, vdir / f"{split}.txt"))
    if extra:
        with tempfile.TemporaryDirectory(prefix="al_train_sample_") as tmp:  # links and labels cache go with it
            root = Path(tmp)
            dataset.link_mirror(root / "sample", extra)
            store.write_yaml(root / "data.yaml", {"path": str(root), "train": "sample/images", "val": "sample/images",
                                                  "names": dict(enumerate(names)), "nc": len(names)})
            out.update(_keyed(run_split(root / "data.yaml", "val"), extra, vdir / "train.txt"))
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
    decision_set = gate.choose(ctx, splits)  # frozen at iteration 0; its images are in val or test
    sample = train_sample(ctx, splits["train"], base["train"])
    todo = list(dict.fromkeys(val + sample + test))
    t0 = time.perf_counter()
    vc = cfg.validation
    # One validator pass over every image this step needs; later steps reuse its records, never re-predict.
    preds = validator_pass(ctx, model, names, val, sample, test)
    missing = [i for i in todo if i not in preds]
    if missing:
        raise StepError(f"{len(missing)} images could not be read, e.g. {missing[0]}. Remove or fix them in "
                        f"{cfg.dataset.data_yaml}.")
    predict_s = time.perf_counter() - t0

    res = evaluate(ctx, val, names, preds)
    train_res = evaluate(ctx, sample, names, preds) if sample else None
    test_res = evaluate(ctx, test, names, preds) if test else None
    decision = gate.evaluate(ctx, decision_set, names, [(val, res), (test, test_res)], list(preds))
    summary = artifacts.ValidationSummary(
        iteration=k, split="val", weights=str(weights), conf=vc.conf, iou=vc.iou, names=names,
        dataset_version=ver["id"], per_class=res["per_class"], overall=res["overall"],
        map50=res["map50"], map50_95=res["map50_95"], per_class_ap=res["per_class_ap"],
        train_f1=train_res["overall"]["f1"] if train_res else None, train_sample=len(sample),
        test=(artifacts.SplitMetrics(map50=test_res["map50"], map50_95=test_res["map50_95"], **test_res["overall"],
                                     per_class=test_res["per_class"], per_class_ap=test_res["per_class_ap"],
                                     images=len(test)) if test_res else None),
        decision=decision, timing=artifacts.Timing(predict_s=round(predict_s, 3), images=len(todo)))
    verdict = gate.run(ctx, decision_set, decision, names)  # promotion.json, champion.json; validation.json last
    artifacts.save_validation(paths, k, summary, artifacts.ValidationRecords(iteration=k, images=res["records"]))
    o = summary.overall
    ctx.ui.emit(Message(f"[VALIDATE] P={o.precision:.4f} R={o.recall:.4f} F1={o.f1:.4f} "
                         f"mAP50={summary.map50:.4f} mAP50-95={summary.map50_95:.4f} "
                         f"(TP={o.tp} FP={o.fp} FN={o.fn}, {len(val)} images)"))
    if test_res:
        ctx.ui.emit(Message(f"[VALIDATE] test: mAP50={test_res['map50']:.4f} "
                             f"mAP50-95={test_res['map50_95']:.4f} F1={test_res['overall']['f1']:.4f}"))
    gate.message(ctx, decision)
    gate.report(ctx, verdict)
    return "next"
