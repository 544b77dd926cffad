"""Runs one Ultralytics training in its own process (python -m al.yolo.train_worker SPEC.json).

A child process keeps training off the orchestrator's (and the TUI's) thread, lets a quit stop it cleanly, and
sends its console output to training_log.txt. Progress goes to a JSON-lines file the parent follows. After every
saved epoch the checkpoints Ultralytics just rewrote in place are verified and copied to the loop's own good copies
(al.yolo.checkpoints), so a kill mid-write never costs more than that epoch.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path


def _die_with_parent() -> None:
    # If the orchestrator is killed (even kill -9) the training must not run on unseen: ask Linux to SIGKILL us.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Progress:
    """The progress file the parent follows. Picklable (by its path): with several devices Ultralytics hands the
    training callbacks to its DDP processes with cloudpickle, and rank 0 writes here."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fh = open(self.path, "a", buffering=1, encoding="utf-8")
        self.last_batch = 0.0

    def __getstate__(self) -> dict:
        return {"path": self.path, "last_batch": 0.0}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])  # type: ignore[misc]  # re-open in the process that unpickled it

    def emit(self, **ev):
        if not _main_rank():
            return
        ev["t"] = time.time()
        self.fh.write(json.dumps(ev) + "\n")


def _main_rank() -> bool:
    """This process reports: the training child itself, or rank 0 of a multi-GPU (DDP) training."""
    return int(os.environ.get("RANK", "-1")) in (-1, 0)


def _parent_gone(parent: int) -> bool:
    """Orphaned (on a platform without PDEATHSIG): the training child's parent is the orchestrator, a DDP rank's is
    the launcher that al.yolo.ddp recorded."""
    from al.yolo.ddp import ENV_PARENT

    return os.getppid() != int(os.environ.get(ENV_PARENT) or parent)


ADAPTIVE = ("adam", "adamw", "adamax", "nadam", "radam", "rmsprop")
"""Optimizers whose step is about lr per weight whatever the gradient's size (training.optimizer, lower case)."""

