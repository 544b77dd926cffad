"""`al-loop simulate`: how many labels a selection strategy saves, measured on any fully labelled data.yaml.

Per seed: a seed set and a pool are drawn from the train split (seeded, or given as lists); the pool's labels are
hidden (the simulated annotator reveals the picks' labels); one baseline is trained on the seed set and shared by
every arm and protocol of that seed. Per protocol (matched: every point fine-tuned from the baseline with the same
number of training batches; chained: each round fine-tunes the previous round's model, as the loop does) and arm
(random, entropy, combined ...), the product's own loop runs `rounds` rounds with the same budget (images, or boxes).
The work folder holds one loop run per seed/protocol/arm and simulation_state.json: a killed simulation continues
where it stopped (finished arms are not redone, an unfinished one resumes with the loop's --resume).
Results: simulation.csv (one row per seed, protocol, arm and round), simulation_summary.json, simulation.md and
simulation.png (docs/SIMULATE.md)."""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from al.core import artifacts, store
from al.core.errors import UserError
from al.data import dataset
from al.metrics import efficiency

ARMS = ("random", "entropy", "combined")
PROTOCOLS = ("matched", "chained")
MODELS = ("yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml")
STATE_SCHEMA = 1
DEFAULT_POOL = 300


class SimulationError(UserError):
    """A simulation that cannot run as asked; the message names the option or file and the fix."""


class ArmFailed(SimulationError):
    """An arm's loop stopped (a failed step); the simulation continues from there when run again."""


@dataclass
class SimSpec:
    """What a simulation runs. Everything but `out`, `device` and the EXTENDABLE lists is part of its identity: a
    work folder made with other settings is refused (use another --out). Arms, seeds and protocols may be added to
    (or left out of) a work folder: its finished arms and shared baselines are kept, and the results cover the arms,
    seeds and protocols asked for this time (an ablation runs only its new arms)."""

    data: Path
    out: Path
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    rounds: int = 3
    budget: int = 32
    budget_unit: str = "images"
    seed_set: int = 32
    pool: int | None = None
    """Pool images drawn per seed; None: DEFAULT_POOL, or all the rest of train when fewer; 0: all the rest."""
    seed_list: Path | None = None
    pool_list: Path | None = None
    model: str = "yolov8n.yaml"
    imgsz: int = 96
    batch: int = 16
    epochs_base: int = 100
    epochs_round: int = 10
    matched_steps: int | None = 480
    """matched: training batches per point; None: --epochs-round epochs of the seed set."""
    lr: float = 0.002
    conf: float = 0.15
    epoch_val: bool = False
    """Validate after every epoch and keep the best epoch's weights (Ultralytics' best.pt). Off: each point is the
    model after exactly its training budget (its last epoch), which is what a fixed compute means and saves the
    per-epoch validation (about a third of a small training's time on a CPU)."""
    device: str = "cpu"
    workers: int = 0
    jobs: int = 1
    """Seeds run side by side in this many processes (an Ultralytics training on a CPU uses cores - 1 threads, one
    on a 2-core machine, so two seeds at once take about half the time). The seed sets, pools and random draws do
    not depend on it; training on a CPU is not bit-reproducible between runs anyway (retrain noise)."""

    def identity(self) -> dict:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
             if k not in ("out", "device", "workers", "jobs", *EXTENDABLE)}
        d["data"] = str(Path(self.data).resolve())
        return d

    def settings(self) -> dict:
        """The identity with this call's arms, seeds and protocols: what the results are of."""
        return {**self.identity(), **{k: list(getattr(self, k)) for k in EXTENDABLE}}

    def unit_keys(self) -> list[str]:
        return [f"{s}/{p}/{a}" for s in self.seeds for p in self.protocols for a in self.arms]


EXTENDABLE = ("arms", "seeds", "protocols")


