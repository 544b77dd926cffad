"""Label-efficiency benchmark: does a selection strategy reach a given test mAP50-95 with fewer labelled images?

For every seed: a demo dataset (al.data.demo: digits on photos, imbalanced classes) whose train split is the seed set
and whose pool's labels stay hidden; one baseline model trained on the seed set and shared by every arm; then, per
arm (random, entropy, combined ...), the product's own loop (al.app.session + al.core.machine, mining_source: pool,
review_source: simulated: the simulated annotator reveals the hidden labels of the picks) runs K rounds with the
same per-round budget. Selection, review and fine-tuning are the product's code paths; only the config differs.

Writes to --out (default benchmarks/results/):
  label_efficiency.csv          one row per seed, arm and round: labelled images, test mAP50-95 / mAP50
  label_efficiency_summary.json per arm: AUC, final mAP, labels to reach the random arm's final mAP (per seed),
                                medians and min/max over seeds; plus the run's settings and wall time
  label_efficiency.md           the same as a table
  label_efficiency.png          test mAP50-95 against labelled images, median over seeds with the min-max band

    .venv/bin/python benchmarks/label_efficiency.py            # default size (see docs/BENCHMARKS.md)
    .venv/bin/python benchmarks/label_efficiency.py --seeds 0 --rounds 1 --arms random   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARMS = ("random", "entropy", "combined")
RARE_CLASSES = (3, 4)  # al.data.demo's two rarest classes ('three' 12%, 'four' 8% of objects)
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated strategies (first is trained first; "
                    "'random' is the reference arm)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds: each gets its own dataset and seed set")
    ap.add_argument("--rounds", type=int, default=3, help="selection rounds K per arm")
    ap.add_argument("--budget", type=int, default=32, help="images labelled per round")
    ap.add_argument("--seed-set", type=int, default=64, help="initially labelled images")
    ap.add_argument("--pool", type=int, default=300, help="unlabelled pool images")
    ap.add_argument("--val", type=int, default=48, help="validation images (model selection during training)")
    ap.add_argument("--test", type=int, default=200, help="test images (the reported mAP)")
    ap.add_argument("--size", type=int, default=128, help="generated image side in pixels")
    ap.add_argument("--imgsz", type=int, default=128, help="train/inference size")
    ap.add_argument("--epochs-base", type=int, default=60, help="baseline epochs on the seed set")
    ap.add_argument("--epochs-round", type=int, default=15, help="fine-tune epochs per round")
    ap.add_argument("--lr", type=float, default=0.002, help="base learning rate")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp dir, deleted)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    return ap.parse_args(argv)


def arm_config(args, data: Path, run_dir: Path, arm: str, seed: int) -> dict:
    return {
        "run_dir": str(run_dir),
        "dataset": {"data_yaml": str(data / "data.yaml"), "pool_dir": str(data / "pool" / "images"),
                    "pool_labels_dir": str(data / "pool" / "labels_hidden"), "mining_source": "pool"},
        "model": {"baseline": "yolov8n.yaml", "type": "label-efficiency benchmark"},
        "active_learning": {"max_samples_per_iteration": args.budget, "review_source": "simulated",
                            "require_human_review": False, "target_f1": 1.0, "plateau_window": 100,
                            "overfit_gap": 1.0, "max_iterations": args.rounds + 1, "train_f1_sample": 0},
        "sampling_strategy": {"strategy": arm},
        "training": {"base_lr": args.lr, "lr_decay_factor": 1.0, "optimizer": "AdamW",
                     "epochs_base": args.epochs_base, "epochs_increment": args.epochs_round, "patience": 0,
                     "imgsz": args.imgsz, "batch": 16, "device": "cpu", "workers": 0, "seed": seed,
                     "extra": {"nbs": 16, "fliplr": 0.0, "mosaic": 1.0, "close_mosaic": 2, "warmup_epochs": 1,
                               "plots": False}},
        "validation": {"conf": 0.15, "batch": 32},
        "analysis": {"max_crops": 0},
    }


def run_arm(args, data: Path, work: Path, arm: str, seed: int, baseline: Path | None, log) -> list[dict]:
    """One arm of one seed through the product's loop; returns its convergence rows."""
    from al.app.api import open_run
    from al.app.api import run_loop as run
    from al.core import store
    from al.core.config import load_config
    from al.core.context import Listeners
    from al.core.events import Message
    from al.steps import retrain

    run_dir = work / f"seed{seed}" / arm
    cfg_path = work / f"seed{seed}" / f"{arm}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(arm_config(args, data, run_dir, arm, seed), sort_keys=False))
    cfg = load_config(cfg_path)
    bus = Listeners()
    bus.subscribe(lambda ev: log(f"  [{seed}/{arm}] {ev.text}") if isinstance(ev, Message) and
                  ev.text.startswith(("[SAMPLING]", "[VALIDATE] test", "[TRAIN] Training complete")) else None)
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=False, auto=False, ui=bus)
    if baseline is not None:
        # every arm starts from the same baseline: put it where the loop's retrain step would have written it and
        # record it as finished (the path retrain takes after a crash between training and saving the state)
        ctx.env.paths.weights(0).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(baseline, ctx.env.paths.best(0))
        store.write_json(ctx.env.paths.train_result(0), {"spec": retrain.train_spec(ctx, 0), "dry_run": False,
                                                     "seconds": 0.0, "best": str(ctx.env.paths.best(0)),
                                                     "shared_baseline": str(baseline)})
    code = run(ctx)
    if code != 0:
        raise SystemExit(f"arm {arm} (seed {seed}) failed: {ctx.state.error}; see {ctx.env.paths.events_log}")
    rows = store.read_csv(ctx.env.paths.convergence_csv)
    for r in rows:  # what the previous round's picks brought: boxes, and boxes of the two rarest classes
        k = int(r["iteration"]) - 1
        r["added_boxes"] = r["added_rare_boxes"] = 0
        if k >= 0 and ctx.env.paths.hard_examples(k).is_file():
            for pk in store.read_json(ctx.env.paths.hard_examples(k))["picks"]:
                lab = data / "pool" / "labels_hidden" / (Path(pk["image"]).stem + ".txt")
                cls = [int(ln.split()[0]) for ln in lab.read_text().splitlines() if ln.strip()]
                r["added_boxes"] += len(cls)
                r["added_rare_boxes"] += sum(c in RARE_CLASSES for c in cls)
    return rows


