"""Opening a run: fresh start, --resume or --start-iteration, under a lock on the run directory."""

from __future__ import annotations

import logging
import re
import shutil
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from al.core import artifacts, store
from al.core.config import Config
from al.core.context import Frontend, Listeners, Options, RunEnv
from al.core.errors import UserError
from al.core.events import Message
from al.core.paths import RunPaths
from al.core.state import RunState
from al.data import check, dataset, hashing, manifest
from al.yolo import checkpoints

log = logging.getLogger("al")


class RunError(UserError):
    """The run directory does not allow what was asked; the message says which flag to use."""


def _split_overlaps(splits: dict[str, list[str]]) -> list[str]:
    """Images in both train and val by content (warned: both are the labelled set; the test split is guarded apart,
    by _test_copies)."""
    hashes = {k: {hashing.file_hash(p): p for p in splits[k]} for k in ("train", "val")}
    common = hashes["train"].keys() & hashes["val"].keys()
    return [f"{len(common)} images are in both 'train' and 'val' (e.g. {hashes['val'][next(iter(common))]})"] \
        if common else []


def _test_copies(splits: dict[str, list[str]]) -> dict[str, str]:
    """Train and val images whose content equals a test image (listed in both, or a byte-identical copy) -> that
    test image."""
    test = {hashing.file_hash(p): p for p in splits["test"]}
    return {p: test[h] for k in ("train", "val") for p in splits[k] if (h := hashing.file_hash(p)) in test}


def _near_duplicates(splits: dict[str, list[str]], distance: int) -> dict[str, list[dict]]:
    """'val' and 'test' -> the training images whose perceptual hash is within `distance` of an image of that split
    (the manifest's check). Byte copies are not listed: _split_overlaps and _test_copies deal with them."""
    train = list(dict.fromkeys(splits["train"]))
    ph = {p: manifest.phash(p) for p in dict.fromkeys(train + splits["val"] + splits["test"])}
    out = {}
    for other in ("val", "test"):
        theirs = set(splits[other])
        mine = [p for p in train if p not in theirs]
        man = manifest.Manifest(0, {**{p: {"split": other, "phash": ph[p]} for p in theirs},
                                    **{p: {"split": "train", "phash": ph[p]} for p in mine}})
        out[other] = [d for d in manifest.near_duplicates(man, mine, distance)
                      if hashing.file_hash(d["image"]) != hashing.file_hash(d["other"])]
    return out


def _listed(items: list[str], where: Path, most: int = 10) -> str:
    """The first `most` items joined, and how many more there are in `where`."""
    more = f"; and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more + f" (all listed in {where})"


def _warn(ui: Frontend, notes: list[str] | None, text: str) -> None:
    """A warning on the console, kept in `notes` (dataset version 0 records them; every iteration report shows
    them)."""
    ui.emit(Message(text, "warning"))
    if notes is not None:
        notes.append(text)


def _warn_near_duplicates(cfg: Config, paths: RunPaths, ui: Frontend, splits: dict[str, list[str]],
                          notes: list[str]) -> dict[str, list[dict]]:
    """Warn about training images that are near-duplicates of validation or of test images
    (review.near_duplicate_distance; null turns the check off); returns the pairs by split."""
    near = cfg.review.near_duplicate_distance
    if near is None:
        return {}
    found = _near_duplicates(splits, near)
    where = paths.dataset_version(0) / "version.json"
    for other, pairs in found.items():
        if not pairs:
            continue
        shown = _listed([f"{d['image']} ~ {other} {d['other']} (distance {d['distance']})" for d in pairs], where)
        what = ("test images (perceptual hash within review.near_duplicate_distance {near}), so test figures are "
                "optimistic" if other == "test" else
                "validation images (perceptual hash within review.near_duplicate_distance {near}), so validation "
                "figures are optimistic, and so are the convergence and promotion decisions made on them")
        _warn(ui, notes, f"[DATASET] WARNING: {len(pairs)} training images of {cfg.dataset.data_yaml} are "
                         f"near-duplicates of {what.format(near=near)}: {shown}")
    return found


