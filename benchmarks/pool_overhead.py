"""Pool-scoring overhead: scoring images/s / bare batched predict images/s, and peak memory at two pool sizes.

Scoring is al.selection.pool.scan, the product's path: content hashing, the one predict pass with its pre-NMS and
embedding
hooks, uncertainty maths, and cache writes (cold cache). Bare is al.yolo.detector.predict over the same images with the
same model, size, batch and thresholds. Peak memory is measured in a fresh subprocess per pool size (ru_maxrss of
the whole process, and tracemalloc's peak of Python-side allocations such as numpy arrays).

    .venv/bin/python benchmarks/pool_overhead.py                      # 1k vs 10k generated images, size 128
    .venv/bin/python benchmarks/pool_overhead.py --sizes 500,2000 \
        --weights demo_run/iterations/iteration_1/weights/best.pt
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"


def settings(args):
    from al.selection.pool import ScanSettings

    return ScanSettings(imgsz=args.imgsz, conf=0.05, iou=0.7, batch=args.batch, device="cpu", cand_conf=0.05,
                        top_k=10)


def images_of(root: Path, n: int) -> list[str]:
    return sorted(str(p) for p in (root / "pool" / "images").glob("*.jpg"))[:n]


def child(args) -> int:
    """Scan n images in this (fresh) process and print its peak memory as JSON."""
    from al.selection import pool
    from al.yolo.detector import load_model, prepare_offline

    prepare_offline(args.work / ".yolo_config")
    imgs = images_of(args.work / "data", args.child)
    model = load_model(args.weights)
    tracemalloc.start()
    t0 = time.perf_counter()
    scores = pool.scan(args.weights, imgs, settings(args), args.work / f"cache_{args.child}", model=model)
    secs = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"images": len(scores.images), "seconds": round(secs, 2),
                      "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "tracemalloc_peak_mib": round(peak / 2 ** 20, 2)}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="two pool sizes for the memory comparison")
    ap.add_argument("--speed-images", type=int, default=1000, help="images timed for the throughput ratio")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", type=Path, default=None,
                    help="model (default: demo_run's latest best.pt when present, else an untrained yolov8n)")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128, help="side of the generated images")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args)

    from al.data.demo import generate_demo
    from al.yolo.detector import build_untrained, load_model, predict, prepare_offline

    args.work = args.work or Path(tempfile.mkdtemp(prefix="al_pool_overhead_"))
    prepare_offline(args.work / ".yolo_config")
    sizes = [int(s) for s in args.sizes.split(",")]
    n_max = max(sizes + [args.speed_images])
    t0 = time.time()
    generate_demo(args.work / "data", seed=0, n_train=1, n_val=1, n_test=1, n_pool=n_max, size=args.image_size)
    gen_s = time.time() - t0
    if args.weights is None:
        runs = sorted(Path("demo_run/iterations").glob("iteration_*/weights/best.pt"))
        args.weights = runs[-1].resolve() if runs else build_untrained(
            "yolov8n.yaml", ["zero", "one", "two", "three", "four"], args.work / "untrained.pt")
    from al.selection import pool

    imgs = images_of(args.work / "data", args.speed_images)
    model = load_model(args.weights)
    st = settings(args)

    def bare() -> float:
        t = time.perf_counter()
        for _ in predict(args.weights, imgs, imgsz=st.imgsz, conf=st.conf, iou=st.iou, batch=st.batch,
                         device="cpu", model=model):
            pass
        return time.perf_counter() - t

    def scored(i: int) -> float:
        t = time.perf_counter()
        pool.scan(args.weights, imgs, st, args.work / f"speed_cache_{i}", model=model)  # cold cache each time
        return time.perf_counter() - t

    bare()  # warm-up: predictor set-up, first-call allocations
    b, s = [], []
    for i in range(args.repeats):
        b.append(bare())
        s.append(scored(i))
    bare_ips, scan_ips = len(imgs) / statistics.median(b), len(imgs) / statistics.median(s)
    warm = time.perf_counter()
    cached = pool.scan(args.weights, imgs, st, args.work / "speed_cache_0", model=model)
    warm = time.perf_counter() - warm
    mem = {}
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--work", str(args.work), "--weights",
                              str(args.weights), "--imgsz", str(args.imgsz), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True)
        mem[n] = json.loads(out.stdout.strip().splitlines()[-1])
    res = {"weights": str(args.weights), "imgsz": args.imgsz, "batch": args.batch, "speed_images": len(imgs),
           "repeats": args.repeats, "bare_seconds": b, "scan_seconds": s,
           "bare_images_per_s": round(bare_ips, 1), "scan_images_per_s": round(scan_ips, 1),
           "ratio": round(scan_ips / bare_ips, 3), "cached_rescan_seconds": round(warm, 2),
           "cached_rows": cached.cached, "memory": mem, "generate_seconds": round(gen_s, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pool_overhead.json").write_text(json.dumps(res, indent=2) + "\n")
    lo, hi = min(sizes), max(sizes)
    lines = [f"images: {len(imgs)} at imgsz {args.imgsz}, batch {args.batch}, {args.repeats} repeats (medians)",
             f"bare predict  {bare_ips:7.1f} img/s", f"pool scoring  {scan_ips:7.1f} img/s (cold cache)",
             f"ratio scoring/bare: {scan_ips / bare_ips:.3f} (goal >= 0.9)",
             f"re-scan with a warm cache: {warm:.2f} s for {cached.cached} cached rows"]
    for n in sizes:
        m = mem[n]
        lines.append(f"pool {n:6d}: peak RSS {m['ru_maxrss_mib']:7.1f} MiB, tracemalloc peak "
                     f"{m['tracemalloc_peak_mib']:6.2f} MiB, {m['seconds']:.1f} s")
    lines.append(f"peak RSS {hi} vs {lo}: {mem[hi]['ru_maxrss_mib'] / mem[lo]['ru_maxrss_mib']:.3f}x")
    (args.out / "pool_overhead.md").write_text("# Pool-scoring overhead\n\n```\n" + "\n".join(lines) + "\n```\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