def auto_jobs(device: str, cores: int | None = None) -> int:
    """Seeds to run side by side: on a CPU, as many trainings as fit the cores when each takes Ultralytics'
    cores - 1 threads (2 on a 2-core machine, 1 from 3 cores up); on a GPU one."""
    if str(device).strip().lower() != "cpu":
        return 1
    n = max(1, cores if cores is not None else (os.cpu_count() or 1))
    return max(1, n // max(1, n - 1))


def parse_list(text: str, what: str, cast: Callable = str) -> list:
    """'a,b,c' -> [a, b, c]; an empty or bad entry is refused naming the option."""
    items = [s.strip() for s in str(text).split(",")]
    if not items or any(not s for s in items):
        raise SimulationError(f"--{what} {text!r}: give a comma-separated list, e.g. --{what} "
                              f"{'0,1,2' if cast is int else 'random,entropy'}")
    try:
        out = [cast(s) for s in items]
    except ValueError:
        raise SimulationError(f"--{what} {text!r}: every entry must be a whole number, e.g. --{what} 0,1,2") from None
    if len(set(out)) != len(out):
        raise SimulationError(f"--{what} {text!r} lists an entry twice")
    return out


def check_spec(spec: SimSpec) -> None:
    """Refuse options that cannot work, before anything is drawn or trained."""
    bad = [a for a in spec.arms if arm_strategy(a)[0] not in ("random", "entropy", "combined")]
    if bad:
        raise SimulationError(f"--arms: {bad} unknown; choose from random, entropy, combined (the pool strategies of "
                              f"sampling_strategy.strategy), optionally with sampling_strategy keys of their own: "
                              f"combined@combined_class_balance_weight=0+hard_negative_share=0")
    for a in spec.arms:
        arm_strategy(a)  # a malformed variant is refused here, an unknown key by the arm's config check
    bad = [p for p in spec.protocols if p not in PROTOCOLS]
    if bad:
        raise SimulationError(f"--protocol: {bad} unknown; choose from matched, chained")
    if spec.budget_unit not in ("images", "boxes"):
        raise SimulationError(f"--budget-unit {spec.budget_unit!r}: use images or boxes")
    for name, v, low in (("rounds", spec.rounds, 1), ("budget", spec.budget, 1), ("seed-set", spec.seed_set, 1),
                         ("epochs-base", spec.epochs_base, 1), ("epochs-round", spec.epochs_round, 1),
                         ("batch", spec.batch, 1)):
        if v < low:
            raise SimulationError(f"--{name} {v}: must be {low} or more")
    if spec.jobs < 1:
        raise SimulationError(f"--jobs {spec.jobs}: must be 1 or more (0 on the command line: auto)")
    if spec.pool is not None and spec.pool < 0:
        raise SimulationError(f"--pool {spec.pool}: must be 0 (all the rest of train) or more")
    if spec.matched_steps is not None and spec.matched_steps < 1:
        raise SimulationError(f"--matched-steps {spec.matched_steps}: must be 1 or more (0: --epochs-round epochs "
                              f"of the seed set)")
    if spec.imgsz % 32 or spec.imgsz < 32:
        raise SimulationError(f"--imgsz {spec.imgsz}: must be a multiple of 32, e.g. {max(32, spec.imgsz // 32 * 32)}")
    if not (spec.model in MODELS or (spec.model.endswith(".pt") and Path(spec.model).is_file())):
        raise SimulationError(f"--model {spec.model!r}: use one of {', '.join(MODELS)} (built untrained from "
                              f"Ultralytics' YAML, nothing is downloaded) or a local .pt file")
    if not spec.seeds:
        raise SimulationError("--seeds: give at least one seed")


def arm_strategy(arm: str) -> tuple[str, dict]:
    """'combined@key=value+key=value' -> ('combined', {key: value}): an arm is a strategy, optionally with
    sampling_strategy keys of its own (the ablation arms); values are YAML scalars."""
    name, _, mods = arm.partition("@")
    out: dict = {}
    for item in filter(None, mods.split("+")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SimulationError(f"--arms {arm!r}: {item!r} is not key=value; write e.g. "
                                  f"combined@combined_diversity_weight=0.5+hard_negative_share=0")
        out[key.strip()] = yaml.safe_load(value)
    return name.strip(), out


def arm_folder(arm: str) -> str:
    """The arm's folder name (a variant's '@', '=' and '+' become '_')."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in arm)


# ------------------------------------------------------------------------------------------------- the data

def _read_list(path: Path, option: str) -> list[str]:
    if not path.is_file():
        raise SimulationError(f"--{option} {path}: file not found; give a text file with one image path a line")
    return dataset.list_images(str(path.resolve()), path.parent, path, option)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def prepare_seed_data(spec: SimSpec, seed: int, folder: Path) -> dict:
    """The seed's dataset: data.yaml whose train split is the seed set (a list of the original images), the
    original val and test splits, and pool/images + pool/labels_hidden (links to the pool images under unique
    names, their labels beside, hidden from training). Idempotent: a finished folder (seed_data.json) is reused."""
    info_file = folder / "seed_data.json"
    if info_file.is_file():
        return store.read_json(info_file)
    src = dataset.read_data_yaml(spec.data)
    names, splits = src.names, src.splits
    if not splits["test"]:
        raise SimulationError(f"{spec.data}: no test split. The simulation reports test mAP on a split no arm ever "
                              f"trains on; add 'test:' (a folder or .txt list of labelled images) to the data.yaml.")
    train = sorted(dict.fromkeys(splits["train"]))
    frozen = set(splits["val"]) | set(splits["test"])
    train = [p for p in train if p not in frozen]
    rng = random.Random(seed)
    if spec.seed_list is not None:
        seed_set = _read_list(spec.seed_list, "seed-list")
        outside = [p for p in seed_set if p not in set(train)]
        if outside:
            raise SimulationError(f"--seed-list {spec.seed_list}: {len(outside)} images are not in the train split of "
                                  f"{spec.data} (e.g. {outside[0]}); list train images only")
    else:
        if spec.seed_set >= len(train):
            raise SimulationError(f"--seed-set {spec.seed_set}: the train split of {spec.data} has {len(train)} "
                                  f"images, which must hold the seed set and the pool; lower --seed-set")
        seed_set = sorted(rng.sample(train, spec.seed_set))
    rest = [p for p in train if p not in set(seed_set)]
    if spec.pool_list is not None:
        pool_imgs = _read_list(spec.pool_list, "pool-list")
        clash = [p for p in pool_imgs if p in set(seed_set) or p not in set(train)]
        if clash:
            raise SimulationError(f"--pool-list {spec.pool_list}: {len(clash)} images are in the seed set or not in "
                                  f"the train split (e.g. {clash[0]}); list train images outside the seed set")
    else:
        n = min(DEFAULT_POOL, len(rest)) if spec.pool is None else (spec.pool or len(rest))
        if n > len(rest):
            raise SimulationError(f"--pool {spec.pool}: only {len(rest)} train images are left after the seed set of "
                                  f"{len(seed_set)}; lower --pool (or --pool 0: all the rest of the train split)")
        pool_imgs = sorted(rng.sample(rest, n))
    nc = len(names)
    seed_counts = dataset.class_counts(seed_set, nc)
    absent = [names[c] for c in range(nc) if seed_counts[c] == 0]
    if absent:
        raise SimulationError(f"classes {absent} have no box in seed {seed}'s seed set of {len(seed_set)} images "
                              f"from {spec.data}: the baseline could never learn them. Raise --seed-set, or give a "
                              f"--seed-list that holds every class")
    pool_boxes = dataset.class_counts(pool_imgs, nc)
    need = spec.budget * spec.rounds
    have = len(pool_imgs) if spec.budget_unit == "images" else sum(pool_boxes)
    if have < need:
        raise SimulationError(f"the pool of seed {seed} holds {have} {spec.budget_unit}, fewer than --rounds "
                              f"{spec.rounds} x --budget {spec.budget} = {need} {spec.budget_unit}; raise --pool or "
                              f"lower --budget/--rounds")
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "pool" / "images").mkdir(parents=True)
    (tmp / "pool" / "labels_hidden").mkdir(parents=True)
    for i, img in enumerate(pool_imgs):
        p = Path(img)
        stem = f"{i:06d}_{p.stem}"  # unique even when two pool images share a file name in other folders
        _link_or_copy(p, tmp / "pool" / "images" / f"{stem}{p.suffix}")
        lab = dataset.label_path(p)
        (tmp / "pool" / "labels_hidden" / f"{stem}.txt").write_text(lab.read_text() if lab.is_file() else "")
    (tmp / "seed_set.txt").write_text("\n".join(seed_set) + "\n")
    for k in ("val", "test"):
        (tmp / f"{k}.txt").write_text("\n".join(splits[k]) + "\n")
    data = {"path": str(folder), "train": "seed_set.txt", "val": "val.txt", "test": "test.txt",
            "names": dict(enumerate(names))}
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    info = {"seed": seed, "names": names, "seed_set": len(seed_set), "pool": len(pool_imgs),
            "seed_boxes": int(sum(seed_counts)), "pool_boxes": int(sum(pool_boxes)), "val": len(splits["val"]),
            "test": len(splits["test"]), "source": str(Path(spec.data).resolve())}
    store.write_json(tmp / "seed_data.json", info)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return info


# ------------------------------------------------------------------------------------------------- one arm

def unit_config(spec: SimSpec, data: Path, run_dir: Path, arm: str, protocol: str, seed: int) -> dict:
    """The loop config of one arm: the arms and protocols differ only in sampling_strategy.strategy and
    training.schedule."""
    boxes = spec.budget_unit == "boxes"
    al_cfg: dict = {"max_samples_per_iteration": spec.budget, "review_source": "simulated",
                    "require_human_review": False, "target_f1": 1.0, "plateau_window": 100, "overfit_gap": 1.0,
                    "max_iterations": spec.rounds + 1, "train_f1_sample": 0}
    if boxes:  # enough picks to fill the box budget; the simulated review reveals them until it is spent
        al_cfg["max_samples_per_iteration"] = spec.budget
        al_cfg["max_boxes_per_iteration"] = spec.budget
    training = {"base_lr": spec.lr, "lr_decay_factor": 1.0, "optimizer": "AdamW", "epochs_base": spec.epochs_base,
                "epochs_increment": spec.epochs_round, "patience": 0, "imgsz": spec.imgsz, "batch": spec.batch,
                "device": spec.device, "workers": spec.workers, "seed": seed, "schedule": protocol,
                "extra": {"nbs": spec.batch, "fliplr": 0.0, "mosaic": 1.0, "close_mosaic": 2, "warmup_epochs": 1,
                          "plots": False, "val": spec.epoch_val}}
    if protocol == "matched" and spec.matched_steps is not None:
        training["matched_steps"] = spec.matched_steps
    return {
        "run_dir": str(run_dir),
        "dataset": {"data_yaml": str(data / "data.yaml"), "pool_dir": str(data / "pool" / "images"),
                    "pool_labels_dir": str(data / "pool" / "labels_hidden"), "mining_source": "pool"},
        "model": {"baseline": spec.model, "type": f"simulation seed {seed}"},
        "active_learning": al_cfg,
        "sampling_strategy": {"strategy": arm_strategy(arm)[0], **arm_strategy(arm)[1]},
        "training": training,
        "validation": {"conf": spec.conf, "batch": 32},
        "gate": {"fine_tune_from": "latest"},  # chained means the loop's own chain, not the gate's champion
        "analysis": {"max_crops": 0},
    }


def _place_baseline(ctx, baseline: Path) -> None:
    """Put the seed's shared baseline where the loop's retrain step writes iteration 0's model, recorded as a
    finished training (the path retrain takes after a crash between training and saving the state)."""
    from al.steps import retrain

    paths = ctx.env.paths
    spec = retrain.train_spec(ctx, 0)
    if paths.train_result(0).is_file():
        done = store.read_json(paths.train_result(0))
        if done.get("shared_baseline") == str(baseline) and done.get("spec") == spec and paths.best(0).is_file():
            return
    paths.weights(0).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(baseline, paths.best(0))
    store.write_json(paths.train_result(0), {"spec": spec, "dry_run": False, "seconds": 0.0,
                                             "best": str(paths.best(0)), "shared_baseline": str(baseline)})


def run_unit(spec: SimSpec, data: Path, unit_dir: Path, arm: str, protocol: str, seed: int,
             baseline: Path | None, say: Callable[[str], None]) -> None:
    """One arm of one seed and protocol through the product's loop (fresh, or --resume when the folder holds an
    unfinished run)."""
    from filelock import FileLock

    from al.app.api import open_run, run_loop
    from al.core.config import ConfigError, load_config
    from al.core.context import Listeners
    from al.core.events import EpochEnd, Message
    from al.core.paths import RunPaths
    from al.core.state import RunState

    run_dir = unit_dir / "run"
    cfg_path = unit_dir / "al_config.yaml"
    unit_dir.mkdir(parents=True, exist_ok=True)
    store.write_text_atomic(cfg_path, yaml.safe_dump(unit_config(spec, data, run_dir, arm, protocol, seed),
                                                     sort_keys=False))
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        raise SimulationError(str(e)) from None
    tag = f"seed {seed} {protocol}/{arm}"
    keep = ("[SAMPLING]", "[EXTRACT]", "[REVIEW] box budget", "[VALIDATE] test", "[TRAIN] Training complete",
            "[TRAIN] fine-tune", "[TRAIN] baseline", "[ERROR]", "[RESUME]")
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock), timeout=0), paths.events_log.open("a", encoding="utf-8") as logfile:
        def relay(ev) -> None:  # every line to the arm's log, the headlines and every 10th epoch to the terminal
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
        if baseline is not None and ctx.state.iteration == 0:
            _place_baseline(ctx, baseline)
        code = run_loop(ctx)
    if code != 0 or ctx.state.step != "done":
        raise ArmFailed(f"{tag} stopped ({ctx.state.error or ctx.state.step}); see {paths.events_log}. "
                        f"Fix the cause and run the same command again: it continues from there.")


def _hidden_boxes(data: Path, image: str, nc: int, w: int, h: int) -> np.ndarray:
    return dataset.read_labels(data / "pool" / "labels_hidden" / (Path(image).stem + ".txt"), nc, w, h)


def unit_rows(spec: SimSpec, data: Path, unit_dir: Path, arm: str, protocol: str, seed: int) -> list[dict]:
    """One row per round of a finished arm: labels, the annotator's work on the picks it bought, test mAP and
    per-class AP (validation.json), training time."""
    from al.core.paths import RunPaths

    paths = RunPaths(unit_dir / "run")
    rows = []
    for k in range(spec.rounds + 1):
        summ = artifacts.load_validation(paths, k)
        names = list(summ.names)
        nc = len(names)
        ver, splits = dataset.read_snapshot(paths.dataset_version(k))
        boxes = dataset.class_counts(splits["train"], nc)
        row: dict = {"seed": seed, "protocol": protocol, "arm": arm, "round": k,
                     "labelled_images": len(splits["train"]), "labelled_boxes": int(sum(boxes)),
                     "added_images": 0, "added_boxes": 0, "boxes_to_add": 0, "boxes_to_delete": 0,
                     "boxes_to_fix": 0, "annotator_edits": 0,
                     "test_map50_95": summ.test.map50_95 if summ.test else None,
                     "test_map50": summ.test.map50 if summ.test else None, "val_map50_95": summ.map50_95,
                     "train_seconds": 0.0, "train_epochs": None, "train_batches": None}
        if k >= 1:
            rev = artifacts.load_review(paths, k - 1)
            row["added_images"], row["added_boxes"] = rev.added_images, rev.added_boxes
            hard = artifacts.load_hard_examples(paths, k - 1)
            picks = hard.picks[:rev.picks]
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
        if paths.train_result(k).is_file():
            tr = store.read_json(paths.train_result(k))
            row["train_seconds"] = float(tr.get("seconds") or 0.0)
            row["train_epochs"] = int(tr["spec"]["epochs"])
            if k >= 1:  # the compute the point had: epochs x batches of its training set (iteration 0: the baseline)
                row["train_batches"] = row["train_epochs"] * -(-len(splits["train"]) // spec.batch)
        ap = summ.test.per_class_ap if summ.test else {}
        for name in names:
            row[f"ap50_{name}"] = ap[name].ap50 if name in ap else None
            row[f"ap50_95_{name}"] = ap[name].ap50_95 if name in ap else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------- statistics

def _curve(rows: list[dict], seed: int, protocol: str, arm: str, x: str) -> tuple[list[float], list[float]]:
    """One seed's learning curve in round order: (labels, test mAP50-95)."""
    pts = sorted((int(r["round"]), float(r[x]), float(r["test_map50_95"] or 0.0)) for r in rows
                 if r["seed"] == seed and r["protocol"] == protocol and r["arm"] == arm)
    return [p[1] for p in pts], [p[2] for p in pts]


NOT_REACHED = -1.0
"""A seed on which an arm never reaches the reference's final mAP counts as this saving (-100 %: worse than any
reached one) in the medians and intervals, so that a failure is not silently left out."""


def summarize(rows: list[dict], spec: SimSpec, *, resamples: int = 2000) -> dict:
    """Per protocol and arm: per-seed AUC, final mAP, labels (images, boxes) and annotator edits to reach random's
    final mAP and the savings; medians with bootstrap 95 % intervals; paired AUC differences against random and
    entropy."""
    out: dict = {}
    for proto in spec.protocols:
        res: dict = {}
        flat = set(flat_reference(rows, spec, proto))
        for arm in spec.arms:
            per_seed = {}
            for s in spec.seeds:
                lab, mp = _curve(rows, s, proto, arm, "labelled_images")
                if not lab:
                    continue
                unit_curve = _curve(rows, s, proto, arm, f"labelled_{spec.budget_unit}")
                d: dict = {"auc": efficiency.curve_auc(*unit_curve), "final_map50_95": mp[-1], "final_images": lab[-1]}
                mine = [r for r in rows if r["seed"] == s and r["protocol"] == proto and r["arm"] == arm]
                d["final_boxes"] = max(r["labelled_boxes"] for r in mine)
                d["annotator_edits"] = sum(r["annotator_edits"] for r in mine)
                d["added_boxes"] = sum(r["added_boxes"] for r in mine)
                ref_lab, ref_mp = _curve(rows, s, proto, "random", "labelled_images")
                if ref_mp:
                    target = ref_mp[-1]
                    d["random_final_map50_95"] = target
                    # random ended no better than its baseline: the seed set alone "reaches" the target, so a
                    # saving there is 1 - seed set / final labels whatever the arm did; it is left undefined
                    d["saving_undefined"] = s in flat
                    for unit in ("images", "boxes"):
                        xl, ym = _curve(rows, s, proto, arm, f"labelled_{unit}")
                        rl, _ = _curve(rows, s, proto, "random", f"labelled_{unit}")
                        need = efficiency.labels_to_reach(xl, ym, target)
                        d[f"{unit}_to_reach_random"] = need
                        sv = efficiency.saving(need, rl[-1])
                        d[f"{unit}_saving"] = None if d["saving_undefined"] else NOT_REACHED if sv is None else sv
                per_seed[s] = d
            stats = {}
            for key in ("images_saving", "boxes_saving"):
                vals = [d[key] for d in per_seed.values() if d.get(key) is not None]
                stats[key] = {**efficiency.bootstrap_interval(vals, resamples=resamples),
                              "reached": sum(v != NOT_REACHED for v in vals),
                              "undefined": sum(bool(d.get("saving_undefined")) for d in per_seed.values())}
            for key in ("auc", "final_map50_95", "annotator_edits", "added_boxes"):
                vals = [d[key] for d in per_seed.values()]
                stats[key] = {"median": statistics.median(vals) if vals else None,
                              "min": min(vals) if vals else None, "max": max(vals) if vals else None}
            res[arm] = {"per_seed": per_seed, "stats": stats, "paired_auc": {}}
        # random's saving against itself is 0 unless its curve reached its final mAP before the last round (a
        # flat, noisy end): that much of every arm's saving on the seed is the target's noise, not the selection.
        # The net saving is the paired per-seed difference to random's own.
        for arm in spec.arms if "random" in res else ():
            ref = res["random"]["per_seed"]
            for key in ("images_saving", "boxes_saving"):
                net = {s: d[key] - ref[s][key] for s, d in res[arm]["per_seed"].items()
                       if d.get(key) is not None and s in ref and ref[s].get(key) is not None}
                for s, v in net.items():
                    res[arm]["per_seed"][s][f"{key}_net"] = v
                res[arm]["stats"][f"{key}_net"] = efficiency.bootstrap_interval(list(net.values()),
                                                                                 resamples=resamples)
        for arm in spec.arms:  # paired per seed: the same seed set and baseline
            for other in ("random", "entropy"):
                if other == arm or other not in res:
                    continue
                diffs = efficiency.paired_differences({s: d["auc"] for s, d in res[arm]["per_seed"].items()},
                                                      {s: d["auc"] for s, d in res[other]["per_seed"].items()})
                res[arm]["paired_auc"][other] = {
                    "auc_difference": efficiency.bootstrap_interval(list(diffs.values()), stat=np.mean,
                                                                    resamples=resamples),
                    "per_seed": diffs, "wins": sum(v > 0 for v in diffs.values())}
        out[proto] = res
    return out


def early_reference(summary: dict, protocol: str) -> dict[int, float]:
    """Seeds on which random reached its own final test mAP before its last round, with that (self-)saving: its
    curve ends flat or falls back, so its final mAP is a noisy target and every arm's saving there includes it."""
    ref = summary.get(protocol, {}).get("random", {}).get("per_seed", {})
    return {s: d["images_saving"] for s, d in ref.items() if (d.get("images_saving") or 0.0) > 1e-9}


def flat_reference(rows: list[dict], spec: SimSpec, protocol: str) -> list[int]:
    """Seeds on which random's final test mAP50-95 is not above its baseline's (the seed set's point): there every
    arm 'reaches' random's final mAP with the seed set alone, so each saving is just 1 - seed set / final labels
    and says nothing about the selection (train longer, or at a larger size)."""
    flat = []
    for s in spec.seeds:
        _, mp = _curve(rows, s, protocol, "random", "labelled_images")
        if mp and mp[-1] <= mp[0]:
            flat.append(s)
    return flat


GOAL = {"images_saving": 0.40, "boxes_saving": 0.25, "seeds": 5}
"""Issue 13's bar for the default strategy at matched compute: median savings of random's labels, each with its
95 % interval above 0, a paired AUC win over entropy (interval above 0), over at least 5 seeds."""


def machine() -> str:
    """One line: the CPU, its cores and the Python, for the results."""
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"


def goal_check(summary: dict, arm: str = "combined", protocol: str = "matched",
               flat: dict | None = None) -> dict | None:
    """Whether `arm` meets GOAL in `protocol`; None when that arm or protocol was not run. `flat`: the seeds per
    protocol whose random arm ended no better than its baseline (flat_reference); any such seed fails the goal, as
    its savings are not a measurement. Where random reaches its own final mAP before its last round (a curve that
    ends flat or falls back: early_reference), the savings must also clear the bars net of random's own."""
    res = summary.get(protocol, {}).get(arm)
    if res is None:
        return None
    st = res["stats"]
    vs = res["paired_auc"].get("entropy")

    def above(b: dict, bar: float) -> bool:
        return b["value"] is not None and b["value"] >= bar and b["low"] > 0

    checks = {f"images saved >= {GOAL['images_saving']:.0%} (median), 95% CI above 0":
              above(st["images_saving"], GOAL["images_saving"]),
              f"boxes saved >= {GOAL['boxes_saving']:.0%} (median), 95% CI above 0":
              above(st["boxes_saving"], GOAL["boxes_saving"]),
              "AUC above entropy's (paired, 95% CI above 0)":
              bool(vs) and vs["auc_difference"]["low"] is not None and vs["auc_difference"]["low"] > 0,
              f">= {GOAL['seeds']} seeds": st["images_saving"]["n"] >= GOAL["seeds"],
              "random ends above its baseline on every seed (else the savings are not a measurement)":
              not (flat or {}).get(protocol),
              f"net of random's own saving (paired per seed, where random reaches its own final mAP early): images "
              f">= {GOAL['images_saving']:.0%} and boxes >= {GOAL['boxes_saving']:.0%} (median), 95% CI above 0":
              "images_saving_net" not in st  # a summary from before the net savings
              or (above(st["images_saving_net"], GOAL["images_saving"])
                  and above(st["boxes_saving_net"], GOAL["boxes_saving"]))}
    return {"arm": arm, "protocol": protocol, "checks": checks, "met": all(checks.values())}


def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.0f}%"


