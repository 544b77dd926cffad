"""Opening a run: fresh start, --resume or --start-iteration, under a lock on the run directory."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from al.core import store
from al.core.config import Config
from al.core.context import Frontend, Listeners, Options, RunEnv
from al.core.errors import UserError
from al.core.events import Message
from al.core.paths import RunPaths
from al.core.state import RunState
from al.data import check, dataset, hashing
from al.yolo import checkpoints

log = logging.getLogger("al")


class RunError(UserError):
    """The run directory does not allow what was asked; the message says which flag to use."""


def _split_overlaps(splits: dict[str, list[str]]) -> list[str]:
    hashes = {k: {hashing.file_hash(p): p for p in v} for k, v in splits.items()}
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
    with hashing.persisted(paths.hash_cache):  # the manifest of version 0 reuses these hashes
        problems = _split_overlaps(splits)
    for problem in problems:
        ui.emit(Message(f"[DATASET] WARNING: {problem} in {cfg.dataset.data_yaml}; metrics on overlapping splits "
                        f"are optimistic", "warning"))
    if splits["test"]:
        test = set(splits["test"])
        splits["train"] = [p for p in splits["train"] if p not in test]
        splits["val"] = [p for p in splits["val"] if p not in test]
    splits, skipped = check_data(cfg, paths, ui, splits, spec.names, source=str(cfg.dataset.data_yaml))
    return dataset.write_snapshot(paths.dataset_version(0), spec.names, splits,
                                  {"version": 0, "names": spec.names, "parent": None, "origin": "config",
                                   "source": str(cfg.dataset.data_yaml),
                                   **({"data_check": skipped} if skipped else {})})


def check_data(cfg: Config, paths: RunPaths, ui: Frontend, splits: dict[str, list[str]], names: list[str], *,
               source: str, can_skip: bool = True) -> tuple[dict[str, list[str]], dict | None]:
    """The dataset check (al.data.check) over every image and label file of `splits`, before anything trains:
    refuses with the first problems (BadDataError), or under dataset.on_bad_data: skip returns the splits without
    the bad images and what was left out."""
    rep = check.check_images([p for v in splits.values() for p in v], len(names), cache=paths.data_check_cache)
    if rep.duplicates:
        f, n = next(iter(rep.duplicates.items()))
        ui.emit(Message(f"[DATASET] NOTE: {sum(rep.duplicates.values())} duplicate label rows in "
                        f"{len(rep.duplicates)} files (e.g. {n} in {f}); training and validation both ignore them",
                        "warning"))
    if not rep.problems:
        return splits, None
    skip = cfg.dataset.on_bad_data == "skip" and can_skip
    check.write_report(paths.data_check_report, rep, source=source, action="skipped" if skip else "refused")
    if not skip:
        how = ("Fix the files, or set dataset.on_bad_data: skip in {cfg} to leave the bad images out of training "
               "and validation." if can_skip else
               "A dataset version already written cannot leave images out: fix the files, or re-run from an "
               "earlier iteration with --start-iteration.").format(cfg=cfg.source_path)
        raise check.BadDataError(f"Dataset check of {source}: {rep.headline()} that training would drop as corrupt "
                                 f"(validation would not), so nothing was trained:\n{rep.describe()}\n"
                                 f"All of them: {paths.data_check_report}. {how}")
    bad = rep.bad_images
    ui.emit(Message(f"[DATASET] WARNING: {rep.headline()} that training would drop as corrupt; "
                    f"dataset.on_bad_data: skip leaves these {len(bad)} images out of training and validation:\n"
                    f"{rep.describe(5)}\n"
                    f"All of them: {paths.data_check_report}", "warning"))
    kept = {k: [p for p in v if p not in bad] for k, v in splits.items()}
    for k in ("train", "val"):
        if k in kept and not kept[k]:
            raise check.BadDataError(f"Dataset check of {source}: every image of split '{k}' is bad "
                                     f"({rep.headline()}):\n{rep.describe()}\nFix the files.")
    return kept, {"skipped_images": len(bad), "problems": len(rep.problems), "report": str(paths.data_check_report)}


def _check_versions(cfg: Config, paths: RunPaths, ui: Frontend, versions: list[int]) -> None:
    """Re-check the dataset versions a resumed run goes on with (unchanged files come from the check's cache);
    a file that went bad after its version was written is refused, whatever on_bad_data says."""
    names, images = None, []
    for v in versions:
        if (paths.dataset_version(v) / "version.json").is_file():
            ver, sp = dataset.read_snapshot(paths.dataset_version(v))
            names = list(ver["names"])
            images += [p for imgs in sp.values() for p in imgs]
    if names is not None:
        check_data(cfg, paths, ui, {"all": images}, names, source=f"the dataset versions of {paths.root}",
                   can_skip=False)


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


def has_run_tree(paths: RunPaths) -> bool:
    """The run directory holds iterations (a run whose state file may be lost)."""
    return paths.iterations.is_dir() and any(d.is_dir() for d in paths.iterations.glob("iteration_*"))


def _repair_fix(cfg: Config) -> str:
    cmd = RunEnv(cfg=cfg, paths=RunPaths(cfg.run_dir), opts=Options()).command
    return f"Rebuild it from the run tree with: {cmd('--repair')}, then continue with: {cmd('--resume')}"


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
    if not exists and start_iteration is None and has_run_tree(paths):
        raise RunError(f"{paths.state} not found, but {paths.iterations} holds a run. {_repair_fix(cfg)} (or set "
                       f"run_dir to a new folder to start another run).")
    if resume and not exists:
        raise RunError(f"No run to resume in {paths.root} ({paths.state} not found). Start one without --resume.")

    if resume:
        state = RunState.load(paths, fix=_repair_fix(cfg) + ".")
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
        _check_versions(cfg, paths, ui, [state.iteration, state.iteration + 1])
    elif start_iteration is not None:
        if not exists and not has_run_tree(paths):
            raise RunError(f"--start-iteration {start_iteration}: no run in {paths.root} to restart. Start one "
                           f"without flags first.")
        try:
            old = RunState.load(paths)
        except store.StoreError as e:  # the restart does not need it: only earlier iterations' timings are lost
            ui.emit(Message(f"[INIT] WARNING: {str(e).split('. ')[0]}; starting over from iteration "
                            f"{start_iteration} without the earlier step timings", "warning"))
            old = RunState()
        if start_iteration > 0:
            prev = start_iteration - 1
            cmd = RunEnv(cfg=cfg, paths=paths, opts=Options(dry_run=dry_run, auto=auto)).command
            t = checkpoints.trust(paths.best(prev))
            if t.restored:
                ui.emit(Message(f"[CHECKPOINT] WARNING: {paths.best(prev)} was {t.problem}; restored the verified "
                                f"copy {paths.best_good(prev)}", "warning"))
            if not t.ok:
                raise RunError(f"--start-iteration {start_iteration} fine-tunes iteration {prev}'s model, but "
                               f"{paths.best(prev)} is {t.problem} and has no verified copy. Re-make it first with: "
                               f"{cmd('--start-iteration', prev)}")
            need = [paths.hard_examples(prev), paths.dataset_yaml(prev)]
            missing = [str(p) for p in need if not p.is_file()]
            if missing:
                raise RunError(f"--start-iteration {start_iteration} needs iteration {prev} to have finished "
                               f"extract; missing: {missing[0]}. Use a lower N or --resume.")
            _check_versions(cfg, paths, ui, [prev])
        else:  # refuse bad data before anything is moved aside (init_dataset below reports and skips)
            spec = dataset.read_data_yaml(cfg.dataset.data_yaml)
            check_data(cfg, paths, Listeners(), spec.splits, spec.names, source=str(cfg.dataset.data_yaml))
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
    store.reserve(paths.reserve)
    return env, state
