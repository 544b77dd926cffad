"""The stable decision set and the promotion gate, run inside the validate step (docs/GATE.md).

The decision set is chosen once, at iteration 0's validate (decision_set.json), and checked by content every
iteration after. validate evaluates it from the predictions of its one pass and writes the per-image arrays
(decision_eval.npz); the gate compares iteration k's model with the champion before it by a paired bootstrap over
those images (al.metrics.gate) and writes promotion.json and champion.json. The next retrain fine-tunes the
champion (gate.fine_tune_from)."""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from al.core import artifacts, store
from al.core.context import StepContext
from al.core.errors import RedoError, StepError
from al.core.events import GateVerdict, Message
from al.core.paths import RunPaths
from al.data import dataset, hashing
from al.metrics import gate as stats
from al.metrics.matching import summarize

# ------------------------------------------------------------------------------------------------ the set

def _content(images: Sequence[str]) -> dict[str, str]:
    """Each image's content hash with its label file's (a relabelled image changes the figures too)."""
    out = {}
    for img in images:
        lab = dataset.label_path(img)
        out[img] = hashing.file_hash(img) + ":" + (hashing.file_hash(lab) if lab.is_file() else "no-label")
    return out


def _digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k}\t{hashes[k]}" for k in sorted(hashes)).encode()).hexdigest()


def frozen_val(paths: RunPaths) -> set[str]:
    """The validation images frozen into the decision set (never mined); empty when the set is the test split."""
    if not paths.decision_set.is_file():
        return set()
    ds = artifacts.load_decision_set(paths)
    return set(ds.images) if ds.set == "val_frozen" else set()


def choose(ctx: StepContext, splits: dict[str, list[str]]) -> artifacts.DecisionSet:
    """The decision set: decision_set.json when it exists (its images must be unchanged), else chosen now from
    gate.decision_set and saved (at iteration 0; a run made before the gate chooses it at its next validate)."""
    paths, gc, k = ctx.env.paths, ctx.env.cfg.gate, ctx.iteration
    fix = (f"restore the original files, or start the run again with {ctx.env.command('--start-iteration', 0)} "
           f"(a new decision set: earlier figures are not comparable with it)")
    with hashing.persisted(paths.hash_cache):
        if paths.decision_set.is_file():
            ds = artifacts.load_decision_set(paths)
            gone = [i for i in ds.images if not Path(i).is_file()]
            if gone:
                raise StepError(f"{paths.decision_set}: decision image {gone[0]} is missing ({len(gone)} missing); "
                                f"{fix}.")
            now = _content(ds.images)
            if _digest(now) != ds.content_hash:
                changed = [i for i in ds.images if ds.hashes.get(i) not in (None, now[i])]
                what = f"{changed[0]} (or its label file) changed" if changed else "its images' content changed"
                raise StepError(f"{paths.decision_set}: decision image {what} since iteration "
                                f"{ds.created_iteration} froze the set; {fix}.")
            if gc.decision_set not in ("auto", ds.set):
                ctx.say(f"[GATE] WARNING: gate.decision_set is {gc.decision_set}, but this run froze {ds.set} "
                        f"({paths.decision_set}); it keeps {ds.set}. A new set needs a new run: {fix}", "warning")
            return ds
        mode = gc.decision_set
        if mode == "auto":
            mode = "test" if splits["test"] else "val_frozen"
        if mode == "test":
            if not splits["test"]:
                raise StepError(f"{ctx.env.cfg.source_path}: key 'gate.decision_set' = 'test' but "
                                f"{ctx.env.cfg.dataset.data_yaml} has no test split; add one or use val_frozen "
                                f"(or auto).")
            images = sorted(dict.fromkeys(splits["test"]))
        else:
            val = sorted(dict.fromkeys(splits["val"]))
            if not val:
                raise StepError(f"{ctx.env.cfg.source_path}: gate.decision_set val_frozen needs validation images; "
                                f"{ctx.env.cfg.dataset.data_yaml} has none.")
            n = min(len(val), max(1, round(gc.val_frozen_fraction * len(val))))
            images = sorted(random.Random(ctx.env.cfg.training.seed).sample(val, n))
        hashes = _content(images)
    ds = artifacts.DecisionSet(set=mode, images=images, content_hash=_digest(hashes), hashes=hashes,
                               created_iteration=k)
    artifacts.save_decision_set(paths, ds)
    ctx.say(f"[GATE] Decision set frozen: {_label(ds)} ({paths.decision_set})")
    return ds


