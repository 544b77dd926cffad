"""The cost curve of the pool scan: images/s and peak memory of al.selection.pool.scan at growing pool sizes, with the
local engine and with Ray (one node, a local runtime of 2 scoring workers), and the per-iteration time model
(scan + select + train) as the pool grows.

Every scan runs in a fresh subprocess with a cold cache (content hashes included), so its peak memory is its own:
the peak resident set of the whole process tree (the driver plus, with Ray, its raylet, GCS and workers; sampled
every 0.2 s with psutil) and the driver's own ru_maxrss. With Ray, the time to start the runtime and the time until
the first shard comes back (actor start-up: each loads torch, Ultralytics and the model) are reported apart from
the steady-state rate between the first and the last shard.

Images are generated (random shapes on noise, distinct bytes, --image-size px JPEGs), so 100k of them take about a
minute and 300 MB. The model is an untrained yolov8n built from its YAML; at --imgsz 64 one image costs a fraction of
a real 640 px frame, which is what makes 100k images feasible on a small machine (see docs/SCALING.md for how the
figures carry over).

    nice .venv/bin/python benchmarks/pool_scale.py                         # 1k and 10k, local and ray
    nice .venv/bin/python benchmarks/pool_scale.py --sizes 1000,10000,100000 --engines local,ray
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ["zero", "one", "two", "three", "four"]


def generate(folder: Path, n: int, side: int) -> list[str]:
    """n distinct small JPEGs (kept between runs: only the missing ones are written)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in folder.glob("*.jpg")}
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"{i:07d}.jpg"
        if name in have:
            continue
        r = np.random.default_rng(i)
        img = r.integers(0, 255, (side, side, 3), dtype=np.uint8)
        for _ in range(int(r.integers(1, 4))):
            x, y = (int(v) for v in r.integers(0, side - 8, 2))
            w, h = (int(v) for v in r.integers(6, side // 2, 2))
            cv2.rectangle(img, (x, y), (x + w, y + h), tuple(int(c) for c in r.integers(0, 255, 3)), -1)
        cv2.imwrite(str(folder / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del rng
    return [str(folder / f"{i:07d}.jpg") for i in range(n)]


class TreeRss:
    """Peak resident memory of this process and all its descendants, and the CPU seconds they used (each process's
    user + system time at its last sample), sampled in a thread. CPU seconds per image do not depend on how loaded
    the machine is; wall-clock images/s do."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.me = psutil.Process(os.getpid())
        self.peak = 0
        self.cpu: dict[int, float] = {}
        self.every = every
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                procs = [self.me, *self.me.children(recursive=True)]
            except psutil.Error:
                procs = [self.me]
            for p in procs:
                try:
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> TreeRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def child(args) -> int:
    """One cold scan of the first args.child images with args.engine, in this fresh process; prints JSON."""
    from al.core.config import PoolConfig, RayPoolConfig
    from al.data import hashing
    from al.selection import pool
    from al.yolo.detector import load_model, prepare_offline

    prepare_offline(args.work / ".yolo_config")
    imgs = generate(args.work / "images", args.child, args.image_size)
    st = pool.ScanSettings(imgsz=args.imgsz, conf=0.05, iou=0.7, batch=args.batch, device="cpu", cand_conf=0.05,
                           top_k=10)
    cache = args.work / f"cache_{args.engine}_{args.child}"
    shutil.rmtree(cache, ignore_errors=True)
    marks: dict[str, float] = {}

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done and "first" not in marks:
            marks["first"], marks["first_done"] = now, done
        marks["last"], marks["last_done"] = now, done

    out: dict = {"engine": args.engine, "images": len(imgs)}
    rss = TreeRss()
    cpu0 = 0.0
    with rss, hashing.persisted(args.work / f"hashes_{args.engine}_{args.child}.json"):
        time.sleep(0.5)
        cpu0 = rss.cpu_seconds()  # what the process used before the scan (imports)
        t0 = time.perf_counter()
        if args.engine == "ray":
            from al.selection.ray_engine import RayEngine

            cfg = PoolConfig(engine="ray", shard_size=args.shard, batch=args.batch,
                             ray=RayPoolConfig(num_workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                               temp_dir=Path(tempfile.mkdtemp(prefix="alb-", dir="/tmp"))))
            said: list[str] = []
            with RayEngine(cfg, say=said.append) as engine:
                engine._start()
                marks["runtime"] = time.perf_counter()
                scores = pool.scan(args.weights, imgs, st, cache, engine=engine, on_progress=progress)
                t_end = time.perf_counter()
            out["shutdown_s"] = round(time.perf_counter() - t_end, 2)
            out["runtime_start_s"] = round(marks["runtime"] - t0, 2)
            shutil.rmtree(cfg.ray.temp_dir or "", ignore_errors=True)
        else:
            engine = pool.LocalEngine(load_model(args.weights), args.shard)
            marks["runtime"] = time.perf_counter()
            scores = pool.scan(args.weights, imgs, st, cache, engine=engine, on_progress=progress)
            t_end = time.perf_counter()
    assert len(scores.images) == len(imgs) and scores.cached == 0
    total = t_end - t0
    steady_n = marks["last_done"] - marks["first_done"]
    out.update(seconds=round(total, 2), images_per_s=round(len(imgs) / total, 1),
               first_result_s=round(marks["first"] - t0, 2),
               steady_images_per_s=round(steady_n / (marks["last"] - marks["first"]), 1)
               if marks["last"] > marks["first"] else None,
               cpu_seconds=round(rss.cpu_seconds() - cpu0, 1),
               images_per_cpu_s=round(len(imgs) / max(rss.cpu_seconds() - cpu0, 1e-9), 1),
               peak_tree_rss_mib=round(rss.peak / 2 ** 20, 1),
               driver_maxrss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               result_arrays_mib=round((scores.embedding.nbytes + scores.class_max.nbytes) / 2 ** 20, 1))
    print(json.dumps(out))
    return 0


def selection_seconds(n: int, budget: int) -> float:
    """pool.choose('combined') on n synthetic rows (256-d embeddings, 5 classes): the selection's own cost."""
    import numpy as np

    from al.selection import pool

    r = np.random.default_rng(1)
    s = pool.PoolScores(images=[f"/p/{i}.jpg" for i in range(n)], hashes=[str(i) for i in range(n)],
                        width=np.full(n, 96), height=np.full(n, 96),
                        uncertainty={"entropy": r.random(n), "margin": r.random(n)},
                        class_max=r.random((n, 5)).astype(np.float32),
                        embedding=r.random((n, 256)).astype(np.float32))
    t = time.perf_counter()
    pool.choose("combined", s.images, budget, scores=s, labelled_emb=r.random((256, 256)).astype(np.float32),
                class_counts=[50, 10, 5, 1, 0], names=NAMES)
    return time.perf_counter() - t


def train_seconds_per_image_epoch(work: Path) -> float:
    """One real Ultralytics training (the loop's settings: imgsz --imgsz, 64 demo images, 2 epochs), seconds per
    image and epoch."""
    from ultralytics import YOLO

    from al.data.demo import generate_demo

    data = generate_demo(work / "train_data", seed=0, n_train=64, n_val=16, n_test=0, n_pool=0, size=96)
    t = time.perf_counter()
    YOLO("yolov8n.yaml").train(data=str(data), epochs=2, imgsz=64, batch=16, workers=0, device="cpu",
                               project=str(work / "train"), name="t", exist_ok=True, plots=False, val=False,
                               verbose=False)
    return (time.perf_counter() - t) / (64 * 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="pool sizes (comma-separated)")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=96, help="side of the generated images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shard", type=int, default=256, help="pool.shard_size")
    ap.add_argument("--workers", type=int, default=2, help="pool.ray.num_workers")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--budget", type=int, default=20, help="picks per iteration for the selection timing")
    ap.add_argument("--train", action="store_true", help="also time a real 2-epoch training for the time model")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "al_pool_scale")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="pool_scale", help="results file stem: <out>/<name>.json and .md")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    ap.add_argument("--weights", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args)

    from al.yolo.detector import build_untrained, prepare_offline

    args.work.mkdir(parents=True, exist_ok=True)
    prepare_offline(args.work / ".yolo_config")
    weights = args.work / "untrained.pt"
    if not weights.is_file():
        build_untrained("yolov8n.yaml", NAMES, weights)
    sizes = [int(s) for s in args.sizes.split(",")]
    t = time.perf_counter()
    generate(args.work / "images", max(sizes), args.image_size)
    gen_s = time.perf_counter() - t
    load = os.getloadavg()
    scans = []
    for n in sizes:
        for engine in args.engines.split(","):
            cmd = [sys.executable, __file__, "--child", str(n), "--engine", engine, "--work", str(args.work),
                   "--weights", str(weights), "--imgsz", str(args.imgsz), "--image-size", str(args.image_size),
                   "--batch", str(args.batch), "--shard", str(args.shard), "--workers", str(args.workers),
                   "--cpus-per-worker", str(args.cpus_per_worker)]
            la = os.getloadavg()[0]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(res.stdout[-2000:], res.stderr[-4000:], file=sys.stderr)
                return res.returncode
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["load_before"] = round(la, 2)
            scans.append(row)
            print(json.dumps(row), flush=True)
    select = {n: round(selection_seconds(n, args.budget), 3) for n in sizes}
    train = round(train_seconds_per_image_epoch(args.work), 4) if args.train else None
    res = {"imgsz": args.imgsz, "image_size": args.image_size, "batch": args.batch, "shard": args.shard,
           "ray_workers": args.workers, "cpus_per_worker": args.cpus_per_worker, "cpu_count": os.cpu_count(),
           "loadavg_start": [round(v, 2) for v in load], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
           "generate_seconds": round(gen_s, 1), "scans": scans, "select_seconds": select,
           "train_seconds_per_image_epoch": train}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
             f"imgsz {args.imgsz} on {args.image_size}px JPEGs, batch {args.batch}, shard {args.shard}",
             f"{'images':>8} {'engine':>6} {'img/s':>7} {'steady':>7} {'img/cpu-s':>9} {'first':>6} {'start':>6} "
             f"{'tree RSS':>9} {'driver':>7} {'load':>5}"]
    for r in scans:
        lines.append(f"{r['images']:8d} {r['engine']:>6} {r['images_per_s']:7.1f} {r['steady_images_per_s'] or 0:7.1f} "
                     f"{r['images_per_cpu_s']:9.1f} {r['first_result_s']:6.1f} {r.get('runtime_start_s', 0):6.1f} "
                     f"{r['peak_tree_rss_mib']:8.0f}M {r['driver_maxrss_mib']:6.0f}M {r['load_before']:5.1f}")
    for n in sizes:
        loc = next((r for r in scans if r["images"] == n and r["engine"] == "local"), None)
        ray = next((r for r in scans if r["images"] == n and r["engine"] == "ray"), None)
        if loc and ray:
            lines.append(f"ray/local at {n}: {ray['images_per_s'] / loc['images_per_s']:.3f} end to end, "
                         f"{(ray['steady_images_per_s'] or 0) / (loc['steady_images_per_s'] or 1):.3f} steady, "
                         f"{ray['images_per_cpu_s'] / loc['images_per_cpu_s']:.3f} per CPU second")
    sel = ", ".join(f"{n}: {s:.2f} s" for n, s in select.items())
    lines.append(f"selection (combined, budget {args.budget}): {sel}")
    if train is not None:
        lines.append(f"training: {train:.4f} s per image-epoch (imgsz {args.imgsz}, batch 16, CPU)")
    (args.out / f"{args.name}.md").write_text("# Pool scan cost curve\n\n```\n" + "\n".join(lines) + "\n```\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
