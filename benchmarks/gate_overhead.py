"""Promotion-gate overhead: the gate's share of an iteration's validate step, per gate metric (medians).

A real run tree on a generated demo-sized dataset (default: the demo's 160 val / 120 test images at 256 px,
imgsz 192) with a model that learned (benchmarks/crash_harness.py's train_baseline, or --weights), set up by a dry
run up to iteration 1's validate. Then validate.run of iteration 1 (the validator pass, matching, mAP, the decision
set and the gate) runs --repeats times per metric; the gate's time is what the product's own gate functions take
inside it (the decision-set check, the per-image arrays and their .npz, the paired bootstrap, promotion.json and
champion.json), timed by wrapping those functions in place.

    .venv/bin/python benchmarks/gate_overhead.py                     # demo sizes, 1000 resamples
    .venv/bin/python benchmarks/gate_overhead.py --resamples 200 --n-test 60
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--weights", type=Path, default=None, help="a learned .pt (default: train one, ~1 min)")
    ap.add_argument("--n-val", type=int, default=160)
    ap.add_argument("--n-test", type=int, default=120)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--imgsz", type=int, default=192)
    ap.add_argument("--resamples", type=int, default=1000, help="gate.resamples (metric f1)")
    ap.add_argument("--map-resamples", type=int, default=200, help="gate.map_resamples (map50, map50_95)")
    ap.add_argument("--metrics", default="f1,map50,map50_95")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decision-set", default="auto", choices=["auto", "test", "val_frozen"])
    args = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory(prefix="al_gate_bench_") as tmp:
        return run(args, args.work or Path(tmp))


def run(args, work: Path) -> int:
    from al.core.config import load_config
    from al.core.context import Listeners
    from al.core.state import RunState
    from al.data.demo import generate_demo
    from al.steps import gate, validate
    from tests.conftest import run_in_process, step_context

    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights
    if weights is None:
        from benchmarks.crash_harness import Size, train_baseline

        weights = train_baseline(work / "learned", Size())
    data = generate_demo(work / "data", seed=1, n_train=48, n_val=args.n_val, n_test=args.n_test, n_pool=0,
                         size=args.image_size)
    cfg_file = work / "al_config.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "run_dir": str(work / "run"),
        "dataset": {"data_yaml": str(data), "mining_source": "val"},
        "model": {"baseline": str(weights)},
        "active_learning": {"max_samples_per_iteration": 8, "review_source": "simulated", "target_f1": 0.99,
                            "max_iterations": 3, "train_f1_sample": 48, "overfit_gap": 1.0},
        "training": {"imgsz": args.imgsz, "batch": 16, "workers": 0, "device": "cpu"},
        "validation": {"batch": 16},
        "gate": {"decision_set": args.decision_set, "resamples": args.resamples,
                 "map_resamples": args.map_resamples},
    }))
    shutil.rmtree(work / "run", ignore_errors=True)  # a fresh run each time (the learned model is reused)
    cfg = load_config(cfg_file)
    # a dry run (weights copied, not trained) up to the retrain that writes iteration 1's model: baseline, and
    # iteration 0's validate, analyze, converge, extract, review, retrain
    run_in_process(cfg, stop_after=7)

    spent = {"s": 0.0}

    def timed(fn):
        @functools.wraps(fn)
        def inner(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent["s"] += time.perf_counter() - t0
        return inner

    originals = {name: getattr(gate, name) for name in ("choose", "evaluate", "run")}
    for name, fn in originals.items():
        setattr(gate, name, timed(fn))
    results = {}
    try:
        for metric in args.metrics.split(","):
            cfg.gate.metric = metric
            ctx = step_context(cfg, RunState(iteration=1, step="validate", baseline=False), ui=Listeners())
            validate.run(ctx)  # warm-up: model load, label caches
            val_s, gate_s = [], []
            for _ in range(args.repeats):
                spent["s"] = 0.0
                t0 = time.perf_counter()
                validate.run(ctx)
                val_s.append(time.perf_counter() - t0)
                gate_s.append(spent["s"])
            results[metric] = (statistics.median(val_s), statistics.median(gate_s))
    finally:
        for name, fn in originals.items():
            setattr(gate, name, fn)
    from al.core import artifacts
    from al.core.paths import RunPaths

    ds = artifacts.load_decision_set(RunPaths(cfg.run_dir))
    import numpy as np

    with np.load(RunPaths(cfg.run_dir).decision_eval(1)) as z:
        n_pred = len(z["pred_conf"])
    print(f"gate overhead: decision set {ds.set} ({len(ds.images)} images, {n_pred} predictions at the validator's "
          f"conf), {args.resamples} resamples (f1) / {args.map_resamples} (mAP), val {args.n_val} / test "
          f"{args.n_test} images at {args.image_size} px, imgsz {args.imgsz}, {args.repeats} repeats, medians")
    for metric, (v, g) in results.items():
        print(f"  {metric:9s} validate {v:7.2f} s   gate {g:6.3f} s   gate/validate {100 * g / v:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
