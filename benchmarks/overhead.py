"""Overhead of the loop's analysis over bare inference.

Ratio = (validate + analyse + extract wall time) / (bare Ultralytics predict over the same images), medians of
--repeats runs. validate predicts once (at conf 0.001, as `yolo val` does, so mAP comes from the same pass);
bare predict is timed both at that conf and at Ultralytics' default 0.25.

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

    bare(0.25)  # warm-up (first call builds the predictor)
    steps = {"validate": [], "analyze": [], "extract": []}
    b001, b025 = [], []
    for _ in range(args.repeats):
        b001.append(bare(0.001))
        b025.append(bare(0.25))
        for name, mod in (("validate", validate), ("analyze", analyze), ("extract", extract)):
            t0 = time.perf_counter()
            mod.run(ctx)
            steps[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in steps.items()}
    loop = sum(med.values())
    print(f"images: {len(images)} (val {len(splits['val'])} + train sample + test {len(splits['test'])}), "
          f"imgsz {tc.imgsz}, batch {vc.batch}, repeats {args.repeats} (medians)")
    for k, v in med.items():
        print(f"  {k:9s} {v:7.3f} s")
    print(f"  bare predict conf=0.001 {statistics.median(b001):7.3f} s   conf=0.25 {statistics.median(b025):7.3f} s")
    print(f"ratio (validate+analyse+extract) / bare predict: {loop / statistics.median(b001):.3f} at conf 0.001, "
          f"{loop / statistics.median(b025):.3f} vs default conf 0.25")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