def labels_to_reach(labels: list[float], maps: list[float], target: float) -> float | None:
    """Labelled images at which the curve first reaches `target` (linear between measured points), else None."""
    for i, (n, m) in enumerate(zip(labels, maps)):
        if m >= target - 1e-12:
            if i == 0:
                return float(n)
            n0, m0 = labels[i - 1], maps[i - 1]
            return float(n0 + (target - m0) / (m - m0) * (n - n0)) if m > m0 else float(n)
    return None


def auc(labels: list[float], maps: list[float]) -> float:
    """Area under test mAP50-95 vs labelled images (trapezoid), divided by the label range: a mean mAP."""
    if len(labels) < 2 or labels[-1] == labels[0]:
        return float(maps[0]) if maps else 0.0
    return float(np.trapezoid(maps, labels) / (labels[-1] - labels[0]))


def summarize(rows: list[dict], arms: list[str], seeds: list[int]) -> dict:
    curves = {(r["seed"], r["arm"]): [] for r in rows}
    for r in rows:
        curves[(r["seed"], r["arm"])].append((r["labelled_images"], r["test_map50_95"]))
    out: dict = {}
    for arm in arms:
        per_seed = []
        for s in seeds:
            pts = sorted(curves.get((s, arm), []))
            ref = sorted(curves.get((s, "random"), []))
            if not pts:
                continue
            lab, mp = [p[0] for p in pts], [p[1] for p in pts]
            target = ref[-1][1] if ref else None
            need = labels_to_reach(lab, mp, target) if target is not None else None
            ref_final = ref[-1][0] if ref else None
            mine = [r for r in rows if r["seed"] == s and r["arm"] == arm]
            per_seed.append({"seed": s, "auc": auc(lab, mp), "final_map50_95": mp[-1], "final_labels": lab[-1],
                             "added_boxes": sum(r.get("added_boxes", 0) for r in mine),
                             "added_rare_boxes": sum(r.get("added_rare_boxes", 0) for r in mine),
                             "random_final_map50_95": target, "labels_to_reach_random_final": need,
                             "label_saving_vs_random": (1 - need / ref_final) if need is not None and ref_final
                             else None})
        stats = {}
        for key in ("auc", "final_map50_95", "labels_to_reach_random_final", "label_saving_vs_random",
                    "added_boxes", "added_rare_boxes"):
            vals = [p[key] for p in per_seed if p[key] is not None]
            stats[key] = {"median": statistics.median(vals) if vals else None, "min": min(vals) if vals else None,
                          "max": max(vals) if vals else None, "n": len(vals), "of": len(per_seed)}
        out[arm] = {"per_seed": per_seed, "stats": stats}
    return out


