#!/usr/bin/env python3
"""Key-press-to-screen-update latency of the TUI while the loop streams events.

The app runs headless under Textual's Pilot. Each sample: a `p` key event on the app's queue (the path a terminal key
takes from the driver) (swap the per-class plot between F1 and FN,
a real redraw), and time from sending the key to the first screen update the compositor hands to the driver after
the key's action ran (App._display; in a real terminal the bytes are written right there).

  python benchmarks/tui_latency.py                       # simulated heavy stream (default 1000 Progress/s)
  python benchmarks/tui_latency.py --rate 5000 --presses 200
  python benchmarks/tui_latency.py --train --config config/demo.yaml   # during a real training (a fresh run_dir!)

--train runs the real loop (al.core.machine.run, no --dry-run) on the config's run_dir, which must not hold a run yet,
and samples while the training step reports batches; it then stops the loop (the run stays resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from al.core.context import Listeners
from al.core.events import (  # noqa: E402
    EpochEnd,
        IterationStarted,
    Message,
    MetricsRow,
    Progress,
    RunStarted,
    StepStarted,
)
from al.frontends.tui.app import LoopApp  # noqa: E402


class ProbeApp(LoopApp):
    """LoopApp that timestamps the first screen update after each `p`."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.samples: list[float] = []
        self.t0: float | None = None
        self.handled = False

    def action_toggle_class_plot(self) -> None:
        super().action_toggle_class_plot()
        self.handled = True

    def on_data_table_row_highlighted(self, event) -> None:  # --key cursor: the metrics table's cursor moved
        if self.t0 is not None:
            self.handled = True

    def _display(self, screen, renderable) -> None:
        if self.handled and renderable is not None and self.t0 is not None:
            self.samples.append(time.perf_counter() - self.t0)
            self.handled, self.t0 = False, None
        super()._display(screen, renderable)


def _row(k: int) -> dict:
    names = [f"class_{i}" for i in range(8)]
    return {"iteration": k, "precision": 0.5, "recall": 0.4, "f1": min(0.3 + 0.05 * k, 1), "map50": 0.4,
            "map50_95": 0.2, "tp": 100, "fp": 20, "fn": 50, "train_f1": 0.5, "labelled_images": 100 + k,
            "dataset_version": f"v{k:09d}", "per_class_f1": json.dumps({n: random.random() for n in names}),
            "per_class_fn": json.dumps({n: random.randint(0, 50) for n in names}), "converged": 0,
            "reason": "Continue training"}


