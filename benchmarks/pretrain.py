"""Build the project's pretrained detector: yolov8n trained from yolov8n.yaml on the synthetic "shapes" domain.

Users fine-tune pretrained weights; offline, the benchmarks start from this checkpoint instead. Its domain
(al.data.synthetic's shapes: six geometric primitives on procedural textures) shares no class and no scene with any
benchmark dataset, so what a benchmark measures is still learnt from the benchmark's own labels. Nothing is
downloaded. Writes to --out (benchmarks/weights/ by default):

  yolov8n_shapes.pt     the best epoch (Ultralytics' fitness on val), optimizer stripped
  yolov8n_shapes.json   command, generator settings and seeds, wall time, machine, val mAP per epoch and final
  yolov8n_shapes.md     the same for people

    .venv/bin/python benchmarks/pretrain.py                                  # the committed checkpoint
    .venv/bin/python benchmarks/pretrain.py --epochs 1 --out /tmp/pretrain   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WEIGHTS = Path(__file__).resolve().parent / "weights"
STEM = "yolov8n_shapes"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS, help="folder of the checkpoint and its report")
    ap.add_argument("--work", type=Path, default=Path("/tmp/al_pretrain"),
                    help="work folder: the generated dataset and Ultralytics' run (deleted and rebuilt per call)")
    ap.add_argument("--epochs", type=int, default=40, help="about 20 min on one core of a 2-core CPU")
    ap.add_argument("--n-train", type=int, default=2400)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--size", type=int, default=128, help="largest generated image side")
    ap.add_argument("--min-size", type=int, default=96, help="smallest generated image side")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    ap.add_argument("--seed", type=int, default=0, help="training seed (Ultralytics' seed, deterministic=True)")
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr0", type=float, default=0.001)
    return ap.parse_args(argv)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _epoch_rows(results_csv: Path) -> list[dict]:
    """Ultralytics' results.csv as one dict per epoch (its columns, stripped of padding)."""
    import csv

    with results_csv.open(newline="") as fh:
        rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(fh)]
    keep = {"epoch": "epoch", "metrics/mAP50(B)": "map50", "metrics/mAP50-95(B)": "map50_95",
            "metrics/precision(B)": "precision", "metrics/recall(B)": "recall", "train/box_loss": "train_box_loss",
            "train/cls_loss": "train_cls_loss", "val/box_loss": "val_box_loss", "val/cls_loss": "val_cls_loss",
            "time": "time_s"}
    out = []
    for r in rows:
        row = {}
        for src, dst in keep.items():
            if src in r and r[src] != "":
                row[dst] = int(float(r[src])) if dst == "epoch" else round(float(r[src]), 5)
        out.append(row)
    return out


def _evaluate(weights: Path, data: Path, split: str, args) -> dict:
    from ultralytics import YOLO

    m = YOLO(str(weights)).val(data=str(data), split=split, imgsz=args.imgsz, batch=args.batch, device="cpu",
                               workers=0, plots=False, verbose=False, project=str(args.work / "val"), name=split,
                               exist_ok=True)
    return {"map50": round(float(m.box.map50), 5), "map50_95": round(float(m.box.map), 5),
            "precision": round(float(m.box.mp), 5), "recall": round(float(m.box.mr), 5),
            "per_class_map50_95": {m.names[int(c)]: round(float(v), 5) for c, v in zip(m.box.ap_class_index,
                                                                                       m.box.maps[m.box.ap_class_index])}}