def plot(rows: list[dict], arms: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm in arms:
        by_round: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            if r["arm"] == arm:
                by_round.setdefault(r["round"], []).append((r["labelled_images"], r["test_map50_95"]))
        if not by_round:
            continue
        rs = sorted(by_round)
        x = [statistics.median(p[0] for p in by_round[k]) for k in rs]
        med = [statistics.median(p[1] for p in by_round[k]) for k in rs]
        lo = [min(p[1] for p in by_round[k]) for k in rs]
        hi = [max(p[1] for p in by_round[k]) for k in rs]
        line, = ax.plot(x, med, marker="o", label=arm)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test mAP50-95")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v, pct=False) -> str:
    if v is None:
        return "not reached"
    return f"{v * 100:.0f}%" if pct else (f"{v:.4f}" if isinstance(v, float) and v < 10 else f"{v:.1f}")


def markdown(summary: dict, settings: dict, wall: float) -> str:
    lines = ["# Label-efficiency benchmark\n", f"Settings: `{json.dumps(settings)}`  ",
             f"Wall time: {wall / 60:.1f} min\n",
             "| arm | AUC median [min, max] | final test mAP50-95 median [min, max] | labels to reach random's final "
             "mAP, per seed | label saving vs random, median [min, max] | boxes (rare-class boxes) labelled by "
             "the picks, median |", "|---|---|---|---|---|---|"]
    for arm, d in summary.items():
        st = d["stats"]
        per = ", ".join(f"s{p['seed']}: {_fmt(p['labels_to_reach_random_final'])}" for p in d["per_seed"])
        sav = st["label_saving_vs_random"]
        lines.append(f"| {arm} | {_fmt(st['auc']['median'])} [{_fmt(st['auc']['min'])}, {_fmt(st['auc']['max'])}] "
                     f"| {_fmt(st['final_map50_95']['median'])} [{_fmt(st['final_map50_95']['min'])}, "
                     f"{_fmt(st['final_map50_95']['max'])}] | {per} | "
                     f"{_fmt(sav['median'], True)} [{_fmt(sav['min'], True)}, {_fmt(sav['max'], True)}] "
                     f"({sav['n']}/{sav['of']} seeds reached) | {st['added_boxes']['median']} "
                     f"({st['added_rare_boxes']['median']}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="al_label_eff_"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    from al.data.demo import generate_demo
    from al.yolo.detector import prepare_offline

    prepare_offline(work / ".yolo_config")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("out", "work", "keep")}
    rows: list[dict] = []
    csv_path = args.out / "label_efficiency.csv"
    columns = ["seed", "arm", "round", "labelled_images", "test_map50_95", "test_map50", "val_map50_95",
               "added_boxes", "added_rare_boxes", "seconds"]
    timings: dict = {}
    for seed in seeds:
        data = generate_demo(work / f"data{seed}", seed=seed, n_train=args.seed_set, n_val=args.val,
                             n_test=args.test, n_pool=args.pool, size=args.size)
        data = data.parent if data.name == "data.yaml" else data
        baseline = None
        for arm in arms:
            t0 = time.time()
            log(f"seed {seed}, arm {arm}: {args.rounds} rounds of {args.budget} images")
            hist = run_arm(args, data, work, arm, seed, baseline, log)
            timings[f"{seed}/{arm}"] = round(time.time() - t0, 1)
            if baseline is None:
                baseline = work / f"seed{seed}" / "baseline.pt"
                shutil.copyfile(work / f"seed{seed}" / arm / "iterations" / "iteration_0" / "weights" / "best.pt",
                                baseline)
            for h in hist:
                rows.append({"seed": seed, "arm": arm, "round": int(h["iteration"]),
                             "labelled_images": int(h["labelled_images"]),
                             "test_map50_95": float(h["test_map50_95"] or 0), "test_map50": float(h["test_map50"] or 0),
                             "val_map50_95": float(h["map50_95"] or 0), "added_boxes": h["added_boxes"],
                             "added_rare_boxes": h["added_rare_boxes"], "seconds": timings[f"{seed}/{arm}"]})
            from al.core import store

            store.write_csv(csv_path, rows, columns)  # after every arm: a partial run still leaves its figures
            log(f"seed {seed}, arm {arm} done in {timings[f'{seed}/{arm}']:.0f} s: " + ", ".join(
                f"{r['labelled_images']}->{r['test_map50_95']:.4f}" for r in rows if r["seed"] == seed
                and r["arm"] == arm))
    wall = time.time() - t_start
    summary = summarize(rows, arms, seeds)
    from al.core import store

    store.write_json(args.out / "label_efficiency_summary.json",
                     {"settings": settings, "wall_seconds": round(wall, 1), "arm_seconds": timings,
                      "arms": summary})
    (args.out / "label_efficiency.md").write_text(markdown(summary, settings, wall))
    plot(rows, arms, args.out / "label_efficiency.png",
         f"{len(seeds)} seeds, seed set {args.seed_set}, +{args.budget}/round, imgsz {args.imgsz}")
    print(markdown(summary, settings, wall))
    if args.work is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