def sim_runner(rate: float, stats: dict, rows_every: float = 10.0):
    """A runner thread that floods the bus like a busy training step (far above the real 2 batch updates/s)."""

    def runner(ctx) -> int:
        bus = ctx.bus
        bus.emit(IterationStarted(0))
        bus.emit(StepStarted(0, "retrain", "Retraining model"))
        for k in range(4):  # some history for the table and plots
            bus.emit(MetricsRow(_row(k)))
        n, k, t_start = 0, 4, time.perf_counter()
        last_msg = last_epoch = last_row = t_start
        while not ctx.ui.stop_requested():
            now = time.perf_counter()
            due = int((now - t_start) * rate) - n
            for _ in range(max(due, 0)):
                n += 1
                bus.emit(Progress("retrain", n % 500 + 1, 500, "batches", f"epoch {n // 500 + 1}/100"))
            if now - last_msg > 0.02:
                bus.emit(Message(f"[TRAIN] line {n}: loss={random.random():.4f}"))
                last_msg = now
            if now - last_epoch > 0.5:
                bus.emit(EpochEnd(n // 500 + 1, 100, {"metrics/mAP50(B)": random.random()}))
                last_epoch = now
            if now - last_row > rows_every:  # a new metrics row: table and both plots redraw
                bus.emit(MetricsRow(_row(k)))
                k += 1
                last_row = now
            time.sleep(0.001)
        stats["events"] = n
        stats["seconds"] = time.perf_counter() - t_start
        return 130

    return runner


async def drive(app: ProbeApp, presses: int, ready, gap: tuple[float, float], key: str = "p") -> None:
    from al.frontends.tui.widgets import MetricsTable

    async with app.run_test(size=(120, 40)) as pilot:
        end = time.monotonic() + 600
        while not ready():
            if time.monotonic() > end:
                raise SystemExit("the loop never reached the state to measure in")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        if key == "cursor":
            table = app.query_one(MetricsTable)
            while table.row_count < 3:
                await asyncio.sleep(0.1)
            table.focus()
            await pilot.pause()
        for i in range(presses):
            await asyncio.sleep(random.uniform(*gap))
            n = len(app.samples)
            app.t0 = time.perf_counter()
            # a Key message on the app's queue, as the terminal driver posts it
            app.simulate_key("p" if key == "p" else ("up" if i % 2 else "down"))
            t_end = time.monotonic() + 5
            while len(app.samples) == n and time.monotonic() < t_end:
                await asyncio.sleep(0.001)
        app.begin_stop()
        await asyncio.sleep(0.2)


def report(samples: list[float], label: str) -> None:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        print(f"{label}: no samples")
        return
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    print(f"{label}: n={len(ms)}  median={statistics.median(ms):.1f} ms  p95={p95:.1f} ms  max={ms[-1]:.1f} ms")


def make_ctx(tmp: Path):
    import yaml

    from al.core.config import load_config
    from al.core.context import Context, Options, RunState
    from al.core.paths import RunPaths

    cfg_file = tmp / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"run_dir": "run", "dataset": {"data_yaml": "data.yaml"}}))
    cfg = load_config(cfg_file, check_files=False)
    return Context(cfg=cfg, paths=RunPaths(cfg.run_dir), state=RunState(iteration=0, step="retrain", baseline=False),
                   opts=Options(interactive=True), bus=Listeners())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presses", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1000.0, help="simulated Progress events per second")
    ap.add_argument("--rows-every", type=float, default=10.0, help="seconds between simulated metrics rows")
    ap.add_argument("--key", choices=("p", "cursor"), default="p",
                    help="p: swap the per-class plot (a plot redraw); cursor: move the metrics table's cursor")
    ap.add_argument("--train", action="store_true", help="measure during a real training run (needs --config)")
    ap.add_argument("--config", type=Path)
    args = ap.parse_args()
    random.seed(0)

    if not args.train:
        stats: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            ctx = make_ctx(Path(tmp))
            start = RunStarted("latency benchmark", tmp, 0, "retrain", False, False)
            app = ProbeApp(ctx, start, runner=sim_runner(args.rate, stats, args.rows_every))
            asyncio.run(drive(app, args.presses, lambda: app.events_seen > 100, (0.02, 0.1), args.key))
        rate = stats.get("events", 0) / max(stats.get("seconds", 1), 1e-9)
        report(app.samples, f"key {args.key}, simulated stream ({rate:.0f} Progress events/s emitted, "
                            f"{app.events_seen} UI updates)")
        return 0

    if args.config is None:
        ap.error("--train needs --config")
    from al.app.api import open_run
    from al.cli import _setup_logging
    from al.core.config import load_config
    from al.core.paths import RunPaths
    from al.yolo.detector import prepare_offline

    cfg = load_config(args.config)
    paths = RunPaths(cfg.run_dir)
    if paths.state.exists():
        raise SystemExit(f"{paths.state} exists: point run_dir at a fresh folder for the benchmark")
    paths.root.mkdir(parents=True, exist_ok=True)
    prepare_offline(cfg.run_dir / ".yolo_config")
    _setup_logging(paths.events_log)
    bus = Listeners()
    training = threading.Event()
    bus.subscribe(lambda ev: training.set() if isinstance(ev, Progress) and ev.unit == "batches" else None)
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=False, auto=True, ui=bus)
    start = RunStarted("latency benchmark (training)", str(paths.root), 0, ctx.state.step, False, True)
    app = ProbeApp(ctx, start)
    asyncio.run(drive(app, args.presses, training.is_set, (0.05, 0.2), "p"))
    if app._thread is not None:
        app._thread.join(timeout=60)
    report(app.samples, f"key p, during training ({app.events_seen} UI updates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
