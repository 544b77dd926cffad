"""Step 4: pick the images to label next with the configured strategy (sampling_strategy.strategy).

fn_weighted scores seed 004's FN records (val) or post-NMS pool boxes; random, entropy, most_boxes, diversity and
combined score the candidate images (pool images, or the validation split) with one cached, streamed predict pass
(al.selection.pool; random needs none).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np

from al.core import artifacts, store
from al.core.context import StepContext
from al.core.errors import Interrupted, StepError
from al.core.events import Message, Progress
from al.data import dataset, hashing
from al.report import error_analysis
from al.selection import pool, sampling
from al.steps import gate
from al.yolo import detector

POOL_MIN_CONF = 0.05
"""Pool predictions below this confidence are noise, not candidates."""


def _pool_images(ctx: StepContext, splits: dict[str, list[str]],
                 hash_images: Callable[[list[str]], list[str]] | None = None) -> list[str]:
    """Pool images whose content is not in training or test yet. By content, not by name: a pick is copied into the
    run under its own file name, a pool's cam2/0001.jpg is another image than a labelled 0001.jpg, and a byte copy
    of a labelled image under another name is no new image. `hash_images` computes the pool's hashes (the scan
    engine's: on Ray, the unknown ones are hashed on the cluster)."""
    pool_dir = ctx.env.cfg.dataset.pool_dir
    if pool_dir is None:  # the config check refuses this; a config loaded without the check may not
        raise StepError(f"{ctx.env.cfg.source_path}: key 'dataset.mining_source' = 'pool' needs dataset.pool_dir; "
                        f"set it or use mining_source: val.")
    taken = {hashing.file_hash(p) for p in dict.fromkeys(splits["train"] + splits["test"])}
    found = sorted(str(p.resolve()) for p in pool_dir.rglob("*") if p.suffix.lower() in dataset.IMG_SUFFIXES)
    hashes = (hash_images or (lambda imgs: [hashing.file_hash(p) for p in imgs]))(found)
    images = [img for img, h in zip(found, hashes) if h not in taken]
    if not images:
        raise StepError(f"The pool {pool_dir} has no images left to mine; add images or set "
                        f"dataset.mining_source: val.")
    return images


def _progress(ctx: StepContext):
    def cb(done: int, total: int) -> None:
        ctx.ui.emit(Progress("extract", done, total, "images"))
        if ctx.ui.stop_requested():  # finished cache chunks stay: --resume picks up from there
            raise Interrupted("extract stopped; --resume continues the pool scan from its cache")
    return cb


def _pool_candidates(ctx: StepContext, images: list[str]) -> list[dict]:
    """fn_weighted on a pool: predict it once; every predicted box becomes a candidate whose uncertainty is its
    closeness to the decision threshold (the pool has no labels, so there are no FNs to score)."""
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    vc = cfg.validation
    records, cands = [], []
    preds = detector.predict(paths.best(k), images, imgsz=cfg.training.imgsz, conf=POOL_MIN_CONF, iou=vc.nms_iou,
                             batch=vc.batch, device=cfg.training.device, model=ctx.models.model(paths.best(k)),
                             on_progress=_progress(ctx))
    for p in preds:
        rec = {"image": p.path, "width": p.width, "height": p.height, "gt": [],
               "pred": [[int(c), round(float(s), 4), *[round(float(v), 2) for v in b]]
                        for c, s, b in zip(p.cls, p.conf, p.boxes)]}
        records.append(rec)
        for i, (c, s, b) in enumerate(zip(p.cls, p.conf, p.boxes)):
            x1, y1, x2, y2 = (float(v) for v in b)
            cell = error_analysis.grid_cell((x1, y1, x2, y2), p.width, p.height)
            area = (x2 - x1) * (y2 - y1)
            cands.append({"kind": "fn", "image": p.path, "index": i, "cls": int(c), "box": [x1, y1, x2, y2],
                          "area": area, "size": error_analysis.size_bucket(area),
                          "position": error_analysis.position_of(cell),
                          "grid": list(cell), "aspect": (x2 - x1) / max(y2 - y1, 1e-6), "conf": float(s),
                          "difficulty": 1.0 - abs(2.0 * float(s) - 1.0), "crop": None})
    store.write_json(paths.pool_predictions(k), {"iteration": k, "names": ctx_names(ctx), "images": records})
    return cands