def _label(ds: artifacts.DecisionSet) -> str:
    return f"{ds.set} ({len(ds.images)} images)"


# ----------------------------------------------------------------------------------------- the evaluation

def evaluate(ctx: StepContext, ds: artifacts.DecisionSet, names: list[str],
             parts: Sequence[tuple[list[str], dict | None]],
             validator_order: Sequence[str]) -> artifacts.DecisionMetrics:
    """The model on the decision set from the results validate already has (`parts`: images and evaluate's
    result for them, records and stats aligned), no second pass; mAP pooled in the validator's order (the number
    Ultralytics' validator gives on these images). Writes decision_eval.npz for the gate."""
    found: dict[str, tuple[dict, dict]] = {}
    for images, res in parts:
        if res:
            for i, img in enumerate(images):
                found.setdefault(img, (res["records"][i], res["stats"][i]))
    rest = [img for img in ds.images if img not in found]
    if rest:
        raise StepError(f"{ctx.env.paths.decision_set}: decision image {rest[0]} ({len(rest)} in all) is in neither "
                        f"the val nor the test split of {ctx.env.paths.dataset_version(ctx.iteration)}; restore it, "
                        f"or start again with {ctx.env.command('--start-iteration', 0)}.")
    rank = {img: i for i, img in enumerate(validator_order)}
    order = sorted(range(len(ds.images)), key=lambda i: rank.get(ds.images[i], len(rank) + i))
    records = [found[img][0] for img in ds.images]
    arrays = stats.DecisionArrays.build(ds.images, records, [found[img][1] for img in ds.images], order)
    buf = io.BytesIO()
    np.savez(buf, **cast(dict[str, Any], arrays.as_dict()))  # the stub would match a key to allow_pickle
    store.write_bytes_atomic(ctx.env.paths.decision_eval(ctx.iteration), buf.getvalue())
    nc = len(names)
    ap_all, present = stats.class_ap(arrays, np.ones((1, len(ds.images))), nc)
    ap50, ap = ap_all[0, :, 0], ap_all[0].mean(1)
    inst = arrays.instances(nc)
    s = summarize(records, names)
    return artifacts.DecisionMetrics(
        set=ds.set, **s["overall"], per_class=s["per_class"], images=len(ds.images),
        map50=float(stats.map_values(ap_all, present, "map50")[0]),
        map50_95=float(stats.map_values(ap_all, present, "map50_95")[0]),
        per_class_ap={n: artifacts.ClassAP(ap50=float(ap50[i]), ap50_95=float(ap[i]), instances=int(inst[i]))
                      for i, n in enumerate(names) if inst[i] > 0})


def load_arrays(paths: RunPaths, k: int) -> stats.DecisionArrays:
    """Iteration k's decision_eval.npz, or a StepError naming it and how to re-make it."""
    path = paths.decision_eval(k)
    try:
        with np.load(path) as z:
            return stats.DecisionArrays.from_dict({key: z[key] for key in z.files})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise StepError(f"{path}: the champion's decision-set results cannot be read ({e}). The gate compares "
                        f"against them without predicting again: redo iteration {k}'s validate with "
                        f"--start-iteration {k} (or --repair), or set gate.fine_tune_from: latest.") from None


# ----------------------------------------------------------------------------------------------- the gate

def champion_of(paths: RunPaths, k: int) -> int:
    """The champion after iteration k's gate (promotion.json); k itself in a run made before the gate."""
    if k < 0:
        raise ValueError("no iteration before 0")
    if not paths.promotion(k).is_file():
        return k
    return artifacts.load_promotion(paths, k).champion_after


