"""Step 6: train the baseline (iteration 0) or fine-tune iteration k's model into iteration k+1's, in a child
process."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from al.core import store
from al.core.context import StepContext
from al.core.errors import Interrupted, StepError
from al.core.events import EpochEnd, Message, Progress
from al.core.paths import good_copy
from al.yolo import checkpoints
from al.yolo.train_worker import EXIT_IO


def target_iteration(ctx: StepContext) -> int:
    """The iteration whose weights this retrain produces."""
    return 0 if ctx.state.baseline else ctx.iteration + 1


def train_spec(ctx: StepContext, target: int) -> dict:
    tc, paths = ctx.env.cfg.training, ctx.env.paths
    baseline = target == 0
    return {
        "model": ctx.env.cfg.model.baseline if baseline else str(paths.best(target - 1)),
        "data": str(paths.dataset_yaml(target)),
        "epochs": tc.epochs_base if baseline else tc.epochs_increment,
        "lr0": tc.base_lr * tc.lr_decay_factor ** target,
        "imgsz": tc.imgsz, "batch": tc.batch, "patience": tc.patience, "optimizer": tc.optimizer,
        "device": tc.device, "workers": tc.workers, "seed": tc.seed, "extra": tc.extra,
        "project": str(paths.iterations), "name": paths.iteration(target).name,
        "yolo_config_dir": str(ctx.env.yolo_config_dir),
        "progress": str(paths.train_progress(target)),
    }


def _follow(ctx: StepContext, proc: subprocess.Popen, progress: Path, epochs: int) -> dict | None:
    """Relay the child's new progress lines as events until it exits; stop it if the user quits. Returns the
    child's io_error event, if it reported one."""
    pos = progress.stat().st_size if progress.exists() else 0  # a resumed training's old lines are history
    io_error = None
    while True:
        if ctx.ui.stop_requested():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise Interrupted("training stopped; --resume continues from the last saved epoch")
        if progress.exists():
            with progress.open() as fh:
                fh.seek(pos)
                for line in fh:
                    if not line.endswith("\n"):
                        break
                    pos += len(line.encode())
                    ev = json.loads(line)
                    if ev["event"] == "batch":
                        ctx.ui.emit(Progress("retrain", ev["batch"], ev["batches"], "batches",
                                              f"epoch {ev['epoch']}/{ev['epochs']}"))
                    elif ev["event"] == "epoch_end":
                        ctx.ui.emit(EpochEnd(ev["epoch"], ev["epochs"], ev.get("metrics", {})))
                        ctx.ui.emit(Progress("retrain", ev["epoch"], ev["epochs"], "epochs"))
                    elif ev["event"] == "resume":
                        ctx.ui.emit(Message(f"[TRAIN] Resuming interrupted training from {ev['checkpoint']}"))
                    elif ev["event"] == "io_error":
                        io_error = ev
        if proc.poll() is not None:
            return io_error
        time.sleep(0.2)


def _warn(ctx: StepContext, text: str) -> None:
    ctx.say(text, "warning")


def _source_model(ctx: StepContext, target: int) -> None:
    """Iteration target-1's best.pt, the model this retrain fine-tunes: verified, restored from its good copy
    when damaged, or a CheckpointError saying how to re-make it."""
    k = target - 1
    checkpoints.ensure(ctx.env.paths.best(k), f"Iteration {k}'s model (which this retrain fine-tunes)",
                       warn=lambda text: _warn(ctx, text), fix=checkpoints.remake_advice(ctx.env, k))


def _finished(ctx: StepContext, target: int, spec: dict) -> bool:
    """This very training finished before a crash (its result is recorded and its best.pt loads)."""
    paths = ctx.env.paths
    try:
        done = store.read_json(paths.train_result(target))
    except store.StoreError:
        return False
    if done.get("spec") != spec:
        return False
    t = checkpoints.trust(paths.best(target))
    if t.restored:
        _warn(ctx, f"[CHECKPOINT] WARNING: {paths.best(target)} was {t.problem}; restored the verified copy "
                   f"{good_copy(paths.best(target))}")
    return t.ok


def _resumable(ctx: StepContext, target: int) -> bool:
    """The interrupted training's last.pt and best.pt load, as they are or restored from the good copies the
    training child keeps (best.pt from last.pt when the kill came between Ultralytics' writes of a best epoch:
    checkpoints.trust_best); False, with a warning, when one is lost: the training then restarts from epoch 1."""
    last, best = ctx.env.paths.last(target), ctx.env.paths.best(target)
    for ck in (last, best):
        t = checkpoints.trust(ck) if ck == last else checkpoints.trust_best(best, last)
        if t.restored and t.source == last:
            _warn(ctx, f"[CHECKPOINT] WARNING: {ck} was {t.problem}; restored it from {last}, the same epoch (the "
                       f"training stopped between Ultralytics' writes of the two): the training resumes from there")
        elif t.restored:
            _warn(ctx, f"[CHECKPOINT] WARNING: {ck} was {t.problem}; restored the last verified copy "
                       f"{good_copy(ck)}: the training resumes from there")
        elif not t.ok:
            _warn(ctx, f"[CHECKPOINT] WARNING: {ck} is {t.problem} and has no verified copy; re-running "
                       f"iteration {target}'s training from its first epoch")
            return False
    return True


def _space_needed(ctx: StepContext, spec: dict, target: int) -> int:
    """Bytes a training needs free: last.pt and best.pt with their optimizer state, and the loop's verified copy
    of each (4 x the largest checkpoint seen; a source .pt without optimizer is about a fifth of one)."""
    sizes = [p.stat().st_size for p in ctx.env.paths.weights(target).glob("*.pt") if p.is_file()]
    src = Path(spec["model"])
    if src.suffix == ".pt" and src.is_file():
        sizes.append(src.stat().st_size * 5)
    return 4 * max(sizes, default=64 << 20)