def _num(v) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.0f}")


def markdown(summary: dict, spec: SimSpec, wall: float, timings: dict, flat: dict | None = None) -> str:
    lines = ["# Label-efficiency simulation\n", f"Data: `{spec.data}`  ",
             f"Settings: `{json.dumps(spec.settings())}`  ",
             f"Wall time: {wall / 60:.1f} min (this invocation); the arms took {sum(timings.values()) / 60:.1f} "
             f"min in all  ", f"Machine: {machine()}  ",
             f"Per arm (seed/protocol/arm: seconds): `{json.dumps(timings)}`\n",
             "Savings are of the labels random needed for its final test mAP50-95 (interpolated); median over seeds "
             "with a bootstrap 95 % interval; a seed that never reaches it counts as -100 %. AUC differences are "
             "paired per seed (same seed set, same baseline), mean with a bootstrap 95 % interval.\n"]
    for proto, res in summary.items():
        lines += [f"\n## {proto} protocol\n"]
        if flat and flat.get(proto):
            lines += [f"**WARNING**: on seeds {flat[proto]} random's final test mAP50-95 is not above its baseline's, "
                      f"so the seed set alone 'reaches' it: their savings are undefined and left out of the "
                      f"medians. Train longer (--epochs-base, --epochs-round / --matched-steps) or at a larger "
                      f"--imgsz.\n"]
        lines += ["| arm | final test mAP50-95, median [min, max] | AUC median | image saving [95% CI] (reached) | "
                  "box saving [95% CI] | annotator edits (add+delete+fix), median | AUC - random [95% CI] (wins) | "
                  "AUC - entropy [95% CI] (wins) |", "|---|---|---|---|---|---|---|---|"]
        for arm, d in res.items():
            st = d["stats"]
            fm = st["final_map50_95"]
            cells = []
            for key in ("images_saving", "boxes_saving"):
                b = st[key]
                cells.append(f"{_pct(b['value'])} [{_pct(b['low'])}, {_pct(b['high'])}]"
                             + (f" ({b['reached']}/{b['n']})" if key == "images_saving" else "")
                             + (f", {b['undefined']} undefined" if b.get("undefined") and key == "images_saving"
                                else ""))
            pa = []
            for other in ("random", "entropy"):
                p = d["paired_auc"].get(other)
                if p is None:
                    pa.append("-")
                else:
                    b = p["auc_difference"]
                    pa.append(f"{_num(b['value'])} [{_num(b['low'])}, {_num(b['high'])}] ({p['wins']}/{b['n']})")
            lines.append(f"| {arm} | {_num(fm['median'])} [{_num(fm['min'])}, {_num(fm['max'])}] | "
                         f"{_num(st['auc']['median'])} | {cells[0]} | {cells[1]} | "
                         f"{_num(st['annotator_edits']['median'])} | {pa[0]} | {pa[1]} |")
        early = early_reference(summary, proto)
        if early:
            lines += [f"\n**WARNING**: on seeds {sorted(early)} random reached its own final test mAP50-95 before its "
                      f"last round (its curve ends flat or falls back; its own 'saving' there: "
                      f"{', '.join(_pct(v) for v in early.values())}), so part of every arm's saving on those seeds is "
                      f"the target's noise. Savings net of random's own (paired per seed, median [95% CI]):\n",
                      "| arm | net image saving | net box saving |", "|---|---|---|"]
            for arm, d in res.items():
                if arm == "random":
                    continue
                cells = [f"{_pct(b['value'])} [{_pct(b['low'])}, {_pct(b['high'])}]" for b in
                         (d["stats"].get("images_saving_net", {}), d["stats"].get("boxes_saving_net", {}))
                         if b] or ["n/a", "n/a"]
                lines.append(f"| {arm} | {cells[0]} | {cells[-1]} |")
    for goal in goal_checks(summary, flat).values():
        lines += [f"\n## Goal (issue 13): {goal['arm']}, {goal['protocol']} protocol: "
                  f"{'MET' if goal['met'] else 'NOT MET'}\n"]
        lines += [f"- {'yes' if ok else 'no'}: {what}" for what, ok in goal["checks"].items()]
    return "\n".join(lines) + "\n"