def ctx_names(ctx: StepContext) -> list[str]:
    return list(store.read_json(ctx.env.paths.dataset_version(ctx.iteration) / "version.json")["names"])


def _fn_weighted(ctx: StepContext, splits, names, counts, exclude) -> tuple[list[dict], int, str]:
    paths, cfg = ctx.env.paths, ctx.env.cfg
    if cfg.dataset.mining_source == "val":
        report = store.read_json(paths.error_report(ctx.iteration), required=("errors",))
        cands = [e for e in report["errors"] if e["kind"] == "fn" and e["image"] not in exclude]
        unit = "FNs"
    else:
        cands = _pool_candidates(ctx, _pool_images(ctx, splits))
        unit = "uncertain pool detections"
    scored = sampling.score_errors(cands, dict(enumerate(counts)), cfg.sampling_strategy.weights())
    picks = sampling.select_images(scored, cfg.active_learning.picks_budget(ctx.iteration), exclude=exclude,
                                   names=names)
    for pk in picks:
        pk["kind"] = "fn_weighted"
        for e in pk["errors"]:
            e["class_name"] = names[e["cls"]]
    return picks, len(cands), unit


def scan_settings(ctx: StepContext) -> pool.ScanSettings:
    cfg = ctx.env.cfg
    sc, vc = cfg.sampling_strategy, cfg.validation
    return pool.ScanSettings(imgsz=cfg.training.imgsz, conf=POOL_MIN_CONF, iou=vc.nms_iou,
                             batch=cfg.pool.batch or vc.batch, device=detector.resolve_device(cfg.training.device),
                             cand_conf=sc.candidate_conf, top_k=sc.uncertainty_top_k)


@contextlib.contextmanager
def scan_engine(ctx: StepContext, weights: Path) -> Iterator[pool.ScanEngine]:
    """The engine of the pool scan (pool.engine): this process, or Ray (its runtime shut down when the block ends)."""
    pc = ctx.env.cfg.pool
    if pc.engine == "ray":
        from al.selection.ray_engine import RayEngine

        with RayEngine(pc, say=lambda text: ctx.ui.emit(Message(text))) as engine:
            yield engine
    else:
        yield pool.LocalEngine(shard_size=pc.shard_size, loader=ctx.models.model)  # the model loads when scoring


def _deployed_dir(ctx: StepContext) -> Path | None:
    return ctx.env.cfg.sampling_strategy.deployed_detections_dir  # resolved and checked by load_config


def _hard_negatives(ctx: StepContext, candidates: list[str], scores: pool.PoolScores, nc: int) -> dict[str, list[dict]]:
    """Confident false positives: validation FPs (mining_source val) and the deployed model's detections that the
    labels (val) or the current model (pool) do not confirm."""
    cfg = ctx.env.cfg
    sc = cfg.sampling_strategy
    allowed = set(candidates)
    out: dict[str, list[dict]] = {}
    labelled = cfg.dataset.mining_source == "val"
    if labelled:
        report = store.read_json(ctx.env.paths.error_report(ctx.iteration), required=("errors",))
        records = artifacts.load_validation_records(ctx.env.paths, ctx.iteration).by_image()
        out = pool.hard_negatives_from_validation(report["errors"], records, sc.hard_negative_conf, allowed)
    folder = _deployed_dir(ctx)
    if folder is not None:
        try:
            row = {img: i for i, img in enumerate(scores.images)}
            sizes = {img: (int(scores.width[i]), int(scores.height[i])) for img, i in row.items()}

            def reference(img: str) -> np.ndarray:
                i = row[img]
                if labelled:
                    return dataset.read_labels(dataset.label_path(img), nc, *sizes[img])
                pred = scores.predictions(i)
                keep = pred[:, 1] >= cfg.validation.conf
                return np.column_stack([pred[keep, 0], pred[keep, 2:6]]).reshape(-1, 5)

            dep = pool.hard_negatives_from_deployed(folder, sizes, reference, labelled=labelled,
                                                    min_conf=sc.hard_negative_conf, iou=cfg.validation.iou)
        except pool.PoolError as e:
            raise StepError(f"{cfg.source_path}: {e}") from None
        for img, fps in dep.items():
            out.setdefault(img, []).extend(fps)
    return out


