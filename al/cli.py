"""Command line: `python al_loop.py --config config/al_config.yaml [--resume | --start-iteration N] ...`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="al_loop.py", description="Active-learning loop for Ultralytics YOLO detectors: "
                                "validate -> analyse -> converge -> extract -> review -> retrain -> track.",
                                epilog="Release the champion: al-loop release --config CFG --version v1.2.0 "
                                "[--name N] (al-loop release --help, docs/RELEASE.md). Measure label efficiency: "
                                "al-loop simulate --data data.yaml (al-loop simulate --help, docs/SIMULATE.md).")
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
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "release":
        return release_main(argv[1:])
    if argv and argv[0] == "simulate":
        return simulate_main(argv[1:])
    if argv and argv[0] == "label-studio":
        return label_studio_main(argv[1:])
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


def build_release_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="al-loop release", description="Bundle the run's champion as "
                                "releases/<version>/ and releases/<version>.zip: best.pt, a verified ONNX export, "
                                "the model card, data.yaml and SHA256SUMS (docs/RELEASE.md).")
    p.add_argument("--config", required=True, type=Path, help="the run's config YAML")
    p.add_argument("--version", required=True, help="release version, semver-like (v1.2.0); never overwritten")
    p.add_argument("--name", help="a one-line name for the model card")
    p.add_argument("--check-images", type=int, default=None, metavar="N",
                   help="images the ONNX check runs on (default 8; from the decision set, else validation)")
    return p


def release_main(argv: list[str]) -> int:
    """`al-loop release --config CFG --version V [--name N]`: exit 0 with the bundle written, 2 for a bad
    argument or config, 1 for a refused or failed release (nothing is left half-written)."""
    args = build_release_parser().parse_args(argv)
    from al.core.config import ConfigError, load_config
    from al.core.errors import UserError

    try:
        from al.app.release import check_version

        check_version(args.version)
        cfg = load_config(args.config)
    except (ConfigError, UserError) as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE
    from filelock import FileLock, Timeout

    from al.app.release import make_release
    from al.core.paths import RunPaths
    from al.yolo.detector import prepare_offline

    paths = RunPaths(cfg.run_dir)
    if not paths.root.is_dir():
        print(f"[ERROR] Run directory {paths.root} (run_dir of {args.config}) does not exist: run the loop first "
              f"(al-loop --config {args.config}).", file=sys.stderr)
        return EXIT_FAILED
    lock = FileLock(str(paths.lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        print(f"[ERROR] An al_loop is running on {paths.root} (lock {paths.lock}). Release when it has stopped: "
              f"the champion and the run tree may change under it.", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"[ERROR] Cannot lock {paths.lock}: {e.strerror or e}.", file=sys.stderr)
        return EXIT_FAILED
    try:
        prepare_offline(cfg.run_dir / ".yolo_config")
        extra = {} if args.check_images is None else {"check_images": args.check_images}
        rel = make_release(cfg, args.version, name=args.name, say=print, **extra)
    except (UserError, OSError) as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        lock.release()
    print(f"[RELEASE] bundle: {rel.folder} ({len(rel.files)} files; verify with: cd {rel.folder} && "
          f"sha256sum -c SHA256SUMS)")
    return 0


def build_label_studio_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="al-loop label-studio", description="Start a local Label Studio for the run "
                                "(review.backend: label_studio): installed in its own venv (.venv-label-studio), "
                                "data under <run_dir>/label_studio, bound to 127.0.0.1 at review.label_studio.url, "
                                "with a user and an API token (docs/REVIEW.md). Runs until Ctrl-C.")
    p.add_argument("--config", type=Path, help="the run's config YAML (its review.label_studio section)")
    p.add_argument("--setup", action="store_true", help="install Label Studio in .venv-label-studio first "
                   "(skipped when it is up to date); without --config, only that")
    return p


def label_studio_main(argv: list[str]) -> int:
    """`al-loop label-studio --config CFG [--setup]`: exit 0 after Ctrl-C, 2 for a bad argument or config, 1 when
    the server cannot be installed or started."""
    args = build_label_studio_parser().parse_args(argv)
    from al.app import label_studio as ls
    from al.core.config import ConfigError, load_config

    if args.config is None and not args.setup:
        print("al-loop label-studio: error: --config is required (or --setup alone to install it)", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(args.config, check_files=False) if args.config is not None else None
    except ConfigError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.setup:
            ls.setup()
        if cfg is None:
            return 0
        from al.core.paths import RunPaths

        lcfg = cfg.review.label_studio
        ls.bind_address(lcfg.url)
        creds = ls.credentials(lcfg)
        server = ls.start(lcfg.url, RunPaths(cfg.run_dir).label_studio_data, creds, lcfg)
    except ls.LabelStudioError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE if "review.label_studio.url" in str(e) else EXIT_FAILED
    stopping = threading.Event()

    def on_term(signum, frame):
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background, where SIGINT comes ignored
    try:
        print(f"[LABEL STUDIO] starting at {lcfg.url} (data: {server.data_dir}; log: {server.log})"
              + ("; the first start prepares the database, which takes minutes" if server.first_start else ""),
              flush=True)
        took = ls.wait(server)
        print(f"[LABEL STUDIO] up at {lcfg.url} after {took:.0f} s", flush=True)
        _label_studio_login(lcfg, creds, server.first_start)
        print("[LABEL STUDIO] running; Ctrl-C stops it", flush=True)
        server.proc.wait()
        if not stopping.is_set():
            print(f"[ERROR] Label Studio exited (code {server.proc.returncode}); the end of {server.log}:\n"
                  f"{server.log_tail()}", file=sys.stderr)
            return EXIT_FAILED
    except ls.LabelStudioError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("[LABEL STUDIO] stopped", flush=True)
    return 0


def _label_studio_login(lcfg, creds, first_start: bool) -> None:
    """Say how to log in and how the loop gets the token: secrets are shown only on a terminal, never logged."""
    env = lcfg.api_key_env
    tty = sys.stdout.isatty()
    if creds.token_generated and lcfg.secrets_file is not None:
        print(f"[LABEL STUDIO] API token generated into {lcfg.secrets_file} (mode 600); the loop reads it there")
    elif creds.token_generated:
        if tty:
            print(f"[LABEL STUDIO] API token generated; in the loop's shell: export {env}={creds.token}")
        else:
            print(f"[LABEL STUDIO] API token generated but not shown (the output is not a terminal); set {env} "
                  f"before starting the server, or name review.label_studio.secrets_file")
        if not first_start:
            print(f"[LABEL STUDIO] WARNING: the server keeps the token of its first start; a new one is not "
                  f"applied. Start it with {env} set to that token (or use review.label_studio.secrets_file).")
    else:
        print(f"[LABEL STUDIO] API token: the one in {env if os.environ.get(env) else lcfg.secrets_file}")
    if first_start:
        if not creds.password_generated:
            shown = "the password in LABEL_STUDIO_PASSWORD"
        else:
            shown = creds.password if tty else "(generated, not shown: the output is not a terminal; set " \
                                               "LABEL_STUDIO_PASSWORD, or label-studio reset_password)"
        print(f"[LABEL STUDIO] browser login: {creds.username} / {shown}")
    else:
        print(f"[LABEL STUDIO] browser login: {creds.username} with the password of the first start "
              f"(forgotten: label-studio reset_password --username {creds.username})")


def build_simulate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="al-loop simulate", description="Measure how many labels (annotator edits, "
                                "boxes, images) each selection strategy needs on a fully labelled data.yaml: seed "
                                "set and pool drawn from its train split, pool labels hidden and revealed by a "
                                "simulated annotator, every arm through the loop from one shared baseline per seed, "
                                "against an upper bound trained on the whole pool (docs/SIMULATE.md). Resumable: run "
                                "the same command again after a kill.")
    p.add_argument("--data", required=True, type=Path, help="a fully labelled Ultralytics data.yaml with train, val "
                   "and test splits")
    p.add_argument("--out", type=Path, default=Path("simulation"), help="work and results folder (default: "
                   "./simulation); the same --out continues an interrupted simulation")
    p.add_argument("--arms", default="random,entropy,combined", help="strategies, comma-separated: random, entropy, "
                   "combined, most_boxes, diversity; random is the reference (default: random,entropy,combined)")
    p.add_argument("--seeds", default="0-7", help="tuning seeds (ranges allowed): each draws its own seed set and "
                   "pool and trains its own baseline and upper bound (default: 0-7)")
    p.add_argument("--confirm-seeds", default="", help="fresh seeds that chose nothing, reported apart: where a "
                   "default is confirmed (e.g. 8-15; default: none)")
    p.add_argument("--protocol", default="converged", help="converged (every point trained from the same start "
                   "until its validation fitness stops improving; default), matched (the same training batches from "
                   "the baseline) and/or chained (each round fine-tunes the last, as the loop does)")
    p.add_argument("--rounds", type=int, default=3, help="selection rounds per arm (default: 3)")
    p.add_argument("--budget", type=int, default=32, help="labels bought per round (default: 32)")
    p.add_argument("--budgets", default="", help="per-round budgets instead, e.g. 16,32,64,128 (rounds that grow)")
    p.add_argument("--budget-unit", choices=("images", "boxes"), default="images",
                   help="what --budget counts: images, or boxes (picks in rank order until the boxes are spent)")
    p.add_argument("--seed-set", type=int, default=32, help="initially labelled images drawn from train (default 32)")
    p.add_argument("--pool", type=int, default=None, help="pool images drawn from the rest of train (default: 300, "
                   "or all the rest when fewer; 0 = all the rest)")
    p.add_argument("--overlapping", action="store_true", help="draw every seed from the whole train split (default: "
                   "disjoint blocks of it where it is large enough, so the seeds are independent samples)")
    p.add_argument("--seed-list", type=Path, help="text file listing the seed-set images (instead of drawing them)")
    p.add_argument("--pool-list", type=Path, help="text file listing the pool images (instead of drawing them)")
    p.add_argument("--model", default="yolov8n.yaml", help="the start: a local .pt (a pretrained detector, as users "
                   "fine-tune) or yolov8n.yaml, yolo11n.yaml, yolo26n.yaml (from scratch; default yolov8n.yaml)")
    p.add_argument("--imgsz", type=int, default=96, help="train and inference size, a multiple of 32 (default 96)")
    p.add_argument("--batch", type=int, default=16, help="training batch size (default 16)")
    p.add_argument("--max-epochs", type=int, default=60, help="converged: the most epochs a point trains (default 60)")
    p.add_argument("--patience", type=int, default=10, help="converged: a point stops after this many epochs without "
                   "a better validation fitness (default 10)")
    p.add_argument("--check-seeds", type=int, default=2, help="converged: on this many tuning seeds, random's first "
                   "and last points are retrained with the same and with twice the budget: the retraining noise and "
                   "the compute check (default 2; 0: no check, and no verdict can say the points converged)")
    p.add_argument("--no-upper-bound", action="store_true", help="skip the upper bound (then no labels-to-target)")
    p.add_argument("--epochs-base", type=int, default=100, help="matched, chained: baseline epochs (default 100)")
    p.add_argument("--epochs-round", type=int, default=10, help="chained: epochs per round (default 10)")
    p.add_argument("--matched-steps", type=int, default=480, help="matched: training batches per point (default 480; "
                   "0: --epochs-round epochs of the seed set)")
    p.add_argument("--lr", type=float, default=0.002, help="learning rate (default 0.002)")
    p.add_argument("--epoch-val", action="store_true", help="matched, chained: validate every epoch and keep the best "
                   "epoch's weights (converged always does)")
    p.add_argument("--device", default="cpu", help="training device: cpu, 0, ... (default cpu)")
    p.add_argument("--jobs", type=int, default=0, help="units run side by side, each in a process (default 0: auto, "
                   "cores // (cores - 1) on a CPU, as an Ultralytics training takes cores - 1 threads: 2 on a 2-core "
                   "machine; 1 on a GPU)")
    return p


def simulate_main(argv: list[str]) -> int:
    """`al-loop simulate --data D ...`: exit 0 with the results written, 2 for bad input, 1 for a failed unit."""
    args = build_simulate_parser().parse_args(argv)
    from al.core.errors import UserError
    from al.sim import ArmFailed, SimSpec, SimulationError, auto_jobs, parse_list, simulate

    try:
        spec = SimSpec(data=args.data, out=args.out, arms=parse_list(args.arms, "arms"),
                       seeds=parse_list(args.seeds, "seeds", int),
                       confirm_seeds=parse_list(args.confirm_seeds, "confirm-seeds", int) if args.confirm_seeds
                       else [],
                       protocols=parse_list(args.protocol, "protocol"),
                       rounds=args.rounds, budget=args.budget,
                       budgets=parse_list(args.budgets, "budgets", int) if args.budgets else None,
                       budget_unit=args.budget_unit, seed_set=args.seed_set,
                       pool=args.pool, disjoint=not args.overlapping, seed_list=args.seed_list,
                       pool_list=args.pool_list, model=args.model, imgsz=args.imgsz, batch=args.batch,
                       max_epochs=args.max_epochs, patience=args.patience, check_seeds=args.check_seeds,
                       upper_bound=not args.no_upper_bound, epochs_base=args.epochs_base,
                       epochs_round=args.epochs_round, matched_steps=args.matched_steps or None, lr=args.lr,
                       epoch_val=args.epoch_val, device=args.device, jobs=args.jobs or auto_jobs(args.device))
        simulate(spec, say=lambda text: print(text, flush=True))
    except ArmFailed as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_FAILED
    except SimulationError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as e:  # the dataset's own errors (a bad data.yaml) and the loop's
        print(f"[ERROR] {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("[SIMULATE] interrupted; run the same command again to continue", file=sys.stderr)
        return EXIT_FAILED
    return 0


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