def goal_checks(summary: dict, flat: dict | None = None, protocol: str = "matched") -> dict[str, dict]:
    """goal_check of `combined` and of every ablation arm of it (`combined@...`), by arm, in the summary's order."""
    arms = [a for a in summary.get(protocol, {}) if a == "combined" or a.startswith("combined@")]
    out = {a: goal_check(summary, arm=a, protocol=protocol, flat=flat) for a in arms}
    return {a: g for a, g in out.items() if g is not None}


# ------------------------------------------------------------------------------------------------- the driver

def _load_state(spec: SimSpec) -> dict:
    path = spec.out / "simulation_state.json"
    if not path.is_file():
        return {"spec": spec.identity(), "units": {}}
    try:
        state = store.read_json(path, schema=STATE_SCHEMA)
    except store.StoreError as e:
        raise SimulationError(f"{e} Delete {path} to redo every arm, or use another --out.") from None
    old = {k: v for k, v in (state.get("spec") or {}).items() if k not in EXTENDABLE}  # older folders hold them
    old.setdefault("epoch_val", True)  # folders made before the option validated every epoch
    if old != spec.identity():
        new = spec.identity()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SimulationError(f"{spec.out} holds a simulation with other settings ({', '.join(diff)} differ). "
                              f"Run the same command as before to continue it, or use another --out.")
    return state