def _pool_records(ctx: StepContext, picks: list[dict], scores: pool.PoolScores | None) -> list[dict]:
    """pool_predictions.json records of the picks (review needs their size and, with --auto, their boxes)."""
    k, cfg = ctx.iteration, ctx.env.cfg
    images = [p["image"] for p in picks]
    if scores is not None:
        row = {img: i for i, img in enumerate(scores.images)}
        preds = []
        for img in images:
            i = row[img]
            d = scores.predictions(i)
            preds.append((img, int(scores.width[i]), int(scores.height[i]), d))
    else:  # random: nothing scanned; predict just the picks
        vc = cfg.validation
        preds = [(p.path, p.width, p.height, np.column_stack([p.cls, p.conf, p.boxes]).reshape(-1, 6))
                 for p in detector.predict(ctx.env.paths.best(k), images, imgsz=cfg.training.imgsz, conf=POOL_MIN_CONF,
                                           iou=vc.nms_iou, batch=vc.batch, device=cfg.training.device,
                                           model=ctx.models.model(ctx.env.paths.best(k)))]
    return [{"image": img, "width": w, "height": h, "gt": [],
             "pred": [[int(r[0]), round(float(r[1]), 4), *[round(float(v), 2) for v in r[2:6]]] for r in d]}
            for img, w, h, d in preds]


def _strategy_picks(ctx: StepContext, splits, names, counts, exclude) -> tuple[list[dict], int, str, dict]:
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    sc = cfg.sampling_strategy
    budget = cfg.active_learning.picks_budget(k)
    seed = cfg.training.seed * 1000 + k
    # one engine for the pool's content hashes and its scan (a Ray runtime starts at most once per extract)
    with scan_engine(ctx, paths.best(k)) as engine:
        if cfg.dataset.mining_source == "pool":
            candidates = _pool_images(ctx, splits, engine.hash_images)
        else:
            candidates = sorted(p for p in dict.fromkeys(splits["val"]) if p not in exclude)
        info: dict = {}
        scores = None
        if sc.strategy == "random":
            picks = pool.choose("random", candidates, budget, seed=seed)
        else:
            # the strategies with a diversity term start k-center greedy from the labelled images' embeddings
            ref = (pool.labelled_reference(splits["train"], cfg.training.seed)
                   if sc.strategy in ("combined", "diversity") else [])
            settings = scan_settings(ctx)
            weights = paths.best(k)
            try:
                allscores = pool.scan(weights, candidates + ref, settings, paths.pool_score_cache,
                                      on_progress=_progress(ctx), engine=engine)
            except pool.PoolError as e:  # also the Ray engine's errors
                raise StepError(str(e)) from None
            n = len(candidates)
            scores = allscores.subset(range(n))
            labelled_emb = allscores.embedding[n:]
            info["scan"] = {"images": len(allscores.images), "cached": allscores.cached,
                            "model": str(weights), "settings": settings.key()}
            hn = _hard_negatives(ctx, candidates, scores, len(names)) if sc.strategy == "combined" else {}
            info["hard_negative_candidates"] = len(hn)
            if sc.strategy == "combined":
                slots = pool.reserved_share(sc.hard_negative_share, budget, len(hn))
                info["hard_negative_slots"] = slots
                if slots["given_back"]:
                    ctx.ui.emit(Message(f"[EXTRACT] hard negatives: {slots['reserved']} slots reserved "
                                        f"(sampling_strategy.hard_negative_share {sc.hard_negative_share}), "
                                        f"{len(hn)} candidates: {slots['given_back']} slots given back to the other "
                                        f"picks"))
            difficulty = None
            if sc.strategy == "combined" and sc.combined_difficulty_calibration:
                difficulty = _class_difficulty(ctx, names)
                info["class_difficulty"] = {n: round(float(d), 4) for n, d in zip(names, difficulty)}
            picks = pool.choose(sc.strategy, candidates, budget, scores=scores, labelled_emb=labelled_emb,
                                class_counts=counts, names=names, measure=sc.uncertainty_measure,
                                top_k=sc.uncertainty_top_k, weights=sc.combined_weights(), hard_negatives=hn,
                                hard_negative_share=sc.hard_negative_share,
                                class_balance_update=sc.combined_class_balance_update,
                                labelled_images=len(set(splits["train"])), class_difficulty=difficulty,
                                seed=seed, box_conf=cfg.validation.conf)
        if cfg.dataset.mining_source == "pool":
            store.write_json(paths.pool_predictions(k), {"iteration": k, "names": names,
                                                         "images": _pool_records(ctx, picks, scores)})
        unit = "pool images" if cfg.dataset.mining_source == "pool" else "validation images"
        return picks, len(candidates), unit, info