def _warn_orphan_labels(cfg: Config, paths: RunPaths, ui: Frontend, splits: dict[str, list[str]],
                        notes: list[str]) -> list[str]:
    """Warn about label files beside the splits' images that have no image (nothing trains on their boxes);
    returns them."""
    orphans = check.orphan_labels(p for v in splits.values() for p in v)
    if orphans:
        shown = _listed([f"{f} (no {Path(f).stem}.* in {d})" for f, d in orphans],
                        paths.dataset_version(0) / "version.json")
        _warn(ui, notes, f"[DATASET] WARNING: {_n(len(orphans), 'label file')} of {cfg.dataset.data_yaml} without "
                         f"an image, so nothing trains on its boxes: add the image, or delete the label file if it is "
                         f"left over: {shown}")
    return [f for f, _ in orphans]


def init_dataset(cfg: Config, paths: RunPaths, ui: Frontend) -> dict:
    """Dataset version 0: the labelled set as the config names it. The test split is frozen from here on."""
    spec = dataset.read_data_yaml(cfg.dataset.data_yaml)
    splits = {k: spec.splits[k] for k in ("train", "val", "test")}
    notes: list[str] = []
    with hashing.persisted(paths.hash_cache):  # the manifest of version 0 reuses these hashes
        problems = _split_overlaps(splits)
        copies = _test_copies(splits)
    for problem in problems:
        _warn(ui, notes, f"[DATASET] WARNING: {problem} in {cfg.dataset.data_yaml}; metrics on overlapping splits "
                         f"are optimistic")
    if copies:  # the test split never reaches training, not even as a copy under another name
        _warn(ui, notes, f"[DATASET] WARNING: {len(copies)} train/val images of {cfg.dataset.data_yaml} are "
                         f"identical to test images and were removed from train/val (the test split never reaches "
                         f"training): " + _listed([f"{a} = test {b}" for a, b in copies.items()],
                                                   paths.dataset_version(0) / "version.json"))
        splits = {k: v if k == "test" else [p for p in v if p not in copies] for k, v in splits.items()}
        for k in ("train", "val"):
            if not splits[k]:
                raise RunError(f"{cfg.dataset.data_yaml}: every image of split '{k}' is a copy of a test image. "
                               f"Give '{k}' images of its own: the test split is kept for the final figures only.")
    orphans = _warn_orphan_labels(cfg, paths, ui, splits, notes)
    splits, found = check_data(cfg, paths, ui, splits, spec.names, source=str(cfg.dataset.data_yaml), notes=notes)
    with hashing.persisted(paths.hash_cache):
        near = _warn_near_duplicates(cfg, paths, ui, splits, notes)
    return dataset.write_snapshot(paths.dataset_version(0), spec.names, splits,
                                  {"version": 0, "names": spec.names, "parent": None, "origin": "config",
                                   "source": str(cfg.dataset.data_yaml),
                                   **({"data_check": found} if found else {}),
                                   **({"test_copies_removed": copies} if copies else {}),
                                   **({"test_near_duplicates": near["test"]} if near.get("test") else {}),
                                   **({"val_near_duplicates": near["val"]} if near.get("val") else {}),
                                   **({"orphan_labels": orphans} if orphans else {}),
                                   **({"warnings": notes} if notes else {})})


