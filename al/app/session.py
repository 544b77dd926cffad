"""Opening a run: fresh start, --resume or --start-iteration, under a lock on the run directory."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from al.core.config import Config
from al.core.context import Frontend, Options, RunEnv
from al.core.errors import UserError
from al.core.events import Message
from al.core.paths import RunPaths
from al.core.state import RunState
from al.data import dataset

log = logging.getLogger("al")


class RunError(UserError):
    """The run directory does not allow what was asked; the message says which flag to use."""


def _split_overlaps(splits: dict[str, list[str]]) -> list[str]:
    hashes = {k: {dataset.file_hash(p): p for p in v} for k, v in splits.items()}
    out = []
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        common = hashes[a].keys() & hashes[b].keys()
        if common:
            out.append(f"{len(common)} images are in both '{a}' and '{b}' (e.g. {hashes[b][next(iter(common))]})")
    return out


def init_dataset(cfg: Config, paths: RunPaths, ui: Frontend) -> dict:
    """Dataset version 0: the labelled set as the config names it. The test split is frozen from here on."""
    spec = dataset.read_data_yaml(cfg.dataset.data_yaml)
    splits = {k: spec.splits[k] for k in ("train", "val", "test")}
    for problem in _split_overlaps(splits):
        ui.emit(Message(f"[DATASET] WARNING: {problem} in {cfg.dataset.data_yaml}; metrics on overlapping splits "
                        f"are optimistic", "warning"))
    if splits["test"]:
        test = set(splits["test"])
        splits["train"] = [p for p in splits["train"] if p not in test]
        splits["val"] = [p for p in splits["val"] if p not in test]
    return dataset.write_snapshot(paths.dataset_version(0), spec.names, splits,
                                  {"version": 0, "names": spec.names, "parent": None, "origin": "config",
                                   "source": str(cfg.dataset.data_yaml)})


def _supersede(paths: RunPaths, start: int) -> Path | None:
    """Move iterations >= start (and their dataset versions >= start+1) aside, never deleting them."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = paths.root / "superseded" / stamp
    moved = False
    if paths.iterations.is_dir():
        for d in sorted(paths.iterations.glob("iteration_*")):
            if d.name.split("_")[1].isdigit() and int(d.name.split("_")[1]) >= start:
                (dest / "iterations").mkdir(parents=True, exist_ok=True)
                shutil.move(str(d), dest / "iterations" / d.name)
                moved = True
    if paths.dataset_root.is_dir():
        for d in sorted(paths.dataset_root.glob("v[0-9][0-9][0-9]")):
            if int(d.name[1:]) >= max(start, 1) or start == 0:
                (dest / "dataset").mkdir(parents=True, exist_ok=True)
                shutil.move(str(d), dest / "dataset" / d.name)
                moved = True
    return dest if moved else None


def open_run(cfg: Config, *, resume: bool, start_iteration: int | None, dry_run: bool, auto: bool,
             ui: Frontend) -> tuple[RunEnv, RunState]:
    """The environment and the state of this invocation (fresh, --resume or --start-iteration). Caller holds the
    run lock."""
    paths = RunPaths(cfg.run_dir)
    exists = paths.state.is_file()
    if resume and start_iteration is not None:
        raise RunError("--resume and --start-iteration exclude each other: --resume continues where the run "
                       "stopped, --start-iteration N re-runs from iteration N.")
    if exists and not resume and start_iteration is None:
        raise RunError(f"A run already exists in {paths.root} (state: {paths.state}). Use --resume to continue "
                       f"it, --start-iteration N to re-run from iteration N, or set run_dir to a new folder.")
    if resume and not exists:
        raise RunError(f"No run to resume in {paths.root} ({paths.state} not found). Start one without --resume.")

    if resume:
        state = RunState.load(paths)
        if state.step == "done":
            raise RunError(f"The run in {paths.root} is complete ({state.reason}). Use --start-iteration N to "
                           f"re-run from iteration N, or raise active_learning.max_iterations / target_f1 and "
                           f"use --start-iteration {state.iteration + 1}.")
        if state.config_digest and state.config_digest != cfg.digest():
            ui.emit(Message(f"[RESUME] NOTE: {cfg.source_path} changed since the run started; the new values "
                            f"apply from the current step on.", "warning"))
        if state.dry_run and not dry_run:
            ui.emit(Message("[RESUME] This run was started with --dry-run; it continues as a dry run.", "warning"))
        state.dry_run = state.dry_run or dry_run
        state.auto = state.auto or auto
    elif start_iteration is not None:
        if not exists:
            raise RunError(f"--start-iteration {start_iteration}: no run in {paths.root} to restart. Start one "
                           f"without flags first.")
        old = RunState.load(paths)
        if start_iteration > 0:
            prev = start_iteration - 1
            need = [paths.best(prev), paths.hard_examples(prev), paths.dataset_yaml(prev)]
            missing = [str(p) for p in need if not p.is_file()]
            if missing:
                raise RunError(f"--start-iteration {start_iteration} needs iteration {prev} to have finished "
                               f"extract; missing: {missing[0]}. Use a lower N or --resume.")
        moved = _supersede(paths, start_iteration)
        if moved:
            ui.emit(Message(f"[INIT] Iterations >= {start_iteration} moved to {moved} (kept, not deleted)"))
        if start_iteration == 0:
            init_dataset(cfg, paths, ui)
            state = RunState(dry_run=dry_run, auto=auto)
        else:
            # iteration N's model is re-made from N-1's best: redo N-1's review (re-import) and retrain
            state = RunState(iteration=start_iteration - 1, step="review", baseline=False, dry_run=dry_run,
                             auto=auto, timings={k: v for k, v in old.timings.items() if int(k) < start_iteration})
    else:
        paths.root.mkdir(parents=True, exist_ok=True)
        init_dataset(cfg, paths, ui)
        state = RunState(dry_run=dry_run, auto=auto)
    state.config_digest = cfg.digest()
    env = RunEnv(cfg=cfg, paths=paths, opts=Options(dry_run=state.dry_run, auto=state.auto))
    state.save(paths)
    return env, state
