"""--repair: rebuild run_state.json from the run tree when it is corrupt or lost.

The machine's order is walked from the baseline on. A step counts as done when the artefact it writes last exists
and loads (the weights too, through al.yolo.checkpoints, which restores a damaged best.pt from its verified copy);
the run's position is the first step that is not done. --resume then re-runs that step and the ones after it, as
after any stop: steps are idempotent, and a finished training is recognised by its train_result.json.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from al.app.session import RunError, has_run_tree, init_dataset
from al.core import artifacts, store
from al.core.config import Config
from al.core.context import Frontend, Options, RunEnv
from al.core.events import Message
from al.core.paths import RunPaths
from al.core.state import RunState
from al.data import dataset
from al.yolo import checkpoints

Check = Callable[[], str | None]
"""A step's done-test: None when its artefacts load, else why not (one short phrase)."""


@dataclass
class Inferred:
    """The rebuilt state and, per iteration, what was found (the lines --repair prints)."""

    state: RunState
    lines: list[str] = field(default_factory=list)
    why: str = ""
    """Why the position step is not done."""


def _reason(paths: RunPaths, e: Exception) -> str:
    """The first sentence of an error, with paths relative to the run directory."""
    text = str(e).split(". ")[0].rstrip(".")
    return text.replace(f"{paths.root}/", "")