def _n(count: int, noun: str) -> str:
    """'1 box', '2 boxes'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}es" if noun.endswith("x") else f"{count} {noun}s"


def _first(lines: dict[str, list[int]]) -> str:
    """'file:line' of the first entry."""
    f, nos = next(iter(lines.items()))
    return f"{f}:{nos[0]}"


def _form(name: str) -> str:
    return "NFC" if unicodedata.is_normalized("NFC", name) else "NFD" if unicodedata.is_normalized("NFD", name) \
        else "mixed form"


def _warn_repairs(ui: Frontend, notes: list[str] | None, rep: check.Report) -> dict:
    """Warn about what training and validation repair without a word; returns it by file, for version 0."""
    out: dict = {}
    if rep.renamed:
        lp, img = next(iter(rep.renamed.items()))
        _warn(ui, notes, f"[DATASET] WARNING: {_n(len(rep.renamed), 'label file')} named in another Unicode normal "
                         f"form than the image (e.g. {lp}, {_form(Path(lp).name)}, for {img}, "
                         f"{_form(Path(img).name)}): matched by NFC, and training reads it through a link named like "
                         f"the image; rename the label file to the image's spelling for other tools to match it too")
        out["label_names_matched_by_nfc"] = rep.renamed
    if rep.clipped:
        n = sum(map(len, rep.clipped.values()))
        _warn(ui, notes, f"[DATASET] WARNING: {_n(n, 'box')} in {_n(len(rep.clipped), 'label file')} past the image "
                         f"edge (e.g. {_first(rep.clipped)}), clipped to the image by the loop's validation as by "
                         f"training's augmentation: check the line if the box belongs elsewhere")
        out["boxes_clipped"] = rep.clipped
    if rep.empty:
        n = sum(map(len, rep.empty.values()))
        _warn(ui, notes, f"[DATASET] WARNING: {_n(n, 'box')} of zero width or height in "
                         f"{_n(len(rep.empty), 'label file')} (e.g. {_first(rep.empty)}): the loop's validation "
                         f"ignores it, Ultralytics keeps it (its validation during training counts an object no model "
                         f"can find): give the box its size, or delete the line")
        out["boxes_empty"] = rep.empty
    return out


def check_data(cfg: Config, paths: RunPaths, ui: Frontend, splits: dict[str, list[str]], names: list[str], *,
               source: str, can_skip: bool = True, notes: list[str] | None = None
               ) -> tuple[dict[str, list[str]], dict | None]:
    """The dataset check (al.data.check) over every image and label file of `splits`, before anything trains:
    refuses with the first problems (BadDataError), or under dataset.on_bad_data: skip returns the splits without
    the bad images; with what was left out and what training and validation repair (None: nothing), after warning
    about both (the warnings are added to `notes`)."""
    rep = check.check_images([p for v in splits.values() for p in v], len(names), cache=paths.data_check_cache)
    if rep.duplicates:
        f, n = next(iter(rep.duplicates.items()))
        _warn(ui, notes, f"[DATASET] NOTE: {sum(rep.duplicates.values())} duplicate label rows in "
                         f"{len(rep.duplicates)} files (e.g. {n} in {f}); training and validation both ignore them")
    repaired = _warn_repairs(ui, notes, rep)
    if not rep.problems:
        return splits, repaired or None
    skip = cfg.dataset.on_bad_data == "skip" and can_skip
    check.write_report(paths.data_check_report, rep, source=source, action="skipped" if skip else "refused")
    if not skip:
        how = ("Fix the files, or set dataset.on_bad_data: skip in {cfg} to leave the bad images out of training "
               "and validation." if can_skip else
               "A dataset version already written cannot leave images out: fix the files, then run the same "
               "command again; or set dataset.on_bad_data: skip and start over from the dataset with "
               "--start-iteration 0 (it leaves the bad images out; later iterations are moved aside, not deleted)."
               ).format(cfg=cfg.source_path)
        raise check.BadDataError(f"Dataset check of {source}: {rep.headline()} {rep.why(validation=True)}, so "
                                 f"nothing was trained:\n{rep.describe()}\n"
                                 f"All of them: {paths.data_check_report}. {how}")
    bad = rep.bad_images
    _warn(ui, notes, f"[DATASET] WARNING: {rep.headline()} {rep.why()}; dataset.on_bad_data: skip leaves these "
                     f"{len(bad)} images out of training and validation:\n{rep.describe(5)}\n"
                     f"All of them: {paths.data_check_report}")
    kept = {k: [p for p in v if p not in bad] for k, v in splits.items()}
    for k in ("train", "val"):
        if k in kept and not kept[k]:
            raise check.BadDataError(f"Dataset check of {source}: every image of split '{k}' is bad "
                                     f"({rep.headline()}):\n{rep.describe()}\nFix the files.")
    return kept, {"skipped_images": len(bad), "problems": len(rep.problems), "report": str(paths.data_check_report),
                  **repaired}


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


def _numbered(folder: Path, path_of: Callable[[int], Path], start: int) -> list[Path]:
    """The entries of `folder` that are path_of(k) for a k >= start (k is the first number in the name)."""
    out = []
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            m = re.search(r"\d+", f.name)
            if m and int(m.group()) >= start and path_of(int(m.group())) == f:
                out.append(f)
    return out


def _supersede(cfg: Config, paths: RunPaths, start: int) -> Path | None:
    """Move every artefact of iterations >= start aside under superseded/<stamp>/ (same relative paths), never
    deleting anything: their iteration folders, dataset versions >= start and added images, iteration reports and
    prompt versions; the CSV's rows >= start and their prompt_history entries leave the live files (the old files
    are kept there as copies), and the trend plots are drawn again from the rows that stay."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = paths.root / "superseded" / stamp, 1
    while dest.exists():  # two restarts within one second
        n += 1
        dest = paths.root / "superseded" / f"{stamp}-{n}"
    moved = False

    def aside(f: Path, *, copy: bool = False) -> None:
        nonlocal moved
        target = dest / f.relative_to(paths.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, target)
        else:
            shutil.move(str(f), target)
        moved = True

    added = paths.added_images(0).parent.parent
    for f in (_numbered(paths.iterations, paths.iteration, start)
              + _numbered(paths.dataset_root, paths.dataset_version, start)
              + _numbered(added, lambda k: paths.added_images(k).parent, start)
              + _numbered(paths.iteration_report(0).parent, paths.iteration_report, start)
              + _numbered(paths.prompt_versions, paths.prompts, start)):
        aside(f)
    if paths.prompt_history.is_file():
        try:
            versions = store.read_json(paths.prompt_history).get("versions", [])
            kept = [v for v in versions if int(v["iteration"]) < start]
        except (store.StoreError, KeyError, TypeError, ValueError, AttributeError):
            aside(paths.prompt_history)  # unreadable: analyze starts a new history
        else:
            if len(kept) != len(versions):
                aside(paths.prompt_history, copy=True)
                store.write_json(paths.prompt_history, {"versions": kept})
    _supersede_gate(paths, start, aside)
    rows = store.read_csv(paths.convergence_csv)
    stale = [r for r in rows if str(r.get("iteration", "")).isdigit() and int(r["iteration"]) >= start]
    if stale:
        kept_rows = [r for r in rows if r not in stale]
        aside(paths.convergence_csv, copy=True)
        store.write_csv(paths.convergence_csv, kept_rows, list(rows[0]))
        if paths.convergence_plots.is_dir():
            aside(paths.convergence_plots, copy=bool(kept_rows))
        if kept_rows:  # the plots show the CSV: draw them again without the superseded rows
            from al.report import plots

            names = dataset.read_snapshot(paths.dataset_version(0))[0]["names"] \
                if (paths.dataset_version(0) / "version.json").is_file() else []
            plots.plot_trends(kept_rows, paths.convergence_plots, target_f1=cfg.active_learning.target_f1,
                              names=names)
    return dest if moved else None