def run(ctx: StepContext, ds: artifacts.DecisionSet, decision: artifacts.DecisionMetrics,
        names: list[str]) -> artifacts.Promotion:
    """Iteration k's verdict: iteration 0 (or the first iteration with a decision set) is the champion; later,
    the challenger must beat the champion before it. Writes promotion.json, then champion.json (validate calls
    it before writing validation.json, its last artefact: a validate that finished has its verdict)."""
    k, paths, gc = ctx.iteration, ctx.env.paths, ctx.env.cfg.gate
    value = {"f1": decision.f1, "map50": decision.map50, "map50_95": decision.map50_95}[gc.metric]
    resamples = gc.resamples if gc.metric == "f1" else gc.map_resamples
    before = champion_of(paths, k - 1) if k > 0 else None
    if before is not None and not paths.decision_eval(before).is_file() and ds.created_iteration >= k:
        before = None  # the run was made before the gate: the champion has no figures on this set
    if before is None:
        p = artifacts.Promotion(
            iteration=k, challenger=k, champion_before=None, champion_after=k, promoted=True, metric=gc.metric,
            challenger_value=round(value, 6), champion_value=None, delta=None, ci_low=None, ci_high=None,
            confidence=gc.confidence, resamples=resamples, margin=gc.margin, decision_set=ds.set,
            decision_images=len(ds.images), reason="the first model measured on the decision set is the champion")
    else:
        champ = load_arrays(paths, before)
        chall = load_arrays(paths, k)
        if champ.images != chall.images:
            raise RedoError(f"{paths.decision_eval(before)}: measured on other images than {paths.decision_set} "
                            f"lists; redo iteration {before} with --start-iteration {before}.")
        r = stats.compare(champ, chall, names, metric=gc.metric, margin=gc.margin,
                          require_significant=gc.require_significant, confidence=gc.confidence,
                          resamples=resamples, seed=(ctx.env.cfg.training.seed, k),
                          max_class_drop=gc.max_class_drop, min_class_instances=gc.min_class_instances)
        p = artifacts.Promotion(
            iteration=k, challenger=k, champion_before=before, champion_after=k if r.promoted else before,
            promoted=r.promoted, metric=gc.metric, challenger_value=round(r.challenger_value, 6),
            champion_value=round(r.champion_value, 6), delta=round(r.delta, 6), ci_low=round(r.ci_low, 6),
            ci_high=round(r.ci_high, 6), confidence=gc.confidence, resamples=resamples, margin=gc.margin,
            per_class_delta=r.per_class_delta, alarms=r.alarms, decision_set=ds.set,
            decision_images=len(ds.images), reason=r.reason)
    artifacts.save_promotion(paths, k, p)
    publish_champion(paths, p)
    return p


def report(ctx: StepContext, p: artifacts.Promotion) -> None:
    """The verdict as an event (the [GATE] line, the TUI's champion panel)."""
    gc = ctx.env.cfg.gate
    ctx.ui.emit(GateVerdict(iteration=p.iteration, challenger=p.challenger, champion_before=p.champion_before,
                            champion_after=p.champion_after, promoted=p.promoted, metric=p.metric,
                            challenger_value=p.challenger_value, champion_value=p.champion_value, delta=p.delta,
                            ci_low=p.ci_low, ci_high=p.ci_high, confidence=p.confidence, alarms=list(p.alarms),
                            per_class_delta=dict(p.per_class_delta), max_class_drop=gc.max_class_drop,
                            decision_set=p.decision_set, decision_images=p.decision_images, reason=p.reason))


def publish_champion(paths: RunPaths, p: artifacts.Promotion) -> None:
    """champion.json from iteration p.iteration's verdict (the champion's value on the decision set)."""
    c = p.champion_after
    value = p.challenger_value if c == p.challenger else (p.champion_value or 0.0)
    artifacts.save_champion(paths, artifacts.Champion(iteration=c, weights=str(paths.best(c)), since_iteration=c,
                                                      metric=p.metric, value=value))


def message(ctx: StepContext, decision: artifacts.DecisionMetrics) -> None:
    """validate's line about the decision set."""
    ctx.ui.emit(Message(f"[VALIDATE] decision set {decision.set} ({decision.images} images): F1={decision.f1:.4f} "
                        f"mAP50={decision.map50:.4f} mAP50-95={decision.map50_95:.4f}"))
