"""Command line: `python al_loop.py --config config/al_config.yaml [--resume | --start-iteration N] ...`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="al_loop.py", description="Active-learning loop for Ultralytics YOLO detectors: "
                                "validate -> analyse -> converge -> extract -> review -> retrain -> track.")
    p.add_argument("--config", required=True, type=Path, help="config YAML (e.g. config/al_config.yaml)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run from its first unfinished step")
    g.add_argument("--start-iteration", type=int, metavar="N",
                   help="re-run from iteration N with iteration N-1's best weights (earlier iterations kept)")
    p.add_argument("--dry-run", action="store_true", help="run every step but skip training (checks config, "
                   "paths and dataset)")
    p.add_argument("--auto", action="store_true", help="replace human review with pseudo-labels (recorded as such)")
    p.add_argument("--headless", action="store_true", help="plain log lines, no TUI (automatic without a TTY)")
    return p


def _setup_logging(log_file: Path) -> logging.Handler:
    """Send the 'al' logger to the run's log file (removed again when main returns)."""
    log = logging.getLogger("al")
    log.setLevel(logging.INFO)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(log_file, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    return fh


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.start_iteration is not None and args.start_iteration < 0:
        print(f"al_loop.py: error: --start-iteration {args.start_iteration}: must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    from al.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE
    from filelock import FileLock, Timeout

    from al.console import ConsolePrinter, wait_for_enter
    from al.dataset import DatasetError
    from al.detector import prepare_offline
    from al.events import EventBus, RunStarted
    from al.paths import RunPaths
    from al.session import RunError, open_run
    from al.store import StoreError

    paths = RunPaths(cfg.run_dir)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"[ERROR] {args.config}: key 'run_dir' = {str(cfg.run_dir)!r}: cannot create it ({e.strerror}).",
              file=sys.stderr)
        return EXIT_USAGE
    lock = FileLock(str(paths.lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        print(f"[ERROR] Another al_loop is already running on {paths.root} (lock {paths.lock}). Wait for it to "
              f"finish or stop it; two loops on one run directory would corrupt it.", file=sys.stderr)
        return EXIT_USAGE
    handler = None
    try:
        prepare_offline(cfg.run_dir / ".yolo_config")
        handler = _setup_logging(paths.events_log)
        tui = not args.headless and sys.stdout.isatty() and sys.stdin.isatty()
        interactive = sys.stdin.isatty()
        bus = EventBus()
        if not tui:
            bus.subscribe(ConsolePrinter())
        try:
            ctx = open_run(cfg, resume=args.resume, start_iteration=args.start_iteration, dry_run=args.dry_run,
                           auto=args.auto, interactive=interactive, bus=bus)
        except (RunError, DatasetError, StoreError) as e:
            print(f"[ERROR] {e}", file=sys.stderr)
            return EXIT_USAGE
        title = f"ACTIVE LEARNING LOOP - {cfg.model.baseline} ({cfg.model.type})"
        start = RunStarted(title, str(paths.root), ctx.state.iteration, ctx.state.step, ctx.opts.dry_run,
                           ctx.opts.auto)
        if tui:
            try:
                from al.tui.app import run_tui
            except ImportError:
                tui = False
                bus.subscribe(ConsolePrinter())
            else:
                return run_tui(ctx, start)
        ctx.wait_for_review = wait_for_enter if interactive else None
        bus.emit(start)

        def on_term(signum, frame):  # SIGTERM: stop at the next safe point, leaving a resumable state
            ctx.stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        from al.machine import run

        try:
            return run(ctx)
        except KeyboardInterrupt:
            ctx.stop.set()
            from al.machine import _interrupted

            return _interrupted(ctx, ctx.state.step)
    finally:
        if handler is not None:
            logging.getLogger("al").removeHandler(handler)
            handler.close()
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