def _markdown(r: dict) -> str:
    g, t, f, w, mc = r["generator"], r["training"], r["final"], r["wall_s"], r["machine"]
    nan = float("nan")
    per_epoch = "\n".join(f"| {e['epoch']} | {e.get('map50', nan):.3f} | {e.get('map50_95', nan):.3f} |"
                          for e in r["epochs"])
    classes = " | ".join(f"{n} {v:.3f}" for n, v in f["val"]["per_class_map50_95"].items())
    c = g["counts"]
    data = (f"`{g['command']}` (train {c['train']}, val {c['val']}, test {c['test']} images of "
            f"{g['min_size']}-{g['size']} px)")
    training = (f"{t['epochs']} epochs, imgsz {t['imgsz']}, batch {t['batch']} (nbs {t['nbs']}), {t['optimizer']} "
                f"lr0 {t['lr0']}, seed {t['seed']} (deterministic), workers 0, device cpu; "
                f"best epoch {r['best_epoch']}")
    wall = (f"training {w['train'] / 60:.1f} min ({w['train'] / t['epochs']:.1f} s an epoch, validation included), "
            f"data generation {w['generate']:.0f} s, all {w['total'] / 60:.1f} min")
    machine = (f"{mc['cpu']}, {mc['torch_threads']} torch thread(s) of {mc['cpu_count']} CPUs; {mc['platform']}; "
               f"Python {mc['python']}, torch {mc['torch']}, ultralytics {mc['ultralytics']}")
    v, te = f["val"], f["test"]
    return f"""# {STEM}.pt: yolov8n pretrained on the synthetic shapes domain

Built by `benchmarks/pretrain.py`; the benchmarks fine-tune it instead of training from scratch (nothing is
downloaded). The shapes domain ({', '.join(g['names'])} on procedural textures) shares no class and no scene
with any benchmark dataset.

    {r['command']}

| | |
|---|---|
| file | `{r['file']}`, {r['file_bytes'] / 1e6:.1f} MB, optimizer stripped |
| sha256 | `{r['sha256']}` |
| model | `{t['model']}` (random initialisation), {len(g['names'])} classes |
| data | {data} |
| training | {training} |
| wall time | {wall} |
| machine | {machine} |
| final val | mAP50 {v['map50']:.3f}, mAP50-95 {v['map50_95']:.3f} (P {v['precision']:.3f}, R {v['recall']:.3f}) |
| final test | mAP50 {te['map50']:.3f}, mAP50-95 {te['map50_95']:.3f} |

Val mAP50-95 per class: {classes}.

## Val mAP per epoch

| epoch | mAP50 | mAP50-95 |
|---|---|---|
{per_epoch}
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work = args.work.expanduser().absolute()
    args.out = args.out.expanduser().absolute()
    from al.core.store import write_text_atomic
    from al.data.synthetic import generate_shapes
    from al.yolo.detector import disable_mlflow_callback, prepare_offline

    t_start = time.time()
    if args.work.exists():
        shutil.rmtree(args.work)
    prepare_offline(args.work / "yolo_config")
    data = generate_shapes(args.work / "data", seed=args.data_seed, n_train=args.n_train, n_val=args.n_val,
                           n_test=args.n_test, size=args.size, min_size=args.min_size)
    manifest = json.loads((data.parent / "synthetic_manifest.json").read_text(encoding="utf-8"))
    t_gen = time.time() - t_start

    import torch
    from ultralytics import YOLO
    from ultralytics import __version__ as ul_version
    from ultralytics.utils.torch_utils import strip_optimizer

    disable_mlflow_callback()
    model = YOLO("yolov8n.yaml")
    t0 = time.time()
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, nbs=args.batch, workers=0,
                device="cpu", seed=args.seed, deterministic=True, optimizer="AdamW", lr0=args.lr0, patience=0,
                cache="ram", plots=False, project=str(args.work / "runs"), name="train", exist_ok=True,
                verbose=True)
    t_train = time.time() - t0
    run = args.work / "runs" / "train"
    best = run / "weights" / "best.pt"

    args.out.mkdir(parents=True, exist_ok=True)
    final = args.out / f"{STEM}.pt"
    tmp = final.with_suffix(".tmp.pt")
    strip_optimizer(best, str(tmp))  # best.pt is stripped already by Ultralytics; this also drops its EMA copy
    os.replace(tmp, final)
    names = YOLO(str(final)).names
    evals = {s: _evaluate(final, data, s, args) for s in ("val", "test")}

    rows = _epoch_rows(run / "results.csv")
    # best.pt is the last epoch with the highest fitness (val mAP50-95): a stripped checkpoint no longer says which
    top = max((e.get("map50_95", 0.0) for e in rows), default=0.0)
    best_epoch = max((e["epoch"] for e in rows if e.get("map50_95", 0.0) == top), default=None)
    g_cmd = (f"python -m al.data.synthetic shapes --out DIR --n-train {args.n_train} --n-val {args.n_val} "
             f"--n-test {args.n_test} --size {args.size} --min-size {args.min_size} --seed {args.data_seed}")
    report = {
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/pretrain.py",
                                                    *(sys.argv[1:] if argv is None else argv)]),
        "file": f"benchmarks/weights/{STEM}.pt" if args.out == WEIGHTS else str(final),
        "file_bytes": final.stat().st_size,
        "sha256": hashlib.sha256(final.read_bytes()).hexdigest(),
        "names": [names[i] for i in sorted(names)],
        "generator": {"name": "shapes", "command": g_cmd, "seed": args.data_seed, "counts": manifest["counts"],
                      "size": manifest["size"], "min_size": manifest["min_size"], "names": manifest["names"],
                      "generator_version": manifest["generator_version"], "settings": manifest["settings"],
                      "splits": manifest["splits"]},
        "training": {"model": "yolov8n.yaml", "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                     "nbs": args.batch, "optimizer": "AdamW", "lr0": args.lr0, "seed": args.seed,
                     "deterministic": True, "workers": 0, "device": "cpu", "cache": "ram", "patience": 0},
        "best_epoch": best_epoch,
        "wall_s": {"generate": round(t_gen, 1), "train": round(t_train, 1),
                   "total": round(time.time() - t_start, 1)},
        "machine": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "ultralytics": ul_version},
        "final": evals,
        "epochs": rows,
    }
    write_text_atomic(args.out / f"{STEM}.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(args.out / f"{STEM}.md", _markdown(report))
    print(f"{final}: val mAP50-95 {evals['val']['map50_95']:.3f} (mAP50 {evals['val']['map50']:.3f}), "
          f"{t_train / 60:.1f} min training, sha256 {report['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