def simulate(spec: SimSpec, *, say: Callable[[str], None] = print, stop_after_units: int | None = None) -> dict:
    """Run (or continue) the simulation; returns the summary. stop_after_units stops after that many arms finished
    in this call (what a kill would do, for tests)."""
    from filelock import FileLock, Timeout

    from al.report.simulation import plot_curves
    from al.yolo.detector import prepare_offline

    check_spec(spec)
    out = spec.out.resolve()
    spec.out = out
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".simulate.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SimulationError(f"Another simulation is running in {out} (lock {out / '.simulate.lock'}); wait for it "
                              f"or use another --out.") from None
    try:
        state = _load_state(spec)
        prepare_offline(out / ".yolo_config")
        t0 = time.time()
        total = len(spec.seeds) * len(spec.protocols) * len(spec.arms)
        state["spec"] = spec.identity()
        done_before = sum(k in state["units"] for k in spec.unit_keys())

        def log(msg: str) -> None:
            say(f"[SIMULATE {time.time() - t0:7.1f}s] {msg}")

        log(f"{spec.data}: {len(spec.seeds)} seeds x {len(spec.protocols)} protocols x {len(spec.arms)} arms, "
            f"{spec.rounds} rounds of {spec.budget} {spec.budget_unit}; work folder {out}"
            + (f"; {done_before}/{total} arms already done" if done_before else "")
            + (f" ({len(state['units']) - done_before} other finished arms kept)"
               if len(state["units"]) > done_before else ""))
        finished_now = 0

        def record(key: str, rows: list[dict], secs: float) -> None:
            state["units"][key] = {"rows": rows, "seconds": secs}
            store.write_json(out / "simulation_state.json", state, schema=STATE_SCHEMA)
            done = sum(k in state["units"] for k in spec.unit_keys())
            left = total - done
            mean = statistics.mean(u["seconds"] for u in state["units"].values())
            log(f"[{done}/{total}] {key} done in {secs:.0f} s: " + ", ".join(
                f"{r[f'labelled_{spec.budget_unit}']}->{_num(r['test_map50_95'])}" for r in rows)
                + (f"; {left} arms left, about {left * mean / 60 / max(1, spec.jobs):.0f} min at the mean arm "
                   f"time so far" if left else ""))

        todo = {seed: [(p, a) for p in spec.protocols for a in spec.arms if f"{seed}/{p}/{a}" not in state["units"]]
                for seed in spec.seeds}
        todo = {seed: units for seed, units in todo.items() if units}
        n_units = sum(len(u) for u in todo.values())
        if spec.jobs > 1 and n_units > 1 and stop_after_units is None:
            workers = min(spec.jobs, n_units)
            log(f"{workers} arms at a time (--jobs {spec.jobs}); a seed's first arm trains its shared baseline "
                f"before its other arms start")
            _run_parallel(spec, todo, workers, t0, record)
        else:
            for seed, units in todo.items():
                for proto, arm in units:
                    if stop_after_units is not None and finished_now >= stop_after_units:
                        log(f"stopped after {finished_now} arms; run the same command again to continue")
                        return {}
                    key, rows, secs = _do_unit(spec, seed, proto, arm, log)
                    record(key, rows, secs)
                    finished_now += 1
        wall = time.time() - t0
        return write_results(spec, state, wall, say=log, plot=plot_curves)
    finally:
        lock.release()