def _supersede_gate(paths: RunPaths, start: int, aside: Callable[..., None]) -> None:
    """The gate's run-level files after a restart at `start`: champion.json is derived again from iteration
    start-1's verdict (a later champion's model was moved aside); at 0 it and decision_set.json go aside too
    (iteration 0 freezes a new set)."""
    from al.steps import gate

    if start == 0 or not paths.promotion(start - 1).is_file():
        for f in ((paths.champion, paths.decision_set) if start == 0 else (paths.champion,)):
            if f.is_file():
                aside(f)
        return
    if paths.champion.is_file():
        aside(paths.champion, copy=True)
    gate.publish_champion(paths, artifacts.load_promotion(paths, start - 1))


def _remove_temp(paths: RunPaths, ui: Frontend) -> None:
    """Delete the temp files that writes killed mid-way left in the run tree (a kill -9 leaves its .NAME.XXXX.tmp
    beside the file it was replacing, up to a checkpoint's size each): the caller holds the run lock, so none of
    them is being written. The dataset versions' link mirrors and superseded runs are not walked."""
    removed = store.remove_temp(paths.root, skip=(dataset.MIRROR, "superseded", ".yolo_config"))
    if removed:
        ui.emit(Message(f"[INIT] Removed {len(removed)} temp files that interrupted writes left behind (e.g. "
                        f"{removed[0].relative_to(paths.root)})"))


def has_run_tree(paths: RunPaths) -> bool:
    """The run directory holds iterations (a run whose state file may be lost)."""
    return paths.iterations.is_dir() and any(d.is_dir() for d in paths.iterations.glob("iteration_*"))


def _check_baseline(cfg: Config) -> None:
    """A .pt baseline must load as an Ultralytics checkpoint before a run starts on it: a failed download or a
    renamed file would otherwise fail the baseline training (or, in a dry run, validate), where --start-iteration 0
    would only copy the same file again."""
    b = cfg.model.baseline
    why = checkpoints.problem(Path(b)) if b.endswith(".pt") else None
    if why:
        raise RunError(f"{cfg.source_path}: key 'model.baseline' = {b!r} does not load as an Ultralytics checkpoint "
                       f"({why}); set model.baseline to a model YAML (e.g. yolov8n.yaml) to train from scratch, or "
                       f"to a trained Ultralytics .pt.")