def _io_failure(ctx: StepContext, spec: dict, target: int, ev: dict | None) -> store.StoreWriteError:
    """One line for a training stopped by a full disk or another I/O error: the path, the free space needed."""
    paths = ctx.env.paths
    need = _space_needed(ctx, spec, target)
    path = Path(ev["path"]) if ev and ev.get("path") else paths.weights(target)
    if ev:
        err = OSError(ev.get("errno"), ev.get("strerror") or "I/O error")
    else:  # the child could not even report it (its progress file is on the same disk): judge by free space
        free = shutil.disk_usage(paths.root).free
        err = OSError(errno.ENOSPC if free < need else errno.EIO,
                      os.strerror(errno.ENOSPC) if free < need else f"see {paths.training_log(target)}")
    return store.write_error(path, err, need=need, prefix=f"Training of iteration {target} stopped: ")


def _dry_run(ctx: StepContext, target: int, spec: dict) -> None:
    from al.yolo import detector

    paths = ctx.env.paths
    paths.weights(target).mkdir(parents=True, exist_ok=True)
    if target == 0:
        if spec["model"].endswith(".pt"):
            shutil.copyfile(spec["model"], paths.best(0))
        else:
            ver = store.read_json(paths.dataset_version(0) / "version.json")
            detector.build_untrained(spec["model"], list(ver["names"]), paths.best(0))
    else:
        shutil.copyfile(paths.best(target - 1), paths.best(target))
    checkpoints.keep(paths.best(target))
    store.write_text_atomic(paths.training_log(target), "dry-run: training skipped; weights copied\n")


def run(ctx: StepContext) -> str:
    paths = ctx.env.paths
    target = target_iteration(ctx)
    if not paths.dataset_yaml(target).is_file():
        raise StepError(f"Dataset version {target} missing ({paths.dataset_yaml(target)}); re-run review with "
                        f"--start-iteration {target}.")
    spec = train_spec(ctx, target)
    result_file = paths.train_result(target)
    if target > 0:
        _source_model(ctx, target)
    if result_file.is_file() and _finished(ctx, target, spec):  # finished before a crash, state not yet saved
        paths.last_good(target).unlink(missing_ok=True)  # the crash may have come before the finished run's cleanup
        return "next"
    if ctx.env.opts.dry_run:
        _dry_run(ctx, target, spec)
        store.write_json(result_file, {"spec": spec, "dry_run": True, "seconds": 0.0})
        return "next"

    prev = store.read_json(paths.train_spec(target)) if paths.train_spec(target).is_file() else None
    started = paths.last(target).is_file() or paths.last_good(target).is_file()
    resume = bool(prev and prev.get("spec") == spec and started and _resumable(ctx, target))
    if not resume:
        # a fresh training: earlier partial artefacts of this iteration would mislead Ultralytics and the reader
        shutil.rmtree(paths.weights(target), ignore_errors=True)
        paths.train_progress(target).unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)
    paths.iteration(target).mkdir(parents=True, exist_ok=True)
    store.write_json(paths.train_spec(target), {"spec": spec})
    what = "baseline" if target == 0 else f"fine-tune of iteration {target - 1}"
    ctx.ui.emit(Message(f"[TRAIN] {what}: {spec['epochs']} epochs, lr0={spec['lr0']:.6g}, imgsz={spec['imgsz']}, "
                         f"log: {paths.training_log(target)}"))
    t0 = time.time()
    import al

    # the child must import this same `al` package even when it is run from a checkout, not installed
    pkg_parent = str(Path(al.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [pkg_parent, os.environ.get("PYTHONPATH")]))}
    with paths.training_log(target).open("a") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'} =====\n")
        log.flush()
        spec_file = paths.iteration(target) / ".train_spec_run.json"
        store.write_text_atomic(spec_file, json.dumps({**spec, "resume": resume}))
        proc = subprocess.Popen([sys.executable, "-m", "al.yolo.train_worker", str(spec_file)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(paths.root))
        io_error = _follow(ctx, proc, paths.train_progress(target), spec["epochs"])
    if io_error or proc.returncode == EXIT_IO:
        raise _io_failure(ctx, spec, target, io_error)
    if proc.returncode != 0 or not paths.best(target).is_file():
        tail = paths.training_log(target).read_text(errors="replace").strip().splitlines()[-3:]
        raise StepError(f"Training failed (exit {proc.returncode}); see {paths.training_log(target)}. "
                        f"Last lines: {' | '.join(tail)}. Fix the cause, then run with --resume.")
    best = checkpoints.trust(paths.best(target))
    if best.restored:
        _warn(ctx, f"[CHECKPOINT] WARNING: {paths.best(target)} was {best.problem} after training; restored the "
                   f"verified copy of its best epoch {paths.best_good(target)}")
    if not best.ok:  # nothing to resume from: the next attempt trains from epoch 1
        shutil.rmtree(paths.weights(target), ignore_errors=True)
        raise StepError(f"Training of iteration {target} finished but {paths.best(target)} is {best.problem} and "
                        f"has no verified copy; --resume trains it again from its first epoch.")
    checkpoints.keep(paths.best(target))  # the final best.pt (optimizer stripped) is the good copy from now on
    secs = time.time() - t0
    store.write_json(result_file, {"spec": spec, "dry_run": False, "seconds": round(secs, 1),
                                   "best": str(paths.best(target))})
    paths.last_good(target).unlink(missing_ok=True)  # only a resumed training reads last.pt; this one is done
    ctx.ui.emit(Message(f"[TRAIN] Training complete in {secs:.0f} s: {paths.best(target)}"))
    return "next"
