"""Command line: `python al_loop.py --config config/al_config.yaml [--resume | --start-iteration N] ...`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="al_loop.py", description="Active-learning loop for Ultralytics YOLO detectors: "
                                "validate -> analyse -> converge -> extract -> review -> retrain -> track.")
    p.add_argument("--config", required=True, type=Path, help="config YAML (e.g. config/al_config.yaml)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run from its first unfinished step")
    g.add_argument("--start-iteration", type=int, metavar="N",
                   help="re-run from iteration N with iteration N-1's best weights (earlier iterations kept)")
    g.add_argument("--repair", action="store_true", help="rebuild a corrupt or lost run_state.json from the run "
                   "tree (which artefacts exist and load), say what was inferred, and stop; then use --resume")
    p.add_argument("--dry-run", action="store_true", help="run every step but skip training (checks config, "
                   "paths and dataset)")
    p.add_argument("--auto", action="store_true", help="replace human review with pseudo-labels (recorded as such)")
    p.add_argument("--headless", action="store_true", help="plain log lines, no TUI (automatic without a TTY)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.start_iteration is not None and args.start_iteration < 0:
        print(f"al_loop.py: error: --start-iteration {args.start_iteration}: must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    from al.core.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE
    from filelock import FileLock, Timeout

    from al.app.api import interrupt, open_run, run_loop
    from al.app.repair import repair_run
    from al.app.session import RunError
    from al.core.context import Tee
    from al.core.events import Message, RunStarted
    from al.core.paths import RunPaths
    from al.core.store import StoreError, StoreWriteError, io_error_text
    from al.data.dataset import DatasetError
    from al.frontends.console import ConsoleFrontend
    from al.frontends.logfile import LogFile
    from al.yolo.detector import prepare_offline

    paths = RunPaths(cfg.run_dir)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"[ERROR] {args.config}: key 'run_dir' = {str(cfg.run_dir)!r}: cannot create it ({e.strerror}).",
              file=sys.stderr)
        return EXIT_USAGE
    def io_failed(e: OSError, log=None) -> int:
        """A write of the run directory failed before or while opening the run: one line, exit 1."""
        text = str(e) if isinstance(e, StoreWriteError) else io_error_text(e.filename or paths.root, e)
        if log is not None:
            log(Message(f"[ERROR] {text}", "error"))
        print(f"[ERROR] {text} Then run the same command again.", file=sys.stderr)
        return EXIT_FAILED

    lock = FileLock(str(paths.lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        print(f"[ERROR] Another al_loop is already running on {paths.root} (lock {paths.lock}). Wait for it to "
              f"finish or stop it; two loops on one run directory would corrupt it.", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a read-only run directory: the lock file cannot be created
        return io_failed(e)
    logfile = None
    try:
        try:
            prepare_offline(cfg.run_dir / ".yolo_config")
            logfile = LogFile(paths.events_log)
        except OSError as e:
            return io_failed(e)
        tui = not args.headless and sys.stdout.isatty() and sys.stdin.isatty()
        if tui:
            try:
                from al.frontends.tui.app import run_tui
            except ImportError:
                tui = False
        console = ConsoleFrontend(interactive=sys.stdin.isatty())
        early = Buffer()  # what opening the run says reaches the TUI once it is up
        try:
            if args.repair:
                repair_run(cfg, ui=Tee(console, logfile))
                return 0
            ctx = open_run(cfg, resume=args.resume, start_iteration=args.start_iteration, dry_run=args.dry_run,
                           auto=args.auto, ui=Tee(early if tui else console, logfile))
        except OSError as e:  # StoreWriteError included: a full disk or a read-only folder
            return io_failed(e, logfile)
        except (RunError, DatasetError, StoreError) as e:
            logfile(Message(f"[ERROR] {e}", "error"))
            print(f"[ERROR] {e}", file=sys.stderr)
            return EXIT_USAGE
        title = f"ACTIVE LEARNING LOOP - {cfg.model.baseline} ({cfg.model.type})"
        start = RunStarted(title, str(paths.root), ctx.state.iteration, ctx.state.current_step, ctx.env.opts.dry_run,
                           ctx.env.opts.auto)
        if tui:
            return run_tui(ctx, start, sinks=[logfile], early=early.events)
        ctx.ui.emit(start)

        def on_term(signum, frame):  # SIGTERM: stop at the next safe point, leaving a resumable state
            console.request_stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        try:
            return run_loop(ctx)
        except KeyboardInterrupt:
            console.request_stop()
            return interrupt(ctx)
    finally:
        if logfile is not None:
            logfile.close()
        lock.release()


class Buffer:
    """A frontend that keeps events until the real one (the TUI) is up."""

    def __init__(self) -> None:
        self.events: list = []

    def emit(self, ev) -> None:
        self.events.append(ev)

    def stop_requested(self) -> bool:
        return False

    def wait_for_review(self, info: dict) -> bool:
        return False


if __name__ == "__main__":
    sys.exit(main())
