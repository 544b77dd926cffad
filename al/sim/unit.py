"""One unit of a simulation through the product's loop: an arm (its rounds of picks, simulated reviews and
trainings), or a single training point (a seed's upper bound, a compute-check retrain) as a loop of no rounds.
And the rows each unit gives (labels, the annotator's work, test mAP, the training's epochs)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from al.core import artifacts, store
from al.data import dataset
from al.metrics import efficiency
from al.sim.spec import ArmFailed, SimSpec, SimulationError, arm_strategy


def training_config(spec: SimSpec, protocol: str, seed: int, mult: int = 1) -> dict:
    """The loop's training section of a protocol; `mult` scales a converged point's cap and patience (the compute
    check's doubled budget)."""
    val = spec.epoch_val or protocol == "converged"
    training: dict = {"base_lr": spec.lr, "lr_decay_factor": 1.0, "optimizer": "AdamW",
                      "epochs_base": spec.epochs_base, "epochs_increment": spec.epochs_round, "patience": 0,
                      "imgsz": spec.imgsz, "batch": spec.batch, "device": spec.device, "workers": spec.workers,
                      "seed": seed, "schedule": protocol,
                      "extra": {"nbs": spec.batch, "fliplr": 0.0, "mosaic": 1.0, "close_mosaic": 2,
                                "warmup_epochs": 1, "plots": False, "val": val}}
    if protocol == "matched" and spec.matched_steps is not None:
        training["matched_steps"] = spec.matched_steps
    if protocol == "converged":
        training.update(epochs_base=spec.max_epochs * mult, epochs_increment=spec.max_epochs * mult,
                        patience=spec.patience * mult)
        training["extra"]["close_mosaic"] = 0  # a cap that early stopping rarely reaches: no schedule tied to it
    return training


def unit_config(spec: SimSpec, data: Path, run_dir: Path, arm: str, protocol: str, seed: int, *,
                initial_weights: Path | None = None) -> dict:
    """The loop config of one arm: arms differ only in sampling_strategy (and an ablation arm's own keys)."""
    boxes = spec.budget_unit == "boxes"
    budgets = spec.round_budgets()
    al_cfg: dict = {"max_samples_per_iteration": max(budgets), "review_source": "simulated",
                    "require_human_review": False, "target_f1": 1.0, "plateau_window": 100, "overfit_gap": 1.0,
                    "max_iterations": len(budgets) + 1, "train_f1_sample": 0}
    if len(set(budgets)) > 1:
        al_cfg["budget_schedule"] = budgets
    if boxes:  # enough picks to fill the box budget; the simulated review reveals them until it is spent
        al_cfg["max_boxes_per_iteration"] = max(budgets)
    name, keys = arm_strategy(arm)
    cfg: dict = {
        "run_dir": str(run_dir),
        "dataset": {"data_yaml": str(data / "data.yaml"), "pool_dir": str(data / "pool" / "images"),
                    "pool_labels_dir": str(data / "pool" / "labels_hidden"), "mining_source": "pool"},
        "model": {"baseline": spec.model, "type": f"simulation seed {seed}"},
        "active_learning": al_cfg,
        "sampling_strategy": {"strategy": name, **keys},
        "training": training_config(spec, protocol, seed),
        "validation": {"conf": spec.conf, "batch": 32},
        "gate": {"fine_tune_from": "latest"},  # chained means the loop's own chain, not the gate's champion
        "analysis": {"max_crops": 0},
    }
    if initial_weights is not None:
        cfg["model"]["initial_weights"] = str(initial_weights)
    return cfg


def point_config(spec: SimSpec, data_yaml: Path, run_dir: Path, protocol: str, seed: int, mult: int = 1) -> dict:
    """The loop config of one training point: iteration 0 only (train on data_yaml's train split, validate, stop)."""
    return {
        "run_dir": str(run_dir),
        "dataset": {"data_yaml": str(data_yaml)},
        "model": {"baseline": spec.model, "type": f"simulation seed {seed}"},
        "active_learning": {"max_iterations": 1, "require_human_review": False, "review_source": "simulated",
                            "train_f1_sample": 0, "target_f1": 1.0},
        "training": training_config(spec, protocol, seed, mult),
        "validation": {"conf": spec.conf, "batch": 32},
        "analysis": {"max_crops": 0},
    }


def run_loop_unit(cfg_dict: dict, unit_dir: Path, tag: str, say: Callable[[str], None]) -> None:
    """Run one unit's loop config through the product's loop (fresh, or --resume when the folder holds an
    unfinished run); every line goes to the unit's al_loop.log, the headlines to `say`."""
    from filelock import FileLock

    from al.app.api import open_run, run_loop
    from al.core.config import ConfigError, load_config
    from al.core.context import Listeners
    from al.core.events import EpochEnd, Message
    from al.core.paths import RunPaths
    from al.core.state import RunState

    cfg_path = unit_dir / "al_config.yaml"
    unit_dir.mkdir(parents=True, exist_ok=True)
    store.write_text_atomic(cfg_path, yaml.safe_dump(cfg_dict, sort_keys=False))
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        raise SimulationError(str(e)) from None
    keep = ("[SAMPLING]", "[EXTRACT]", "[REVIEW] box budget", "[VALIDATE] test", "[TRAIN] Training complete",
            "[TRAIN] fine-tune", "[TRAIN] baseline", "[ERROR]", "[RESUME]")
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock), timeout=0), paths.events_log.open("a", encoding="utf-8") as logfile:
        def relay(ev) -> None:  # every line to the unit's log, the headlines and every 10th epoch to the terminal
            if isinstance(ev, Message):
                logfile.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {ev.text}\n")
                logfile.flush()
                if ev.text.startswith(keep):
                    say(f"  [{tag}] {ev.text}")
            elif isinstance(ev, EpochEnd) and (ev.epoch % 10 == 0 or ev.epoch == ev.epochs):
                say(f"  [{tag}] epoch {ev.epoch}/{ev.epochs}")

        bus = Listeners(relay)
        resume = paths.state.is_file()
        if resume and RunState.load(paths).step == "done":  # finished before the simulation could record it
            return
        ctx = open_run(cfg, resume=resume, start_iteration=None, dry_run=False, auto=False, ui=bus)
        code = run_loop(ctx)
    if code != 0 or ctx.state.step != "done":
        raise ArmFailed(f"{tag} stopped ({ctx.state.error or ctx.state.step}); see {paths.events_log}. "
                        f"Fix the cause and run the same command again: it continues from there.")


