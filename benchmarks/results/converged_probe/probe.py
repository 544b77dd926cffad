"""One converged point from the pretrained start, trained with Ultralytics directly and measured on the test split.

    probe.py NAME LR0 WARMUP_BIAS_LR MOSAIC DATA_YAML EPOCHS BATCH [SEED]

Prints one RESULT line: the settings, the epochs run, the validation fitness per epoch, the test mAP50-95 and the
seconds (README.md beside this file has the runs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> None:
    from al.yolo.detector import prepare_offline

    work = Path("/tmp/lrprobe")
    prepare_offline(work / ".yolo_config")
    from ultralytics import YOLO

    name, lr, warm_bias, mosaic, data, epochs, batch = argv[:7]
    seed = int(argv[7]) if len(argv) > 7 else 0
    t0 = time.time()
    model = YOLO(str(ROOT / "benchmarks" / "weights" / "yolov8n_shapes.pt"))
    fits: list[float] = []
    model.add_callback("on_fit_epoch_end", lambda tr: fits.append(round(float(tr.fitness or 0), 3)))
    model.train(data=data, epochs=int(epochs), imgsz=96, batch=int(batch), nbs=int(batch), patience=10,
                optimizer="AdamW", lr0=float(lr), device="cpu", workers=0, seed=seed, fliplr=0.0,
                mosaic=float(mosaic), close_mosaic=0, warmup_epochs=1, warmup_bias_lr=float(warm_bias), plots=False,
                val=True, project=str(work / "runs"), name=name, exist_ok=True, verbose=False)
    best = YOLO(str(work / "runs" / name / "weights" / "best.pt"))
    r = best.val(data=data, split="test", imgsz=96, batch=32, device="cpu", plots=False, verbose=False)
    print("RESULT", name, lr, warm_bias, mosaic, "epochs", len(fits), "fit", fits, "test map50-95",
          round(float(r.box.map), 4), "secs", round(time.time() - t0), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