def _baseline(spec: SimSpec, seed: int) -> Path:
    """The seed's shared baseline, trained by its first arm."""
    return spec.out / f"seed_{seed}" / "baseline.pt"


def _do_unit(spec: SimSpec, seed: int, proto: str, arm: str, log: Callable[[str], None]) -> tuple[str, list, float]:
    """One arm of one seed and protocol: its loop (training the seed's shared baseline first when it is the seed's
    first arm), then its rows. Returns (key, rows, seconds)."""
    data = spec.out / f"seed_{seed}" / "data"
    info = prepare_seed_data(spec, seed, data)
    baseline = _baseline(spec, seed)
    key = f"{seed}/{proto}/{arm}"
    log(f"seed {seed} ({info['seed_set']} seed images, pool {info['pool']}), {proto}/{arm}"
        + ("" if baseline.is_file() else ": trains the shared baseline first"))
    u0 = time.time()
    unit_dir = spec.out / f"seed_{seed}" / proto / arm_folder(arm)
    run_unit(spec, data, unit_dir, arm, proto, seed, baseline if baseline.is_file() else None, log)
    if not baseline.is_file():
        store.write_bytes_atomic(baseline, (unit_dir / "run" / "iterations" / "iteration_0" /
                                            "weights" / "best.pt").read_bytes())
    rows = unit_rows(spec, data, unit_dir, arm, proto, seed)
    return key, rows, round(time.time() - u0, 1)