def _hidden_boxes(data: Path, image: str, nc: int, w: int, h: int) -> np.ndarray:
    return dataset.read_labels(data / "pool" / "labels_hidden" / (Path(image).stem + ".txt"), nc, w, h)


def training_epochs(progress: Path) -> dict:
    """What a training did, from its progress file: epochs run, the epoch whose fitness was best (the model a
    converged point keeps) and whether it stopped before its cap."""
    ends = []
    if progress.is_file():
        for line in progress.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "epoch_end":
                ends.append(ev)
    if not ends:
        return {"epochs_run": None, "best_epoch": None, "stopped_early": None}
    best = max(ends, key=lambda e: (float(e.get("fitness") or 0.0), -int(e["epoch"])))
    last = ends[-1]
    return {"epochs_run": int(last["epoch"]), "best_epoch": int(best["epoch"]),
            "stopped_early": int(last["epoch"]) < int(last["epochs"])}


def point_row(run_dir: Path, k: int = 0) -> dict:
    """Test mAP and training facts of one point (iteration k of a loop run); a missing test measurement stays
    None (never 0)."""
    from al.core.paths import RunPaths

    paths = RunPaths(run_dir)
    summ = artifacts.load_validation(paths, k)
    _, splits = dataset.read_snapshot(paths.dataset_version(k))
    nc = len(summ.names)
    row: dict = {"labelled_images": len(splits["train"]),
                 "labelled_boxes": int(sum(dataset.class_counts(splits["train"], nc))),
                 "test_map50_95": summ.test.map50_95 if summ.test else None,
                 "test_map50": summ.test.map50 if summ.test else None, "val_map50_95": summ.map50_95,
                 "train_seconds": 0.0, "train_epochs": None, "train_batches": None}
    if paths.train_result(k).is_file():
        tr = store.read_json(paths.train_result(k))
        row["train_seconds"] = float(tr.get("seconds") or 0.0)
        row["adopted"] = bool(tr.get("adopted"))
        row["epoch_cap"] = int(tr["spec"]["epochs"])
        row["patience"] = int(tr["spec"].get("patience") or 0)
        facts = training_epochs(paths.train_progress(k))
        row.update(facts)
        row["train_epochs"] = facts["epochs_run"] if facts["epochs_run"] is not None else row["epoch_cap"]
        row["train_batches"] = row["train_epochs"] * -(-len(splits["train"]) // int(tr["spec"]["batch"]))
    ap = summ.test.per_class_ap if summ.test else {}
    for name in summ.names:
        row[f"ap50_{name}"] = ap[name].ap50 if name in ap else None
        row[f"ap50_95_{name}"] = ap[name].ap50_95 if name in ap else None
    return row


def unit_rows(spec: SimSpec, data: Path, unit_dir: Path, arm: str, protocol: str, seed: int,
              baseline_row: dict | None = None) -> list[dict]:
    """One row per round of a finished arm: labels, the annotator's work on the picks it bought (only the picks
    the review kept), test mAP and per-class AP (validation.json), the training's epochs. An arm that adopted the
    seed's shared baseline takes iteration 0's training facts from the arm that trained it (`baseline_row`)."""
    from al.core.paths import RunPaths

    paths = RunPaths(unit_dir / "run")
    rows = []
    for k in range(spec.n_rounds + 1):
        row: dict = {"seed": seed, "protocol": protocol, "arm": arm, "round": k, **point_row(paths.root, k),
                     "added_images": 0, "added_boxes": 0, "boxes_to_add": 0, "boxes_to_delete": 0,
                     "boxes_to_fix": 0, "annotator_edits": 0}
        if k == 0 and row.get("adopted") and baseline_row:
            for key in ("train_seconds", "train_epochs", "train_batches", "epochs_run", "best_epoch",
                        "stopped_early", "epoch_cap", "patience"):
                if key in baseline_row:
                    row[key] = baseline_row[key]
        names = list(artifacts.load_validation(paths, k).names)
        nc = len(names)
        if k >= 1:
            rev = artifacts.load_review(paths, k - 1)
            row["added_images"], row["added_boxes"] = rev.added_images, rev.added_boxes
            hard = artifacts.load_hard_examples(paths, k - 1)
            _, before = dataset.read_snapshot(paths.dataset_version(k - 1))
            _, after = dataset.read_snapshot(paths.dataset_version(k))
            # the picks the review kept and the merge added (a pick the merge dropped cost the annotator nothing)
            kept = {Path(p).stem for p in set(after["train"]) - set(before["train"])}
            picks = [pk for pk in hard.picks[:rev.picks] if Path(pk["image"]).stem in kept] if kept else []
            slots = hard.hard_negative_slots or {}
            row["hard_negative_slots"] = slots.get("reserved", 0)
            row["hard_negative_given_back"] = slots.get("given_back", 0)  # went to the other picks
            recs = {r["image"]: r for r in store.read_json(paths.pool_predictions(k - 1))["images"]}
            cost = {key: np.zeros(nc, dtype=np.int64) for key in ("add", "delete", "fix")}
            for pk in picks:
                rec = recs[pk["image"]]
                pred = np.asarray(rec["pred"], dtype=np.float64).reshape(-1, 6)
                pred = pred[pred[:, 1] >= spec.conf]  # the pre-annotations a reviewer is shown
                c = efficiency.annotation_cost(_hidden_boxes(data, pk["image"], nc, rec["width"], rec["height"]),
                                               pred, nc)
                for key in cost:
                    cost[key] += c[key]
            row["boxes_to_add"], row["boxes_to_delete"], row["boxes_to_fix"] = (int(cost[x].sum()) for x in
                                                                                 ("add", "delete", "fix"))
            row["annotator_edits"] = row["boxes_to_add"] + row["boxes_to_delete"] + row["boxes_to_fix"]
            for key in ("add", "delete", "fix"):
                for c_i, name in enumerate(names):
                    row[f"{key}_{name}"] = int(cost[key][c_i])
        rows.append(row)
    return rows