def _class_difficulty(ctx: StepContext, names: list[str]) -> list[float]:
    """sampling_strategy.combined_difficulty_calibration: the per-class weights from this iteration's validation
    (AP50 per class on the validation split, never the test split); a class without an AP there counts as the
    hardest measured one (sampling.class_difficulty), and the step says which."""
    val = artifacts.load_validation(ctx.env.paths, ctx.iteration)
    ap = val.per_class_ap
    missing = [n for n in names if n not in ap]
    if missing:
        ctx.ui.emit(Message(f"[EXTRACT] class difficulty: no validation AP for {', '.join(missing)} (no instance in "
                            f"the {val.split} split"
                            + (", or a validation.json written before per-class AP" if len(missing) == len(names)
                               else "")
                            + "): counted as the hardest measured class"))
    weights = sampling.class_difficulty([ap[n].ap50 if n in ap else None for n in names])
    ctx.ui.emit(Message("[EXTRACT] class difficulty (1 - validation AP50, relative to the mean): "
                        + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights))))
    return [float(w) for w in weights]


def _strategy_weights(ctx: StepContext) -> dict:
    sc = ctx.env.cfg.sampling_strategy
    if sc.strategy == "fn_weighted":
        return sc.weights()
    if sc.strategy == "combined":
        return {**sc.combined_weights(), "hard_negative_share": sc.hard_negative_share}
    return {}


def empty_val_advice(ctx: StepContext) -> str:
    """What to do when the picks would take every validation image into training (extract and review say it)."""
    cfg = ctx.env.cfg
    return (f"reviewing them would leave the validation split empty; lower active_learning.max_samples_per_iteration "
            f"(then --resume), or add validation images to {cfg.dataset.data_yaml} and start over with: "
            f"{ctx.env.command('--start-iteration', 0)}.")


def run(ctx: StepContext) -> str:
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    names = list(ver["names"])
    # the test split is never a source, nor the validation images frozen into the decision set
    exclude = set(splits["train"]) | set(splits["test"]) | gate.frozen_val(paths)
    counts = dataset.class_counts(splits["train"], len(names))
    strategy = cfg.sampling_strategy.strategy
    with hashing.persisted(paths.hash_cache):  # the pool scan's content hashes outlive the process
        if strategy == "fn_weighted":
            picks, n_cands, unit = _fn_weighted(ctx, splits, names, counts, exclude)
            info: dict = {}
        else:
            picks, n_cands, unit, info = _strategy_picks(ctx, splits, names, counts, exclude)
    if cfg.dataset.mining_source == "val" and splits["val"] and set(splits["val"]) <= {p["image"] for p in picks}:
        # refused before hard_examples.json is written, so that --resume picks again under a lowered limit
        raise StepError(f"Iteration {k}'s {len(picks)} picks are every image left in the validation split: "
                        f"{empty_val_advice(ctx)}")
    for rank, pk in enumerate(picks, 1):
        pk["rank"] = rank
    artifacts.save_hard_examples(paths, k, artifacts.HardExamples(
        iteration=k, source=cfg.dataset.mining_source, strategy=strategy, weights=_strategy_weights(ctx),
        uncertainty_measure=cfg.sampling_strategy.uncertainty_measure, candidates=n_cands,
        train_class_counts=dict(zip(names, counts)), **info,
        picks=cast(list[artifacts.Pick], picks)))  # the strategies' plain dicts, validated here as picks
    n_hn = sum(1 for p in picks if p.get("kind") == "hard_negative")
    line = sampling.format_console(len(picks), n_cands, unit)
    ctx.ui.emit(Message(f"{line} ({strategy}{f', {n_hn} hard negatives' if n_hn else ''})"))
    return "next"
