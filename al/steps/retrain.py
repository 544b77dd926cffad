"""Step 6: train the baseline (iteration 0) or fine-tune iteration k's model into iteration k+1's, in a child
process."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from al.core import prompts, store
from al.core.context import StepContext
from al.core.errors import Interrupted, RedoError, StepError
from al.core.events import EpochEnd, Message, Progress
from al.core.paths import good_copy
from al.data import hashing
from al.steps import gate
from al.yolo import checkpoints, ddp
from al.yolo.train_worker import EXIT_IO


def target_iteration(ctx: StepContext) -> int:
    """The iteration whose weights this retrain produces."""
    return 0 if ctx.state.baseline else ctx.iteration + 1


def source_iteration(ctx: StepContext, target: int) -> int:
    """The iteration whose best.pt the training of iteration `target` >= 1 fine-tunes: with gate.fine_tune_from
    champion, the champion after iteration target-1's gate (promotion.json; a rejected challenger is kept but not
    built on); with latest, iteration target-1; with training.schedule matched, the baseline (iteration 0)."""
    if ctx.env.cfg.training.schedule == "matched":
        return 0
    if ctx.env.cfg.gate.fine_tune_from == "latest":
        return target - 1
    return gate.champion_of(ctx.env.paths, target - 1)


def start_weights(ctx: StepContext) -> Path | None:
    """training.schedule converged: the weights every fine-tune starts from when model.baseline is a .pt (a
    pretrained detector); None: they start from the baseline (iteration 0's best.pt)."""
    if ctx.env.cfg.training.schedule == "converged" and ctx.env.cfg.model.baseline.endswith(".pt"):
        return Path(ctx.env.cfg.model.baseline)
    return None


def batches_per_epoch(ctx: StepContext, version: int) -> int:
    """Training batches of one epoch on dataset version `version` (Ultralytics keeps the last, partial batch)."""
    counts = store.read_json(ctx.env.paths.dataset_version(version) / "version.json", required=("counts",))["counts"]
    return max(1, math.ceil(int(counts["train"]) / ctx.env.cfg.training.batch))


def matched_steps(ctx: StepContext) -> int:
    """training.schedule matched: the batches of every fine-tune (training.matched_steps, or epochs_increment
    epochs of iteration 0's training set)."""
    tc = ctx.env.cfg.training
    return tc.matched_steps or tc.epochs_increment * batches_per_epoch(ctx, 0)


def fine_tune_epochs(ctx: StepContext, target: int) -> int:
    """Epochs of the fine-tune that makes iteration `target` >= 1: epochs_increment (chained), or as many as
    matched_steps batches take on its training set, rounded up (matched)."""
    tc = ctx.env.cfg.training
    if tc.schedule != "matched":
        return tc.epochs_increment  # converged: the cap; early stopping (patience) ends it sooner
    return max(1, math.ceil(matched_steps(ctx) / batches_per_epoch(ctx, target)))


def train_spec(ctx: StepContext, target: int) -> dict:
    tc, paths = ctx.env.cfg.training, ctx.env.paths
    baseline = target == 0
    start = start_weights(ctx)
    if baseline:
        model = ctx.env.cfg.model.baseline
    else:
        model = str(start) if start is not None else str(paths.best(source_iteration(ctx, target)))
    return {
        "model": model,
        "data": str(paths.dataset_yaml(target)),
        "epochs": tc.epochs_base if baseline else fine_tune_epochs(ctx, target),
        "lr0": tc.base_lr * tc.lr_decay_factor ** target,
        "imgsz": tc.imgsz, "batch": tc.batch, "patience": tc.patience, "optimizer": tc.optimizer,
        "device": tc.device, "workers": tc.workers, "seed": tc.seed, "extra": tc.extra,
        "project": str(paths.iterations), "name": paths.iteration(target).name,
        "yolo_config_dir": str(ctx.env.yolo_config_dir),
        "progress": str(paths.train_progress(target)),
        **({"yoloe": y} if (y := yoloe_spec(ctx, target)) else {}),
    }


def yoloe_spec(ctx: StepContext, target: int) -> dict | None:
    """With model.target, a training of iteration target >= 1 is a YOLOE fine-tune: the target model, the local
    text encoder and the class prompts of prompt version target-1 (prompt_versions/prompts_iteration_NN.json,
    written by analyze and edited during the review pause). The texts are part of the spec, so an edited prompt
    never resumes a training started with the old one."""
    cfg, paths = ctx.env.cfg, ctx.env.paths
    if cfg.model.target is None or target == 0:
        return None
    names = list(store.read_json(paths.dataset_version(target) / "version.json")["names"])
    version = prompts.load_version(paths.prompts(target - 1), names)
    return {"target": cfg.model.target, "text_encoder": cfg.model.text_encoder, "names": names,
            "prompt_file": version["file"], "prompt_version": target - 1, "prompts": version["used"],
            "prompts_from_name": version["from_name"], "prompt_digest": version["digest"],
            "start": str(paths.yoloe_start(target)), "report": str(paths.yoloe_report(target))}


def _yoloe_result(spec: dict) -> dict:
    """The YOLOE start model's report (source, what came from the baseline, prompts, encoder) for train_result."""
    y = spec.get("yoloe")
    if not y or not Path(y["report"]).is_file():
        return {}
    return {"yoloe": store.read_json(Path(y["report"]))}


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
    """The best.pt this retrain fine-tunes (source_iteration: the champion or iteration target-1's): verified,
    restored from its good copy when damaged, or a CheckpointError saying how to re-make it."""
    start = start_weights(ctx)
    if start is not None:
        why = checkpoints.problem(start)
        if why is not None:
            raise StepError(f"{start} (model.baseline, the start of every converged fine-tune) is {why}; restore "
                            f"the file or point model.baseline at a loadable .pt")
        return
    k = source_iteration(ctx, target)
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
    elif spec.get("yoloe"):  # build the prompted YOLOE start model (encoder, transfer, prompts) as if to train it
        from al.yolo import yoloe

        y = spec["yoloe"]
        report = yoloe.prepare_start(Path(spec["model"]), y["target"], y["names"], y["prompts"],
                                     yoloe.build_encoder(y["text_encoder"], y["target"]), Path(y["start"]))
        yoloe.write_report(Path(y["report"]), report)
        shutil.copyfile(y["start"], paths.best(target))
    else:
        shutil.copyfile(spec["model"], paths.best(target))
    checkpoints.keep(paths.best(target))
    store.write_text_atomic(paths.training_log(target), "dry-run: training skipped; weights copied\n")


def _adopt(ctx: StepContext, spec: dict) -> None:
    """model.initial_weights: the given checkpoint becomes iteration 0's model without a training; its content hash
    is part of the recorded spec, so a changed file is adopted again rather than taken for the old one."""
    src = Path(ctx.env.cfg.model.initial_weights or "")
    paths = ctx.env.paths
    why = checkpoints.problem(src)
    if why is not None:
        raise StepError(f"{src} (model.initial_weights) is {why}; restore the file or point "
                        f"model.initial_weights at a loadable .pt")
    digest = spec["sha1"]
    paths.weights(0).mkdir(parents=True, exist_ok=True)
    store.write_bytes_atomic(paths.best(0), src.read_bytes())
    checkpoints.keep(paths.best(0))
    store.write_json(paths.train_result(0), {"spec": spec, "dry_run": ctx.env.opts.dry_run, "seconds": 0.0,
                                             "best": str(paths.best(0)), "adopted": str(src)})
    ctx.ui.emit(Message(f"[TRAIN] baseline adopted from {src} (model.initial_weights, sha1 {digest[:12]}); "
                         f"no training"))


def run(ctx: StepContext) -> str:
    paths = ctx.env.paths
    target = target_iteration(ctx)
    if not paths.dataset_yaml(target).is_file():
        raise RedoError(f"Dataset version {target} missing ({paths.dataset_yaml(target)}); re-run review with "
                        f"--start-iteration {target}.")
    spec = train_spec(ctx, target)
    if target == 0 and ctx.env.cfg.model.initial_weights is not None:
        src = Path(ctx.env.cfg.model.initial_weights)
        spec = {**spec, "model": str(src), "adopt": True, "sha1": hashing.digest(src) if src.is_file() else None}
        if paths.train_result(0).is_file() and _finished(ctx, 0, spec):
            return "next"
        _adopt(ctx, spec)
        return "next"
    if spec.get("yoloe"):
        y = spec["yoloe"]
        prompts.record_use(paths.prompt_history, y["prompt_version"], target,
                           {"file": y["prompt_file"], "texts": dict(zip(y["names"], y["prompts"])),
                            "used": y["prompts"], "digest": y["prompt_digest"], "from_name": y["prompts_from_name"]})
    result_file = paths.train_result(target)
    if target > 0:
        _source_model(ctx, target)
    if result_file.is_file() and _finished(ctx, target, spec):  # finished before a crash, state not yet saved
        paths.last_good(target).unlink(missing_ok=True)  # the crash may have come before the finished run's cleanup
        return "next"
    if ctx.env.opts.dry_run:
        _dry_run(ctx, target, spec)
        store.write_json(result_file, {"spec": spec, "dry_run": True, "seconds": 0.0, **_yoloe_result(spec)})
        return "next"
    try:  # a device list this machine lacks fails here, before anything trains (not after Ultralytics' set-up)
        ddp.check_devices(ctx.env.cfg.training.device)
    except ddp.DeviceError as e:
        raise StepError(f"{ctx.env.cfg.source_path}: {e}") from None

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
    what = "baseline" if target == 0 else f"fine-tune of iteration {source_iteration(ctx, target)}"
    if target > 0 and start_weights(ctx) is not None:
        what = f"fine-tune of {Path(spec['model']).name} (training.schedule converged: from the start weights)"
    if ctx.env.cfg.training.schedule == "converged":
        what += f" until the validation fitness stops improving for {spec['patience']} epochs"
    elif target > 0 and ctx.env.cfg.training.schedule == "matched":
        what += (f" (training.schedule matched: from the baseline; {matched_steps(ctx)} batches asked, "
                 f"{spec['epochs']} epochs x {batches_per_epoch(ctx, target)} batches)")
    elif target > 0 and source_iteration(ctx, target) != target - 1:
        what += f" (the champion; iteration {target - 1}'s rejected challenger is kept, not built on)"
    if spec.get("yoloe"):
        y = spec["yoloe"]
        what += (f" as YOLOE ({Path(y['target']).name}) with the prompts of {Path(y['prompt_file']).name}, text "
                 f"encoder {Path(y['text_encoder'] or 'unset').name}")
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
                                   "best": str(paths.best(target)), **_yoloe_result(spec)})
    paths.last_good(target).unlink(missing_ok=True)  # only a resumed training reads last.pt; this one is done
    ctx.ui.emit(Message(f"[TRAIN] Training complete in {secs:.0f} s: {paths.best(target)}"))
    return "next"