EXIT_IO = 75
"""Exit status of a training stopped by an OSError (disk full, read-only folder); the parent says which path."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    _die_with_parent()
    parent = os.getppid()
    from al.yolo import checkpoints, ddp
    from al.yolo.detector import disable_mlflow_callback, prepare_offline

    prepare_offline(Path(spec["yolo_config_dir"]))
    from ultralytics import YOLO

    disable_mlflow_callback()  # the loop logs to MLflow itself (docs/TRACKING.md): never twice, never ./mlruns

    prog = _Progress(Path(spec["progress"]))

    def on_epoch_start(tr):
        if _parent_gone(parent):
            os._exit(3)
        prog.emit(event="epoch_start", epoch=tr.epoch + 1, epochs=tr.epochs)

    def on_batch_end(tr):
        now = time.time()
        if now - prog.last_batch >= 0.5:  # throttle: the UI needs a few updates a second, not every batch
            prog.last_batch = now
            nb = len(tr.train_loader) if getattr(tr, "train_loader", None) is not None else 0
            i = getattr(tr, "_al_batch", 0) + 1
            prog.emit(event="batch", epoch=tr.epoch + 1, epochs=tr.epochs, batch=min(i, nb), batches=nb)
        tr._al_batch = getattr(tr, "_al_batch", 0) + 1

    def on_fit_epoch_end(tr):
        tr._al_batch = 0
        epoch = min(tr.epoch + 1, tr.epochs)
        if epoch == getattr(tr, "_al_last_epoch", None):  # Ultralytics calls this again after the final eval
            return
        tr._al_last_epoch = epoch
        metrics = {k: float(v) for k, v in (tr.metrics or {}).items() if isinstance(v, (int, float))}
        prog.emit(event="epoch_end", epoch=epoch, epochs=tr.epochs, metrics=metrics,
                  fitness=float(tr.fitness or 0.0))

    def on_model_save(tr):
        if not _main_rank():
            return
        # best first: a kill between the two leaves a good last no newer than the good best
        if tr.best_fitness == tr.fitness:  # Ultralytics' own test for "best.pt was rewritten this epoch"
            checkpoints.keep(tr.best)
        checkpoints.keep(tr.last)

    last = Path(spec["project"]) / spec["name"] / "weights" / "last.pt"
    target = spec.get("yoloe")  # seed 004's YOLOE target: a prompted model, trained by al.yolo.yoloe's trainer
    if target:
        from al.yolo import yoloe
    if spec.get("resume") and last.is_file():
        model = YOLO(str(last))
        kwargs = {"resume": str(last), "device": ddp.trainer_device(spec["device"]), "workers": spec["workers"]}
        prog.emit(event="resume", checkpoint=str(last))
    else:
        source = spec["model"]
        if target:
            encoder = yoloe.build_encoder(target["text_encoder"], target["target"])
            report = yoloe.prepare_start(Path(source), target["target"], target["names"], target["prompts"],
                                         encoder, Path(target["start"]))
            yoloe.write_report(Path(target["report"]), report)
            print(f"[YOLOE] start model {target['start']}: {report['start']} ({report['source']}); prompts of "
                  f"{target['prompt_file']}; text encoder {report['encoder']['kind']}"
                  + ("" if report["encoder"]["semantic"] else " (NOT semantic: deterministic stand-in)"), flush=True)
            source = target["start"]
        model = YOLO(source)
        kwargs = dict(data=spec["data"], epochs=spec["epochs"], lr0=spec["lr0"], imgsz=spec["imgsz"],
                      batch=spec["batch"], patience=spec["patience"], optimizer=spec["optimizer"],
                      device=ddp.trainer_device(spec["device"]), workers=spec["workers"], seed=spec["seed"],
                      project=spec["project"], name=spec["name"], exist_ok=True, verbose=True, plots=True)
        if str(spec["optimizer"]).lower() in ADAPTIVE:
            # Ultralytics warms the biases up from lr 0.1, an SGD figure: an adaptive optimizer takes steps of about
            # lr per weight, so 0.1 wrecks a pretrained detector in its first batches (measured: a 64-image
            # fine-tune of a pretrained yolov8n ended at test mAP50-95 0.02 instead of 0.22). Ultralytics' own
            # optimizer=auto sets it to 0 for AdamW; an explicit adaptive optimizer gets the same here.
            kwargs["warmup_bias_lr"] = 0.0
        kwargs.update(spec.get("extra", {}))  # the user's pass-through options win over our defaults
    if ddp.requested(spec["device"]):
        ddp.check_devices(spec["device"])  # the parent checked too; the GPUs may have gone since
        ddp.install()  # the DDP processes die with this one, and keep the iteration folder
    model.add_callback("on_train_epoch_start", on_epoch_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    model.add_callback("on_model_save", on_model_save)
    prog.emit(event="start", epochs=spec["epochs"])
    try:
        model.train(**kwargs, **({"trainer": yoloe.trainer_class()} if target else {}))
    except AssertionError as e:
        # killed after the last epoch but before the orchestrator recorded it: the training is complete
        if "nothing to resume" not in str(e):
            raise
        prog.emit(event="resume", checkpoint=f"{last} (already finished)")
    except OSError as e:  # a full disk or a read-only folder: the parent turns this into one line
        print(f"[TRAIN] stopped by an I/O error: {e}", file=sys.stderr, flush=True)
        try:
            prog.emit(event="io_error", errno=e.errno, path=str(e.filename or ""), strerror=e.strerror or str(e))
        except OSError:
            pass  # the progress file is on the same full disk; the exit status still tells the parent
        return EXIT_IO
    best = Path(spec["project"]) / spec["name"] / "weights" / "best.pt"
    prog.emit(event="done", best=str(best), ok=best.is_file())
    return 0 if best.is_file() else 4


if __name__ == "__main__":
    sys.exit(main())
