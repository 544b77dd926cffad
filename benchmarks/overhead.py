"""Overhead of the loop's analysis over bare inference.

Ratio = (validate + analyse + extract wall time) / (bare Ultralytics predict over the same images), medians of
--repeats runs. validate runs Ultralytics' validator once per image (val and test splits, and the train sample;
conf 0.001, multi-label NMS, rect batches: its mAP is the validator's, docs/METRICS.md); bare predict is timed both
at that conf and at Ultralytics' default 0.25, and bare `model.val()` on the val and test splits is printed too
(validate's own share of the work over it: the train sample, the per-image capture, matching and the records).

    .venv/bin/python benchmarks/overhead.py --config config/demo.yaml \
        --weights demo_run/iterations/iteration_0/weights/best.pt
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--weights", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from al.core.config import load_config
    from al.yolo.detector import prepare_offline

    cfg = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="al_overhead_"))
    cfg.run_dir = tmp / "run"
    prepare_offline(tmp / "yolo_config")

    from ultralytics import YOLO

    from al.app.api import open_run
    from al.core import artifacts
    from al.core.context import Listeners
    from al.data import dataset
    from al.steps import analyze, extract, validate
    from al.yolo.detector import resolve_device

    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=False, auto=False, ui=Listeners())
    ctx.env.paths.weights(0).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.weights, ctx.env.paths.best(0))
    ctx.state.baseline = False
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(0))
    images = list(dict.fromkeys(splits["val"] + validate.train_sample(ctx, splits["train"], splits["train"])
                                + splits["test"]))
    vc, tc = cfg.validation, cfg.training
    model = YOLO(str(ctx.env.paths.best(0)))
    ctx.models.model(ctx.env.paths.best(0))  # both sides start with a loaded model

    def bare(conf: float) -> float:
        t0 = time.perf_counter()
        for _ in model.predict(source=images, stream=True, imgsz=tc.imgsz, conf=conf, iou=vc.nms_iou,
                               batch=vc.batch, device=resolve_device(tc.device), verbose=False):
            pass
        return time.perf_counter() - t0

    def bare_val() -> float:
        t0 = time.perf_counter()
        for split in ("val", "test") if splits["test"] else ("val",):
            model.val(data=str(ctx.env.paths.dataset_yaml(0)), split=split, imgsz=tc.imgsz, batch=vc.batch,
                      conf=0.001, iou=vc.nms_iou, device=resolve_device(tc.device), workers=tc.workers,
                      plots=False, verbose=False, project=str(tmp / "val"), name=split, exist_ok=True)
        return time.perf_counter() - t0

    bare(0.25)  # warm-up (first call builds the predictor)
    steps = {"validate": [], "analyze": [], "extract": []}
    b001, b025, bval, passes = [], [], [], []
    for _ in range(args.repeats):
        b001.append(bare(0.001))
        b025.append(bare(0.25))
        bval.append(bare_val())
        for name, mod in (("validate", validate), ("analyze", analyze), ("extract", extract)):
            t0 = time.perf_counter()
            mod.run(ctx)
            steps[name].append(time.perf_counter() - t0)
            if mod is validate:  # the validator passes alone (the rest of validate: matching, records, the gate)
                passes.append(artifacts.load_validation(ctx.env.paths, 0).timing.predict_s)
    med = {k: statistics.median(v) for k, v in steps.items()}
    loop = sum(med.values())
    print(f"images: {len(images)} (val {len(splits['val'])} + train sample + test {len(splits['test'])}), "
          f"imgsz {tc.imgsz}, batch {vc.batch}, repeats {args.repeats} (medians)")
    for k, v in med.items():
        print(f"  {k:9s} {v:7.3f} s")
    print(f"  bare predict conf=0.001 {statistics.median(b001):7.3f} s   conf=0.25 {statistics.median(b025):7.3f} s")
    print(f"  bare model.val (val + test splits, no train sample) {statistics.median(bval):7.3f} s")
    print(f"  validate's validator passes (timing.predict_s) {statistics.median(passes):7.3f} s")
    print(f"validate / bare predict conf=0.001: {med['validate'] / statistics.median(b001):.3f}; its validator "
          f"passes / bare predict: {statistics.median(passes) / statistics.median(b001):.3f}; / bare model.val on "
          f"val+test: {statistics.median(passes) / statistics.median(bval):.3f}")
    print(f"ratio (validate+analyse+extract) / bare predict: {loop / statistics.median(b001):.3f} at conf 0.001, "
          f"{loop / statistics.median(b025):.3f} vs default conf 0.25")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