def _done_state(paths: RunPaths) -> RunState | None:
    """The saved state when it says the run is complete (None when it does not, or cannot be read)."""
    try:
        state = RunState.load(paths)
    except store.StoreError:
        return None
    return state if state.step == "done" else None


def _complete_advice(cfg: Config, paths: RunPaths, state: RunState, dry_run: bool, auto: bool) -> str:
    """'is complete (why). <what to do>': a complete run stopped at the converge step of its last iteration K, so
    there are no picks to start iteration K+1 from; going on past a raised limit re-makes iteration K."""
    k = state.iteration
    cmd = RunEnv(cfg=cfg, paths=paths, opts=Options(dry_run=state.dry_run or dry_run, auto=state.auto or auto)).command
    return (f"is complete ({state.reason}). Use --start-iteration N to re-run from iteration N, or set run_dir to a "
            f"new folder to start another run. To go on past the limit, raise active_learning.max_iterations / "
            f"target_f1 in {cfg.source_path} and re-run iteration {k} with: {cmd('--start-iteration', k)} "
            f"(iteration {k}'s model is trained again; iterations >= {k} are moved aside, not deleted).")


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
        done = _done_state(paths)
        if done is not None:
            raise RunError(f"A run already exists in {paths.root} (state: {paths.state}) and "
                           f"{_complete_advice(cfg, paths, done, dry_run, auto)}")
        raise RunError(f"A run already exists in {paths.root} (state: {paths.state}). Use --resume to continue "
                       f"it, --start-iteration N to re-run from iteration N, or set run_dir to a new folder.")
    if not exists and start_iteration is None and has_run_tree(paths):
        raise RunError(f"{paths.state} not found, but {paths.iterations} holds a run. {_repair_fix(cfg)} (or set "
                       f"run_dir to a new folder to start another run).")
    if resume and not exists:
        raise RunError(f"No run to resume in {paths.root} ({paths.state} not found). Start one without --resume.")
    _remove_temp(paths, ui)

    if resume:
        state = RunState.load(paths, fix=_repair_fix(cfg) + ".")
        if state.step == "done":
            raise RunError(f"The run in {paths.root} {_complete_advice(cfg, paths, state, dry_run, auto)}")
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
            _check_baseline(cfg)
            spec = dataset.read_data_yaml(cfg.dataset.data_yaml)
            check_data(cfg, paths, Listeners(), spec.splits, spec.names, source=str(cfg.dataset.data_yaml))
        moved = _supersede(cfg, paths, start_iteration)
        if moved:
            ui.emit(Message(f"[INIT] Iterations >= {start_iteration} (their folders, dataset versions, reports, "
                            f"prompt versions and CSV rows) moved to {moved} (kept, not deleted)"))
        if cfg.tracking.mlflow.enabled:
            from al.report import tracking  # imports mlflow: only when tracking is enabled

            if n := tracking.supersede(cfg, paths, start_iteration):
                ui.emit(Message(f"[MLFLOW] {n} MLflow runs of iterations >= {start_iteration} tagged "
                                f"{tracking.SUPERSEDED_TAG} and deleted (restorable: mlflow runs restore)"))
        if start_iteration == 0:
            init_dataset(cfg, paths, ui)
            state = RunState(dry_run=dry_run, auto=auto)
        else:
            # iteration N's model is re-made from N-1's best: redo N-1's review (re-import) and retrain
            state = RunState(iteration=start_iteration - 1, step="review", baseline=False, dry_run=dry_run,
                             auto=auto, timings={k: v for k, v in old.timings.items() if int(k) < start_iteration})
    else:
        _check_baseline(cfg)
        paths.root.mkdir(parents=True, exist_ok=True)
        init_dataset(cfg, paths, ui)
        state = RunState(dry_run=dry_run, auto=auto)
    state.config_digest = cfg.digest()
    env = RunEnv(cfg=cfg, paths=paths, opts=Options(dry_run=state.dry_run, auto=state.auto))
    state.save(paths)
    store.reserve(paths.reserve)
    return env, state