def schedule_order(todo: Mapping[int, list[tuple[str, str]]], has_baseline: Callable[[int], bool]
                   ) -> tuple[list[tuple[int, str, str]], dict[int, list[tuple[int, str, str]]]]:
    """--jobs > 1: (ready, waiting). ready = the arms that can start now, the baseline-makers (the first arm of each
    seed without a baseline, which unlocks the rest of its seed) first, then the arms of seeds whose baseline
    exists, in seed order; waiting[seed] = that seed's other arms, released when its first arm finishes."""
    makers: list[tuple[int, str, str]] = []
    rest: list[tuple[int, str, str]] = []
    waiting: dict[int, list[tuple[int, str, str]]] = {}
    for seed, units in todo.items():
        jobs = [(seed, proto, arm) for proto, arm in units]
        if has_baseline(seed):
            rest.extend(jobs)
        else:
            makers.append(jobs[0])
            if len(jobs) > 1:
                waiting[seed] = jobs[1:]
    return makers + rest, waiting


def _run_parallel(spec: SimSpec, todo: Mapping[int, list[tuple[str, str]]], workers: int, t0: float,
                  record: Callable[[str, list, float], None]) -> None:
    """Arms side by side, each in a process of its own (spawned: no torch or lock state inherited; it inherits the
    parent's offline Ultralytics environment, prepare_offline). Arms, not seeds, are the unit, so the last wave is
    not one seed alone: a seed's first arm trains its shared baseline and its other arms start once it is there.
    The parent records each arm as it finishes (an arm whose loop finished is read, not redone, if the parent is
    killed before it records it). A failed arm keeps its seed's later arms waiting (unless the baseline exists);
    every other arm finishes, then the first failure is raised: the same command continues."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ready, waiting = schedule_order(todo, lambda seed: _baseline(spec, seed).is_file())
    mp = multiprocessing.get_context("spawn")
    failed: SimulationError | None = None
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp) as pool:
        running: dict = {}

        def fill() -> None:
            while ready and len(running) < workers:
                seed, proto, arm = ready.pop(0)
                running[pool.submit(_unit_worker, spec, seed, proto, arm, t0)] = seed

        fill()
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                seed = running.pop(fut)
                try:
                    key, rows, secs = fut.result()
                    record(key, rows, secs)
                except SimulationError as e:  # the other arms finish; the failed one continues next time
                    failed = failed or e
                if seed in waiting and _baseline(spec, seed).is_file():
                    ready.extend(waiting.pop(seed))
            fill()
    if failed is not None:
        raise failed


def _unit_worker(spec: SimSpec, seed: int, proto: str, arm: str, t0: float) -> tuple[str, list, float]:
    """--jobs > 1: one arm in a process of its own (_run_parallel)."""

    def log(msg: str) -> None:
        print(f"[SIMULATE {time.time() - t0:7.1f}s] {msg}", flush=True)

    return _do_unit(spec, seed, proto, arm, log)


def write_results(spec: SimSpec, state: dict, wall: float, *, say: Callable[[str], None], plot) -> dict:
    """simulation.csv, simulation_summary.json, simulation.md and simulation.png in the work folder."""
    out = spec.out
    mine = [k for k in spec.unit_keys() if k in state["units"]]
    rows = [r for k in mine for r in state["units"][k]["rows"]]
    timings = {k: state["units"][k]["seconds"] for k in mine}
    columns = list(dict.fromkeys(c for r in rows for c in r))
    store.write_csv(out / "simulation.csv", rows, columns)
    summary = summarize(rows, spec)
    flat = {proto: flat_reference(rows, spec, proto) for proto in spec.protocols}
    store.write_json(out / "simulation_summary.json",
                     {"settings": spec.settings(), "wall_seconds_this_call": round(wall, 1), "arm_seconds": timings,
                      "protocols": summary, "goal": goal_check(summary, flat=flat),
                      "goals": goal_checks(summary, flat), "machine": machine(),
                      "flat_reference_seeds": flat})
    md = markdown(summary, spec, wall, timings, flat)
    store.write_text_atomic(out / "simulation.md", md)
    unit = spec.budget_unit
    plot(rows, spec.arms, spec.protocols, out / "simulation.png", x_key=f"labelled_{unit}",
         x_label=f"labelled {unit}", title=f"{len(spec.seeds)} seeds, +{spec.budget} {unit}/round")
    say(f"results: {out / 'simulation.md'} (also .csv, _summary.json, .png)")
    say(md)
    return summary
