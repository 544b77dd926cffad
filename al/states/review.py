"""Step 5: human review (pause / wait), simulated reveal, or --auto pseudo-labels; then the next dataset version."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from al import dataset, store
from al.context import Context, StepError
from al.events import Message, ReviewRequired


def _copy_with_labels(img: str, boxes: np.ndarray, w: int, h: int, img_dir: Path, lbl_dir: Path) -> str:
    """Copy an image into the run's 'added' folder with its YOLO labels beside (Ultralytics' images/labels)."""
    dst = img_dir / Path(img).name
    if not dst.exists() or dst.stat().st_size != Path(img).stat().st_size:
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(img, tmp)
        tmp.replace(dst)
    dataset.write_labels(lbl_dir / (dst.stem + ".txt"), boxes, w, h)
    return str(dst.resolve())


def review_info(ctx: Context, picks: list[dict]) -> dict:
    k, paths, cfg = ctx.k, ctx.paths, ctx.cfg
    combined = cfg.dataset.combined_dir
    return {
        "iteration": k, "hard_examples": len(picks), "fn_crops": str(paths.fn_crops(k)),
        "hard_examples_file": str(paths.hard_examples(k)), "prompt_suggestions": str(paths.prompt_suggestions(k)),
        "combined_dir": str(combined) if combined else None, "picks": picks,
        "steps": [
            f"Review false negative crops in {paths.fn_crops(k)}",
            f"Review the picked images listed in {paths.hard_examples(k)}",
            "Upload them to your annotation tool (Roboflow or a local tool) and annotate them",
            f"Export the augmented dataset in YOLO format to {combined or '<dataset.combined_dir>'} "
            f"(with its data.yaml; class names in the same order)",
            f"Review prompt suggestions in {paths.prompt_suggestions(k)}",
            f"Update prompts in {paths.prompts(k)} if needed",
        ],
    }


def review_block(info: dict) -> str:
    """Seed 004's console block, with this run's real paths."""
    bar = "=" * 80
    lines = [bar, "MANUAL REVIEW REQUIRED", bar, f"Iteration: {info['iteration']}",
             f"Hard examples: {info['hard_examples']}", f"FN crops saved to: {info['fn_crops']}", "", "NEXT STEPS:"]
    lines += [f"{i}. {s}" for i, s in enumerate(info["steps"], 1)]
    return "\n".join(lines) + "\n" + bar


def _pick_predictions(ctx: Context) -> dict[str, dict]:
    src = ctx.paths.validation(ctx.k) if ctx.cfg.dataset.mining_source == "val" else ctx.paths.pool_predictions(ctx.k)
    data = store.read_json(src, required=("images",))
    return {r["image"]: r for r in data["images"]}


def _thresholds(ctx: Context, names: list[str]) -> np.ndarray:
    al = ctx.cfg.active_learning
    unknown = sorted(set(al.pseudo_label_conf_per_class) - set(names))
    if unknown:
        raise StepError(f"{ctx.cfg.source_path}: key 'active_learning.pseudo_label_conf_per_class' names unknown "
                        f"classes {unknown}; known: {names}")
    return np.array([al.pseudo_label_conf_per_class.get(n, al.pseudo_label_conf) for n in names])


def _labels_for_picks(ctx: Context, picks: list[dict], names: list[str], mode: str) -> list[dict]:
    """Boxes for each pick: hidden ground truth (simulated) or thresholded predictions (pseudo)."""
    out = []
    recs = _pick_predictions(ctx)
    thr = _thresholds(ctx, names) if mode == "pseudo" else None
    for pk in picks:
        img = pk["image"]
        rec = recs.get(img)
        if rec is None:
            raise StepError(f"{img}: picked but absent from this iteration's predictions; re-run extract "
                            f"(--start-iteration {ctx.k}).")
        w, h = rec["width"], rec["height"]
        if mode == "pseudo":
            pred = np.asarray(rec["pred"], dtype=float).reshape(-1, 6)
            keep = pred[:, 1] >= thr[pred[:, 0].astype(int)] if len(pred) else np.zeros(0, bool)
            boxes = np.column_stack([pred[keep, 0], pred[keep, 2:6]]) if keep.any() else np.zeros((0, 5))
        elif ctx.cfg.dataset.mining_source == "val":
            boxes = dataset.read_labels(dataset.label_path(img), len(names), w, h)
        else:
            boxes = dataset.read_labels(ctx.cfg.dataset.pool_labels_dir / (Path(img).stem + ".txt"), len(names), w, h)
        out.append({"image": img, "boxes": boxes, "width": w, "height": h})
    return out


def _import_combined(ctx: Context, names: list[str]) -> list[str]:
    """Images of the human-exported YOLO dataset (all its splits but test), after checking its class names."""
    cdir = ctx.cfg.dataset.combined_dir
    if cdir is None:
        raise StepError(f"{ctx.cfg.source_path}: key 'dataset.combined_dir' is not set; set it to the folder you "
                        f"export the reviewed dataset to, or use --auto / review_source: simulated.")
    yml = cdir / "data.yaml"
    if not yml.is_file():
        raise StepError(f"Dataset not found: {yml}. Export the reviewed dataset in YOLO format to {cdir} "
                        f"(images/, labels/, data.yaml), then run again with --resume.")
    spec = dataset.read_data_yaml(yml)
    if spec.names != names:
        raise StepError(f"{yml}: class names {spec.names} differ from the model's {names}. Export with the same "
                        f"classes in the same order, then run again with --resume.")
    return list(dict.fromkeys(spec.splits["train"] + spec.splits["val"]))


def run(ctx: Context) -> str:
    k, paths, cfg = ctx.k, ctx.paths, ctx.cfg
    hard = store.read_json(paths.hard_examples(k), required=("picks",))
    picks = hard["picks"]
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    names = list(ver["names"])
    al = cfg.active_learning
    if ctx.opts.auto:
        mode = "pseudo"
    elif al.review_source == "simulated":
        mode = "simulated"
    else:
        mode = "manual"
    info = review_info(ctx, picks)
    info["mode"] = mode

    if mode == "manual" and al.require_human_review and ctx.state.status != "awaiting_review":
        ctx.bus.emit(ReviewRequired(info))
        ctx.bus.emit(Message(review_block(info)))
        if not (ctx.opts.interactive and ctx.wait_for_review and ctx.wait_for_review(info)):
            return "pause"
    elif mode == "simulated":
        ctx.bus.emit(Message(f"[REVIEW] SIMULATED review: revealing the hidden ground truth of {len(picks)} picks"))
    elif mode == "pseudo":
        ctx.bus.emit(Message(f"[REVIEW] --auto: labelling {len(picks)} picks with model predictions (pseudo-labels)"))

    test_hashes = {dataset.file_hash(p) for p in splits["test"]}
    img_dir, lbl_dir = paths.added_images(k), paths.added_labels(k)
    added: list[str] = []
    added_boxes = 0
    skipped_test = 0
    if mode == "manual":
        cand = _import_combined(ctx, names)
        returned = len({Path(p["image"]).name for p in picks} & {Path(c).name for c in cand})
        origin = "human"
    else:
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        cand = []
        for lab in _labels_for_picks(ctx, picks, names, mode):
            cand.append(_copy_with_labels(lab["image"], lab["boxes"], lab["width"], lab["height"], img_dir, lbl_dir))
            added_boxes += len(lab["boxes"])
        returned = len(cand)
        origin = mode

    train_hashes = {dataset.file_hash(p) for p in splits["train"]}
    for c in cand:
        h = dataset.file_hash(c)
        if h in test_hashes:
            skipped_test += 1  # the frozen test split must never reach training
            continue
        if h not in train_hashes:
            train_hashes.add(h)
            added.append(c)
    if skipped_test:
        ctx.bus.emit(Message(f"[REVIEW] WARNING: {skipped_test} images identical to test images were not added "
                             f"to training (the test split is frozen)", "warning"))
    if mode == "manual":
        added_boxes = sum(dataset.class_counts(added, len(names)))
    # images now in training leave the validation split (moved, not copied)
    new_val = [v for v in splits["val"] if dataset.file_hash(v) not in train_hashes]
    removed = len(splits["val"]) - len(new_val)
    new_splits = {"train": splits["train"] + added, "val": new_val, "test": splits["test"]}
    if not new_val:
        raise StepError(f"Review of iteration {k} would leave the validation split empty; lower "
                        f"active_learning.max_samples_per_iteration or add validation images.")
    new_ver = dataset.write_snapshot(paths.dataset_version(k + 1), names, new_splits,
                                     {"version": k + 1, "names": names, "parent": ver["id"], "origin": origin,
                                      "added": len(added), "removed_from_val": removed})
    summary = {"iteration": k, "mode": mode, "simulation": mode == "simulated", "picks": len(picks),
               "returned_labelled": returned, "added_images": len(added), "added_boxes": added_boxes,
               "removed_from_val": removed, "skipped_test_duplicates": skipped_test,
               "dataset_version": new_ver["id"], "dataset_counts": new_ver["counts"]}
    store.write_json(paths.review(k), summary)
    label = {"pseudo": "pseudo-labelled", "simulated": "SIMULATED labels", "human": "human-reviewed"}[origin]
    ctx.bus.emit(Message(f"[REVIEW] {len(added)} images added ({added_boxes} boxes, {label}); {removed} moved out "
                         f"of validation; dataset version {new_ver['id']}"))
    return "next"