def _loads(paths: RunPaths, fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except (store.StoreError, OSError, ValueError, KeyError, TypeError) as e:
        return _reason(paths, e)
    return None


class _Walk:
    """The done-tests of one run tree, and what they noticed on the way (restored checkpoints)."""

    def __init__(self, paths: RunPaths):
        self.paths = paths
        self.notes: list[str] = []
        self.rows = {}
        try:
            self.rows = {int(r["iteration"]): r for r in store.read_csv(paths.convergence_csv)}
        except (OSError, ValueError, KeyError, TypeError):
            self.notes.append(f"{paths.convergence_csv.name} unreadable: convergence is re-checked")

    def model(self, k: int) -> str | None:
        t = checkpoints.trust(self.paths.best(k))
        if t.restored:
            self.notes.append(f"iteration {k}'s best.pt was {t.problem}; restored its verified copy")
        return None if t.ok else f"iteration_{k}/weights/best.pt {t.problem}"

    def trained(self, target: int) -> str | None:
        p = self.paths
        return _loads(p, lambda: store.read_json(p.train_result(target), required=("spec",))) or self.model(target)

    def validated(self, k: int) -> str | None:
        def load():
            if artifacts.load_validation(self.paths, k).iteration != k:
                raise ValueError(f"iteration_{k}/validation.json is another iteration's")
        return _loads(self.paths, lambda: (dataset.read_snapshot(self.paths.dataset_version(k)), load()))

    def analyzed(self, k: int) -> str | None:
        p = self.paths
        return _loads(p, lambda: (store.read_json(p.error_report(k), required=("totals",)),
                                  store.read_json(p.prompts(k))))

    def converged(self, k: int) -> str | None:
        return None if k in self.rows else f"no row for iteration {k} in {self.paths.convergence_csv.name}"

    def extracted(self, k: int) -> str | None:
        return _loads(self.paths, lambda: artifacts.load_hard_examples(self.paths, k))

    def reviewed(self, k: int) -> str | None:
        p = self.paths
        return _loads(p, lambda: (artifacts.load_review(p, k), dataset.read_snapshot(p.dataset_version(k + 1))))

    def tracked(self, k: int) -> str | None:
        p = self.paths
        return _loads(p, lambda: (store.read_json(p.metadata(k)), store.read_json(p.iteration_report(k))))


def _flags(paths: RunPaths, upto: int) -> tuple[bool, bool, dict[str, dict[str, float]]]:
    """dry_run, auto and the step timings of iterations before `upto`, from the files that record them."""
    dry, auto, timings = False, False, {}
    try:
        dry = bool(store.read_json(paths.train_result(0)).get("dry_run"))
    except store.StoreError:
        pass
    for k in range(upto):
        try:
            meta = store.read_json(paths.metadata(k))
        except store.StoreError:
            continue
        auto = auto or bool(meta.get("auto"))
        dry = dry or bool(meta.get("dry_run"))
        timings[str(k)] = {s: float(v) for s, v in (meta.get("timings_s") or {}).items()}
    return dry, auto, timings


def infer(cfg: Config, paths: RunPaths) -> Inferred:
    """The state of the run in `paths`, from its files alone."""
    w = _Walk(paths)
    st = RunState(config_digest=cfg.digest())
    lines: list[str] = []

    def at(step: str, why: str, done: list[str] | None = None, shown: str = "", **kw) -> Inferred:
        if done is not None:
            lines.append(f"[REPAIR] iteration {st.iteration}: " + (f"{', '.join(done)} done; " if done else "")
                         + f"next: {shown or step} ({why})")
        st.dry_run, st.auto, st.timings = _flags(paths, st.iteration + 1)
        st.step = step
        for key, v in kw.items():
            setattr(st, key, v)
        return Inferred(st, [*lines, *(f"[REPAIR] note: {n}" for n in w.notes)], why)

    if why := w.trained(0):
        lines.append(f"[REPAIR] baseline: next: retrain ({why})")
        return at("retrain", why, baseline=True)
    st.baseline = False
    head = (("validate", w.validated), ("analyze", w.analyzed), ("converge", w.converged))
    tail = (("extract", w.extracted), ("review", w.reviewed), ("retrain", lambda i: w.trained(i + 1)),
            ("track", w.tracked))
    while True:
        k = st.iteration
        done: list[str] = []
        for step, check in head:
            if why := check(k):
                return at(step, why, done)
            done.append(step)
        row = w.rows[k]
        st.converged = str(row.get("converged")) in ("1", "True", "true")
        st.reason = str(row.get("reason") or "")
        if st.converged:
            if why := w.tracked(k):
                return at("track", why, done)
            lines.append(f"[REPAIR] iteration {k}: all steps done; converged ({st.reason})")
            return at("done", st.reason)
        for step, check in tail:
            if why := check(k):
                if step == "review" and paths.review_request(k).is_file():  # the human has the picks already
                    return at("awaiting_review", f"awaiting the reviewer's labels; {why}", done,
                              review_pending=True, shown="review")
                return at(step, why, done)
            done.append(step)
        lines.append(f"[REPAIR] iteration {k}: all steps done")
        st.iteration, st.converged, st.reason = k + 1, False, ""


def repair_run(cfg: Config, *, ui: Frontend) -> RunState:
    """--repair: rebuild run_state.json from the run tree, keep the old file beside it, and say what was
    inferred. Caller holds the run lock; no step runs."""
    paths = RunPaths(cfg.run_dir)
    cmd = RunEnv(cfg=cfg, paths=paths, opts=Options()).command
    if not has_run_tree(paths) and not (paths.dataset_version(0) / "version.json").is_file():
        raise RunError(f"Nothing to repair in {paths.root}: no iterations and no dataset version. Start a run "
                       f"with: {cmd()}")
    old = None
    if paths.state.is_file():
        try:
            old = RunState.load(paths)
            ui.emit(Message(f"[REPAIR] {paths.state} is valid (iteration {old.iteration}, step '{old.step}'); "
                            f"rebuilding it from the run tree anyway"))
        except store.StoreError as e:
            ui.emit(Message(f"[REPAIR] {str(e).split('. ')[0]}; rebuilding it from the run tree"))
    else:
        ui.emit(Message(f"[REPAIR] {paths.state} not found; rebuilding it from the run tree"))
    if not (paths.dataset_version(0) / "version.json").is_file():
        init_dataset(cfg, paths, ui)
        ui.emit(Message(f"[REPAIR] dataset version 0 re-made from {cfg.dataset.data_yaml}", "warning"))
    found = infer(cfg, paths)
    st = found.state
    if old is not None:  # what a readable old file knows better than the tree
        st.dry_run, st.auto = old.dry_run, old.auto
        st.timings = {**old.timings, **st.timings}
    for line in found.lines:
        ui.emit(Message(line, "warning" if line.startswith("[REPAIR] note:") else "info"))
    kept = ""
    if paths.state.exists():
        bak = paths.state_backup(time.strftime("%Y%m%d-%H%M%S"))
        os.replace(paths.state, bak)
        kept = f"; the old file is kept as {bak.name}"
    st.save(paths)
    where = "complete" if st.step == "done" else f"iteration {st.iteration}, step '{st.current_step}'"
    ui.emit(Message(f"[REPAIR] Wrote {paths.state}: {where}{' (dry run)' if st.dry_run else ''}{kept}. "
                    f"Continue with: {cmd('--resume')}"))
    return st
