"""Step 5: human review (a local annotation package or Roboflow), the simulated reveal, or --auto pseudo-labels;
then the guarded merge into the next dataset version and its manifest (al/review/)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import cast

import numpy as np

from al.core import artifacts, prompts, store
from al.core.context import StepContext
from al.core.errors import RedoError, StepError
from al.core.events import Message, ReviewRequired
from al.core.paths import RunPaths
from al.data import dataset, hashing, manifest
from al.review import Labelled, norm_boxes, pick_predictions


def review_info(ctx: StepContext, picks: list[dict]) -> dict:
    """What the human is asked to do (the console block and the TUI's review screen are built from this)."""
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    rp = paths
    combined = cfg.dataset.combined_dir
    backend = cfg.review.backend
    info = {
        "iteration": k, "hard_examples": len(picks), "fn_crops": str(paths.fn_crops(k)),
        "hard_examples_file": str(paths.hard_examples(k)), "prompt_suggestions": str(paths.prompt_suggestions(k)),
        "combined_dir": str(combined) if combined else None, "picks": picks, "backend": backend,
    }
    first = [f"Review false negative crops in {paths.fn_crops(k)}",
             f"Review the picked images listed in {paths.hard_examples(k)}"]
    last = [f"Review prompt suggestions in {paths.prompt_suggestions(k)}",
            f"Update prompts in {paths.prompts(k)} if needed"]
    if backend == "roboflow":
        r = cfg.review.roboflow
        batch = f"{r.batch_prefix}-iteration-{k}"
        where = f"{r.workspace or '<your workspace>'}/{r.project}"
        info["roboflow"] = {"workspace": r.workspace, "project": r.project, "batch": batch, "version": r.version}
        which = "the newest version" if r.version == "newest" else f"version {r.version}"
        middle = [f"The picks are uploaded to Roboflow project {where} as batch '{batch}' (tagged '{batch}')"
                  + (", with the model's predictions as pre-annotations" if r.pre_annotations else ""),
                  "Annotate the batch in Roboflow: correct the pre-annotations, mark images without objects as null",
                  f"Generate a new dataset version in Roboflow; {which} is downloaded in YOLO format when you "
                  f"continue"]
    elif backend == "label_studio":
        ls = cfg.review.label_studio
        info["label_studio"] = {"url": ls.url, "project": ls.project}
        middle = [f"The picks are tasks of a Label Studio project at {ls.url} (the project's address is shown "
                  f"above)" + (", with the model's boxes as predictions" if ls.pre_annotations else ""),
                  "Open each task, correct the boxes (accept or fix the predictions) and Submit; submit an image "
                  "without objects with no boxes (it is kept as a negative)",
                  "Continue (Enter, or --resume): the submitted annotations are exported and merged"]
    else:
        lc = cfg.review.local
        back = lc.import_from or rp.returned(k)
        info.update(package_dir=str(rp.package(k)), package_zip=str(rp.package_zip(k)) if lc.make_zip else None,
                    returned_dir=str(rp.returned(k)), import_from=str(back),
                    configured_import_from=str(lc.import_from) if lc.import_from else None)
        middle = [f"Open the annotation package {rp.package(k)}" + (f" (or {rp.package_zip(k)})" if lc.make_zip
                                                                   else "")
                  + ": images/, pre-annotations in labels/ (YOLO) and annotations_coco.json (COCO), "
                    "contact_sheet.jpg, GUIDELINES.md",
                  "Correct the pre-annotations in your annotation tool (they are the model's own detections)",
                  f"Put the corrected labels in {back} (YOLO .txt files, a COCO JSON, or a zip of either)"
                  + (f", or export the whole reviewed dataset in YOLO format to {combined} (with its data.yaml; "
                     f"class names in the same order)" if combined and not lc.import_from else "")]
    info["steps"] = first + middle + last
    if cfg.model.target and paths.prompts(k).is_file():
        info["prompts"] = prompt_info(paths.prompts(k))
    return info


def review_block(info: dict) -> str:
    """Seed 004's console block, with this run's real paths."""
    bar = "=" * 80
    lines = [bar, "MANUAL REVIEW REQUIRED", bar]
    if info.get("resumed"):  # first, where a screen shows it without scrolling
        lines.append("Resumed (--resume): what came back is imported next.")
    lines += [f"Iteration: {info['iteration']}", f"Hard examples: {info['hard_examples']}",
              f"FN crops saved to: {info['fn_crops']}"]
    if info.get("backend_status"):
        lines.append(f"Review backend: {info['backend_status']}")
    lines += ["", "NEXT STEPS:"]
    lines += [f"{i}. {s}" for i, s in enumerate(info["steps"], 1)]
    pr = info.get("prompts")
    if pr:
        lines += ["", f"PROMPTS (YOLOE target): {pr['file']} is what the next training embeds; edit its 'texts', "
                      f"or accept a suggestion's proposed edit (TUI: key a)"]
        lines += [f"  {name}: {text!r}" for name, text in pr["texts"].items()]
        if pr.get("error"):
            lines.append(f"  {pr['error']}")
        for i, sg in enumerate(pr["suggestions"], 1):
            edit = "; ".join(f"{c} -> {t!r}" for c, t in sg["prompt_edit"].items()) or "no prompt edit"
            mark = " [accepted]" if sg.get("accepted") else ""
            lines.append(f"  suggestion {i} [{sg.get('priority', '')}]{mark}: {sg.get('finding', '')}. "
                         f"Proposed: {edit}")
    return "\n".join(lines) + "\n" + bar


def prompt_info(path: Path) -> dict:
    """The prompt version the next training reads, for the review screen and block: its texts by class (a class
    without one is prompted by its name) and the suggestions with their proposed edits."""
    try:
        raw = prompts.read_file(path)
    except prompts.PromptError as e:  # hand-edited into a broken file: shown, and retrain refuses it with the fix
        return {"file": str(path), "error": str(e), "texts": {}, "suggestions": []}
    return {"file": str(path), "texts": dict(raw.get("texts") or {}),
            "suggestions": [{"finding": sg.get("finding", ""), "suggestion": sg.get("suggestion", ""),
                             "priority": sg.get("priority", ""), "prompt_edit": dict(sg.get("prompt_edit") or {}),
                             "accepted": bool(sg.get("accepted"))} for sg in raw.get("suggestions") or []]}


def _thresholds(ctx: StepContext, names: list[str]) -> np.ndarray:
    al = ctx.env.cfg.active_learning
    unknown = sorted(set(al.pseudo_label_conf_per_class) - set(names))
    if unknown:
        raise StepError(f"{ctx.env.cfg.source_path}: key 'active_learning.pseudo_label_conf_per_class' names unknown "
                        f"classes {unknown}; known: {names}")
    return np.array([al.pseudo_label_conf_per_class.get(n, al.pseudo_label_conf) for n in names])


def _labels_for_picks(ctx: StepContext, picks: list[dict], names: list[str], mode: str) -> list[Labelled]:
    """Each pick with hidden ground truth (simulated) or per-class thresholded predictions (pseudo)."""
    out = []
    recs = pick_predictions(ctx)
    thr = _thresholds(ctx, names) if mode == "pseudo" else None
    for pk in picks:
        img = pk["image"]
        rec = recs.get(img)
        if rec is None:
            raise RedoError(f"{img}: picked but absent from this iteration's predictions; re-run extract "
                            f"(--start-iteration {ctx.iteration}).")
        w, h = rec["width"], rec["height"]
        if thr is not None:  # mode == "pseudo"
            pred = np.asarray(rec["pred"], dtype=float).reshape(-1, 6)
            keep = pred[:, 1] >= thr[pred[:, 0].astype(int)] if len(pred) else np.zeros(0, bool)
            boxes = np.column_stack([pred[keep, 0], pred[keep, 2:6]]) if keep.any() else np.zeros((0, 5))
        elif ctx.env.cfg.dataset.mining_source == "val":
            boxes = dataset.read_labels(dataset.label_path(img), len(names), w, h)
        else:
            labels_dir = ctx.env.cfg.dataset.pool_labels_dir
            if labels_dir is None:  # the config check refuses this; a config loaded without the check may not
                raise StepError(f"{ctx.env.cfg.source_path}: key 'dataset.pool_labels_dir' is not set; the simulated "
                                f"review of pool picks reads their hidden labels from it. Set it, then --resume.")
            boxes = dataset.read_labels(labels_dir / (Path(img).stem + ".txt"), len(names), w, h)
        out.append(Labelled(src=img, boxes=norm_boxes(boxes, w, h), source=mode, label_origin=mode, pick=img))
    return out


# ------------------------------------------------------------------------------------------------------- the step

def _backend(name: str):
    """The review backend module: prepare(ctx, picks, names) -> info, collect(ctx, picks, names) -> labelled."""
    if name == "roboflow":
        from al.review import roboflow

        return roboflow
    if name == "label_studio":
        from al.review import label_studio

        return label_studio
    from al.review import local

    return local


def _guard_test(ctx: StepContext, picks: list[dict], test: list[str]) -> list[dict]:
    """The test split is frozen: a pick from it (a bug upstream or a hand-edited file) is never reviewed."""
    frozen = set(test)
    bad = [p["image"] for p in picks if p["image"] in frozen]
    if bad:
        ctx.ui.emit(Message(f"[REVIEW] WARNING: {len(bad)} picks are test images and were dropped (the test split "
                             f"is frozen), e.g. {bad[0]}", "warning"))
    return [p for p in picks if p["image"] not in frozen]


def within_box_budget(boxes: list[int], budget: int) -> int:
    """How many picks, in rank order, an annotator with a budget of `budget` boxes labels: one after another while
    the boxes drawn so far are below the budget. A pick's boxes are known only once it is labelled, so the pick that
    reaches or crosses the budget is labelled too (no look at an unbought pick's hidden labels), and at least one."""
    total = 0
    for i, b in enumerate(boxes):
        total += b
        if total >= budget:
            return i + 1
    return len(boxes)


def _was_asked(rp: RunPaths, k: int, backend: str) -> bool:
    """The step already handed iteration k's picks to this backend and paused (its request record exists)."""
    f = rp.review_request(k)
    return f.is_file() and store.read_json(f).get("backend") == backend


def run(ctx: StepContext) -> str:
    """Review the picks (pause for a human, or label them), merge them, write the next dataset version."""
    with hashing.persisted(ctx.env.paths.hash_cache):  # the manifest, the package and Roboflow share one cache
        return _review(ctx)


def _review(ctx: StepContext) -> str:
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    rp = paths
    hard = artifacts.load_hard_examples(paths, k)
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    names = list(ver["names"])
    # a Pick is a TypedDict, i.e. a plain dict at run time, which is what the review backends take
    picks = _guard_test(ctx, cast(list[dict], hard.picks), splits["test"])
    al = cfg.active_learning
    mode = _mode(ctx)
    info = review_info(ctx, picks)
    info["mode"] = mode
    summary: dict = {}

    if mode == "manual":
        backend = _backend(cfg.review.backend)
        prepare, collect = backend.prepare, backend.collect
        asked = ctx.state.review_pending and _was_asked(rp, k, cfg.review.backend)
        if al.require_human_review and not asked:
            info.update(prepare(ctx, picks, names))
            store.write_json(rp.review_request(k), {"iteration": k, "backend": cfg.review.backend, "picks": len(picks),
                                             **{key: v for key, v in info.items() if key != "picks"}})
            ctx.ui.emit(ReviewRequired(info))
            ctx.ui.emit(Message(review_block(info)))
            if not ctx.ui.wait_for_review(info):
                return "pause"
        elif al.require_human_review:
            # --resume after the pause: the review screen (headless: the review block) again, before any import;
            # `resumed` tells a frontend that the resume itself was the human's "continue" (the TUI still waits)
            asked_info = store.read_json(rp.review_request(k))
            info.update({key: v for key, v in asked_info.items() if key not in ("schema", "iteration", "picks")})
            info["resumed"] = True
            ctx.ui.emit(ReviewRequired(info))
            ctx.ui.emit(Message(review_block(info)))
            if not ctx.ui.wait_for_review(info):
                return "pause"
        cands, summary = collect(ctx, picks, names)
    elif mode == "simulated":
        cands = _labels_for_picks(ctx, picks, names, mode)
        box_budget = al.box_budget(ctx.iteration)
        if box_budget is not None:
            n = within_box_budget([len(c.boxes) for c in cands], box_budget)
            ctx.ui.emit(Message(f"[REVIEW] box budget {box_budget} "
                                 f"(active_learning.max_boxes_per_iteration): the first {n} of {len(picks)} picks "
                                 f"in rank order, {sum(len(c.boxes) for c in cands[:n])} boxes; the rest stay in "
                                 f"the pool"))
            picks, cands = picks[:n], cands[:n]
            summary["box_budget"] = box_budget
        ctx.ui.emit(Message(f"[REVIEW] SIMULATED review: revealing the hidden ground truth of {len(picks)} picks"))
    else:
        ctx.ui.emit(Message(f"[REVIEW] --auto: labelling {len(picks)} picks with model predictions (pseudo-labels)"))
        cands = _labels_for_picks(ctx, picks, names, mode)
        summary["pseudo_thresholds"] = dict(zip(names, _thresholds(ctx, names).tolist()))

    near = cfg.review.near_duplicate_distance
    fresh = not rp.manifest(k).is_file()
    man = manifest.for_version(rp.manifest(k), k, splits, str(cfg.dataset.data_yaml), with_phash=near is not None)
    extra = {}
    if k == 0 and near is not None:  # the configured dataset itself; warned about once
        # recomputed (a pure function of the manifest) whenever the step re-runs: the save below rewrites the
        # manifest, and a resumed or restarted review must not drop the list the first one recorded
        extra["near_duplicates"] = manifest.near_duplicates(man, splits["train"], near)
        if fresh and extra["near_duplicates"]:
            ex = extra["near_duplicates"][0]
            ctx.ui.emit(Message(f"[DATASET] WARNING: {len(extra['near_duplicates'])} training images are "
                                 f"near-duplicates of validation/test images (perceptual hash), e.g. "
                                 f"{Path(ex['image']).name} ~ {ex['split']} {Path(ex['other']).name}; listed in "
                                 f"{rp.manifest(k)}", "warning"))
    manifest.save(man, rp.manifest(k), ver["id"], ver.get("parent"), **extra)
    res = _merge(ctx, man, splits, cands, names)
    _report_merge(ctx, res)
    _keep_val(ctx, res)
    origin = "human" if mode == "manual" else mode
    new_ver = dataset.write_snapshot(paths.dataset_version(k + 1), names, res.splits,
                                     {"version": k + 1, "names": names, "parent": ver["id"], "origin": origin,
                                      "added": len(res.added), "removed_from_val": len(res.moved_from_val),
                                      "manifest": str(rp.manifest(k + 1))})
    manifest.save(res.manifest, rp.manifest(k + 1), new_ver["id"], ver["id"])
    store.write_json(rp.manifest_diff(k + 1), {**res.diff(k), "from_version": ver["id"], "to_version": new_ver["id"]})
    returned = summary.pop("returned_labelled", len(cands))
    out = {"iteration": k, "mode": mode, "backend": cfg.review.backend if mode == "manual" else None,
           "simulation": mode == "simulated", "picks": len(picks), "returned_labelled": returned,
           **merge_counts(res), "val_changed": bool(res.moved_from_val),
           "pseudo_label_check": res.pseudo_check, "dataset_version": new_ver["id"],
           "dataset_counts": new_ver["counts"], "manifest": str(rp.manifest(k + 1)),
           "manifest_diff": str(rp.manifest_diff(k + 1)), **summary}
    artifacts.save_review(paths, k, artifacts.ReviewResult(**out))
    label = {"pseudo": "pseudo-labelled", "simulated": "SIMULATED labels", "human": "human-reviewed"}[origin]
    ctx.ui.emit(Message(f"[REVIEW] {len(res.added)} images added ({res.added_boxes} boxes, {label}); "
                         f"{len(res.moved_from_val)} moved out of validation; {len(res.dropped_duplicates)} exact "
                         f"duplicates dropped; dataset version {new_ver['id']}"))
    return "next"


def _mode(ctx: StepContext) -> str:
    """Who labels the picks: pseudo (--auto), simulated (the hidden ground truth) or manual (a human)."""
    if ctx.env.opts.auto:
        return "pseudo"
    return "simulated" if ctx.env.cfg.active_learning.review_source == "simulated" else "manual"


def _merge(ctx: StepContext, man: manifest.Manifest, splits: dict[str, list[str]], cands: list[Labelled],
           names: list[str], *, dry: bool = False) -> manifest.MergeResult:
    """The guarded merge of iteration k's labelled picks into its dataset version (dry: nothing written)."""
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    res = manifest.merge(man, splits, cands, iteration=k, img_dir=paths.added_images(k),
                         lbl_dir=paths.added_labels(k), nc=len(names), iou=cfg.validation.iou,
                         near_distance=cfg.review.near_duplicate_distance, dry=dry,
                         on_bad_data=cfg.dataset.on_bad_data, relabel_distance=cfg.review.relabel_match_distance)
    if res.pseudo_check:
        res.pseudo_check = _named(res.pseudo_check, names)
    return res


def _keep_val(ctx: StepContext, res: manifest.MergeResult) -> None:
    """The extract step refuses picks that are the whole validation split; this catches a merge that empties it."""
    if not res.splits["val"]:
        k, cmd = ctx.iteration, ctx.env.command
        raise StepError(f"Review of iteration {k} would leave the validation split empty; lower "
                        f"active_learning.max_samples_per_iteration and pick again with: {cmd('--start-iteration', k)}"
                        f", or add validation images to {ctx.env.cfg.dataset.data_yaml} and start over with: "
                        f"{cmd('--start-iteration', 0)}.")


def merge_counts(res: manifest.MergeResult) -> dict:
    """What a merge adds, moves and drops, under review.json's keys (the import and its preview report these)."""
    return {"added_images": len(res.added), "added_boxes": res.added_boxes,
            "removed_from_val": len(res.moved_from_val), "skipped_test_duplicates": len(res.refused_test),
            "duplicates_dropped": len(res.dropped_duplicates), "relabelled": len(res.relabelled),
            "near_duplicates": len(res.near_duplicates), "bad_data_skipped": len(res.bad_data),
            "kept_in_val": len(res.kept_in_val)}


def preview(ctx: StepContext) -> dict:
    """What continuing the review would import, found by the import itself run dry: the backend's collect and
    the guarded merge decide as run() would, but nothing is written (no package, copies, label files, manifest,
    unpacked zip) and nothing is emitted. Counts under review.json's keys, plus `source` (where the labels come
    from), `dataset_version` and `train_images` (the current version). Raises what the import would raise; a
    Roboflow review returns {"unknown": True} (its labels exist only after the download)."""
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    hard = artifacts.load_hard_examples(paths, k)
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    names = list(ver["names"])
    frozen = set(splits["test"])
    picks = [p for p in cast(list[dict], hard.picks) if p["image"] not in frozen]  # as _guard_test, without its warning
    mode = _mode(ctx)
    if mode == "manual" and cfg.review.backend == "roboflow":
        return {"unknown": True, "picks": len(picks), "source": "Roboflow"}
    near = cfg.review.near_duplicate_distance
    # a returned zip is unpacked here, outside the run tree (the merge may read images from it), then removed
    with tempfile.TemporaryDirectory(prefix="al-import-preview-") as scratch:
        if mode == "manual":
            cands, summary = _backend(cfg.review.backend).collect(ctx, picks, names, dry=True,
                                                                  unpack_dir=Path(scratch) / "unpacked")
        else:
            cands = _labels_for_picks(ctx, picks, names, mode)
            summary = {"source": "SIMULATED labels" if mode == "simulated" else "pseudo-labels"}
        man = manifest.for_version(paths.manifest(k), k, splits, str(cfg.dataset.data_yaml),
                                   with_phash=near is not None)
        res = _merge(ctx, man, splits, cands, names, dry=True)
    _keep_val(ctx, res)
    return {"mode": mode, "picks": len(picks), "returned_labelled": len(cands), **summary, **merge_counts(res),
            "dataset_version": ver["id"], "train_images": len(splits["train"])}


def _named(check: dict, names: list[str]) -> dict:
    """Per-class pseudo-label scores keyed by class name instead of id."""
    return {**check, "per_class": {names[int(c)]: v for c, v in check["per_class"].items()}}


def _report_merge(ctx: StepContext, res: manifest.MergeResult) -> None:
    say = ctx.ui.emit
    if res.bad_data:
        say(Message(f"[REVIEW] WARNING: {len(res.bad_data)} problems in reviewed images that training would drop; "
                    f"dataset.on_bad_data: skip left those images out (listed in the manifest diff), e.g. "
                    f"{res.bad_data[0]}", "warning"))
    if res.refused_test:
        say(Message(f"[REVIEW] WARNING: {len(res.refused_test)} images identical to test images were not added to "
                    f"training (the test split is frozen)", "warning"))
    if res.kept_in_val:
        ex = res.kept_in_val[0]
        say(Message(f"[REVIEW] NOTE: {len(res.kept_in_val)} returned images nobody picked are validation images; "
                    f"they stay in validation and were not added to training (only picks leave validation), e.g. "
                    f"{Path(ex['image']).name} = {ex['val_image']}. Listed in the manifest diff.", "warning"))
    if res.near_duplicates:
        ex = res.near_duplicates[0]
        say(Message(f"[REVIEW] WARNING: {len(res.near_duplicates)} near-duplicate pairs across splits (perceptual "
                    f"hash), e.g. {Path(ex['image']).name} ~ {ex['split']} image {Path(ex['other']).name} (distance "
                    f"{ex['distance']}); metrics on those images are optimistic. Listed in the manifest diff.",
                    "warning"))
    if res.pseudo_check:
        pc = res.pseudo_check
        say(Message(f"[REVIEW] Pseudo-labels checked against human labels on {pc['images']} images: precision "
                    f"{pc['precision']:.3f}, recall {pc['recall']:.3f} (TP={pc['tp']} FP={pc['fp']} FN={pc['fn']}, "
                    f"IoU {pc['iou']:g})"))
