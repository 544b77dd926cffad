"""Crash harness: SIGKILL a small real loop at chosen moments, --resume it until it finishes, and compare the run
with an uninterrupted reference (docs/CRASH_HARNESS.md).

The run: `al_loop.py --headless` on a small generated demo set (al.data.demo), from a baseline that already
learned (`train_baseline`, the product's own training child), max_iterations 2, simulated review, real Ultralytics
training (2 epochs in iteration 0, 2 in the fine-tune). Selection is `random` (seeded): the picks, and so every
dataset version, do not depend on the model, so a resumed training's other weights cannot change them and any
difference in a dataset version is a bookkeeping bug; the convergence rules other than max_iterations are off for
the same reason. `val: false` makes best.pt the last epoch, so the epochs after a resume reach the loop's metrics.
Every run uses the same run_dir path (trees compare path for path; the training order also follows the paths,
through the names of the dataset's link mirror).

The reference runs uninterrupted first. Then, per kill point, a fresh run; at each of the point's moments the whole
process group (the orchestrator and its training child) gets SIGKILL, then --resume, again until a run ends with
exit 0 (a kill before run_state.json exists leaves nothing to resume: the harness starts again without flags, as
the tool's message says). A moment is a time after the attempt started (random points, seeded) or a test on the
run tree polled every 2 ms (targeted points: inside Ultralytics' in-place rewrites of last.pt/best.pt, inside the
loop's verified copy, between two writes of a step, right after a saved transition ...). No hook in the product.

`compare`: the same files, no temp file left behind, every JSON and JSON line parses, the typed artefacts load,
the state says done; exactly equal dataset versions (split lists, version.json, manifests with hashes and label
origins, diffs), picks, review.json, metadata and the CSV's bookkeeping columns; the CSV's metric columns (and
every best.pt, tensor for tensor) EXACTLY when no epoch was trained after a resume from a mid-training checkpoint,
within TOLERANCE when one was: Ultralytics restores weights, optimizer and epoch on resume, not the RNG or the
loader's order (init_seeds runs again), so the epochs after a resume see other batches and augmentations.

Measured on the project's 2-core CPU (benchmarks/results/crash_harness*.md):
  * a second uninterrupted run equals the reference exactly (weights and every CSV column);
  * so does every kill that made no training resume mid-way: 47 of the 50 random ones, and every kill outside
    training, before a training's first checkpoint (it re-runs from epoch 1) or after its last epoch's save;
  * a training resumed after its first epoch moves the metrics: see TOLERANCE.

    .venv/bin/python benchmarks/crash_harness.py      # CI size: 3 targeted chains + 1 random chain, ~20 kills
    nohup .venv/bin/python benchmarks/crash_harness.py --random 50 --random-chain 1 --targeted none \
        --second-reference --seed 1 > benchmarks/results/crash_harness.log 2>&1 &       # the large one, ~27 min
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from al.core.paths import RunPaths  # noqa: E402  (after the path insert, like the other benchmarks)

RESULTS = ROOT / "benchmarks" / "results"

TOLERANCE = 0.1
"""Largest |resumed - reference| accepted on a metric column (scores in [0, 1]) when an epoch was trained after a
resume from a mid-training checkpoint: about 1.7 times the largest difference measured. Measured on these 20-24
validation images (docs/CRASH_HARNESS.md): over the resumed runs of the 50-point, targeted and CI runs, the largest
metric difference per run was 0.011-0.058; every other run, and a second uninterrupted run, differed by 0.0. A
resume after the same epoch always gives the same weights, so the differences come in a few fixed values per
machine, not a spread; on another machine they are other values of the same size."""

METRICS = ("precision", "recall", "f1", "map50", "map50_95", "train_f1", "test_map50", "test_map50_95", "test_f1")
BOOKKEEPING = ("iteration", "labelled_images", "val_images", "dataset_version", "converged", "reason")
COUNTS = ("tp", "fp", "fn", "per_class_f1", "per_class_fn")
"""Model outputs that are not scores: equal when the weights are, otherwise only reported."""

# Paths (relative to the run dir) whose presence or content depends on the process history, not on the run:
# the event log and the lock, the disk ballast, Ultralytics' settings, the content caches and its labels.cache.
VOLATILE = re.compile(r"^(al_loop\.log|\.al_loop\.lock|\.al_reserve|\.yolo_config/.*|cache/.*|.*\.cache)$")
MODEL_NAMED = re.compile(r"^iterations/iteration_\d+/error_analysis/fn_crops/")
"""Files named after the model's errors: compared only when the weights must be equal."""
HIDDEN_OK = re.compile(r"^(\.al_loop\.lock|\.al_reserve|\.yolo_config/.*|(.*/)?\.train_spec_run\.json)$")
"""The hidden files a finished run keeps; any other hidden file or folder is a temp file a killed write left."""


@dataclass(frozen=True)
class Size:
    """The size of the harness's run and of its learned baseline."""

    n_train: int = 24
    n_val: int = 24
    n_test: int = 12
    image_size: int = 96
    imgsz: int = 96
    epochs_base: int = 2
    """Iteration 0 fine-tunes the learned baseline this many epochs (2: a kill between them resumes mid-training)."""
    epochs_increment: int = 2
    """Epochs of the fine-tune of iteration 0's model into iteration 1's."""
    picks: int = 4
    base_lr: float = 0.001
    lr_decay_factor: float = 1.0
    data_seed: int = 3
    baseline_train: int = 64
    baseline_epochs: int = 20
    baseline_lr: float = 0.005


# ---------------------------------------------------------------------------------------------------- set-up

def make_data(work: Path, size: Size) -> Path:
    """The run's dataset (generated once; al.data.demo is idempotent). Returns its data.yaml."""
    from al.data.demo import generate_demo

    return generate_demo(work / "data", seed=size.data_seed, n_train=size.n_train, n_val=size.n_val,
                         n_test=size.n_test, n_pool=0, size=size.image_size)


def train_baseline(work: Path, size: Size) -> Path:
    """A yolov8n that learned (mAP50 > 0 on the run's data), trained from scratch by the product's training
    child on a larger generated set of the same classes; reused when work/baseline/weights/best.pt loads."""
    from al.data.demo import generate_demo
    from al.yolo import checkpoints

    out = work / "baseline"
    best = out / "weights" / "best.pt"
    if checkpoints.problem(best) is None:
        return best
    data = generate_demo(work / "baseline_data", seed=size.data_seed + 100, n_train=size.baseline_train,
                         n_val=size.n_val, n_test=0, n_pool=0, size=size.image_size)
    spec = {"model": "yolov8n.yaml", "data": str(data), "epochs": size.baseline_epochs, "lr0": size.baseline_lr,
            "imgsz": size.imgsz, "batch": 8, "patience": 0, "optimizer": "AdamW", "device": "cpu", "workers": 0,
            "seed": 0, "extra": {"nbs": 8, "fliplr": 0.0, "plots": False, "warmup_epochs": 1},
            "project": str(work), "name": "baseline", "yolo_config_dir": str(work / ".yolo_config"),
            "progress": str(work / "baseline_progress.jsonl")}
    out.mkdir(parents=True, exist_ok=True)
    (work / "baseline_spec.json").write_text(json.dumps(spec))
    with (work / "baseline_log.txt").open("w") as log:
        res = subprocess.run([sys.executable, "-m", "al.yolo.train_worker", str(work / "baseline_spec.json")],
                             stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
    if res.returncode != 0 or checkpoints.problem(best) is not None:
        raise RuntimeError(f"baseline training failed (exit {res.returncode}); see {work / 'baseline_log.txt'}")
    return best


def write_config(work: Path, data_yaml: Path, baseline: Path, size: Size) -> Path:
    """The harness's loop config (run_dir: work/run). Returns its path."""
    cfg = {
        "run_dir": "run",
        "dataset": {"data_yaml": str(data_yaml), "mining_source": "val"},
        "model": {"baseline": str(baseline), "type": "crash harness (learned yolov8n)"},
        "active_learning": {"max_samples_per_iteration": size.picks, "review_source": "simulated",
                            "target_f1": 1.0, "overfit_gap": 1.0, "plateau_window": 100, "max_iterations": 2,
                            "train_f1_sample": 8},
        "sampling_strategy": {"strategy": "random"},
        "training": {"base_lr": size.base_lr, "lr_decay_factor": size.lr_decay_factor, "epochs_base": size.epochs_base,
                     "epochs_increment": size.epochs_increment, "patience": 0, "imgsz": size.imgsz, "batch": 8,
                     "workers": 0, "device": "cpu", "seed": 0,
                     "extra": {"nbs": 8, "fliplr": 0.0, "plots": False, "warmup_epochs": 0, "val": False}},
        "validation": {"conf": 0.05, "batch": 16},
        "analysis": {"max_crops": 20},
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / "al_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _env() -> dict:
    pp = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "MPLBACKEND": "Agg", "PYTHONPATH": pp}


# ---------------------------------------------------------------------------------------------- the moments

class Watch:
    """A moment found on disk: `fired(paths)` is polled every few ms while the run goes on; `label` names it."""

    def fired(self, paths: RunPaths) -> bool:
        raise NotImplementedError


@dataclass
class At(Watch):
    """`seconds` after the attempt started (random points)."""

    seconds: float
    t0: float = 0.0

    @property
    def label(self) -> str:
        return f"t={self.seconds:.2f}s"

    def fired(self, paths: RunPaths) -> bool:
        return time.monotonic() - self.t0 >= self.seconds


@dataclass
class When(Watch):
    """A predicate on the run tree (targeted points)."""

    label: str
    test: Callable[[RunPaths], bool]

    def fired(self, paths: RunPaths) -> bool:
        try:
            return bool(self.test(paths))
        except (OSError, ValueError):  # a file half-written or replaced under us: not yet
            return False


@dataclass
class Rewrite(Watch):
    """The n-th time a file starts to be rewritten in place (its size drops, as open('wb') truncates it): a kill
    here lands inside Ultralytics' write of last.pt/best.pt (or just after it, when the write was quicker)."""

    label: str
    path: Callable[[RunPaths], Path]
    n: int = 1
    _last: int = -1
    _seen: int = 0

    def fired(self, paths: RunPaths) -> bool:
        try:
            size = self.path(paths).stat().st_size
        except OSError:
            size = -1
        if 0 <= size < self._last:
            self._seen += 1
        self._last = size if size >= 0 else self._last
        return self._seen >= self.n


def _temp_in(folder: Path, name: str) -> bool:
    """A store temp file of `name` (.NAME.XXXX.tmp) is in `folder`: an atomic write is under way."""
    prefix = f".{name}."
    try:
        return any(e.name.startswith(prefix) and e.name.endswith(".tmp") for e in os.scandir(folder))
    except OSError:
        return False


def _events(path: Path, event: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    return sum(f'"event": "{event}"' in ln for ln in text.splitlines())


def _state(paths: RunPaths) -> dict:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}


def _state_is(step: str, iteration: int, baseline: bool | None = None) -> Callable[[RunPaths], bool]:
    def test(p: RunPaths) -> bool:
        s = _state(p)
        return s.get("step") == step and s.get("iteration") == iteration and \
            (baseline is None or s.get("baseline") == baseline)
    return test


def _files(folder: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(folder))
    except OSError:
        return 0


@dataclass
class KillPoint:
    """One fresh run killed at each of `moments` in turn (a second moment kills the first --resume, ...)."""

    name: str
    kind: str  # "random" | "targeted" | "none" (an uninterrupted second reference)
    moments: list[Watch] = field(default_factory=list)


def _last_epoch_saved(path: Path) -> bool:
    """The training's last epoch ended (its checkpoints are saved; Ultralytics' final strip comes next)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    for ln in lines:
        if '"event": "epoch_end"' in ln:
            try:
                ev = json.loads(ln)
            except ValueError:
                continue
            if ev["epoch"] == ev["epochs"]:
                return True
    return False


def _batches_after_resume(path: Path) -> int:
    """Batches a resumed training has run since its last resume event."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    idx = max((i for i, ln in enumerate(lines) if '"event": "resume"' in ln), default=None)
    return 0 if idx is None else sum('"event": "batch"' in ln for ln in lines[idx:])


def targeted_moments() -> list[list[Watch]]:
    """Kills inside the risky writes and in the windows between two writes, found on disk, as three chains: each
    moment of a chain kills the attempt after the previous one's --resume (its test is false when its attempt
    starts and becomes true later in the run). Chains A and C never make a training resume mid-way, so their runs
    must equal the reference exactly, weights included; chain B holds every kill that does (compared within the
    tolerance: a first non-exact kill would let later ones in its chain differ unseen)."""
    return [
        [When("iteration 0's training child started, before its first epoch",
              lambda p: _events(p.train_progress(0), "start") >= 1),
         When("validate 0 wrote validation_images.json (its summary validation.json next)",
              lambda p: p.validation_images(0).is_file()),
         When("converge 0 wrote the CSV, not yet its trend plots", lambda p: p.convergence_csv.is_file()),
         When("review 0 copying the picks into dataset/added/", lambda p: p.added_images(0).is_dir()),
         When("review 0 began writing dataset v001 (split lists and links before version.json)",
              lambda p: p.dataset_version(1).is_dir()),
         Rewrite("Ultralytics rewriting iteration 1's best.pt in place (epoch 2's save or the final strip)",
                 lambda p: p.best(1)),
         When("state saved: track of iteration 1 (the last step)", _state_is("track", 1))],
        [When("iteration 0's training between its epochs (epoch 1 saved)",
              lambda p: _events(p.train_progress(0), "epoch_end") >= 1),
         Rewrite("Ultralytics rewriting iteration 0's last.pt in place (epoch 2's save or the final strip)",
                 lambda p: p.last(0)),
         When("the loop writing iteration 1's verified copy of epoch 1 (.last.good.pt.*.tmp)",
              lambda p: _temp_in(p.weights(1), "last.good.pt")),
         When("the resumed fine-tune, mid-epoch", lambda p: _batches_after_resume(p.train_progress(1)) >= 1),
         When("iteration 1's fine-tune saved its last epoch, not yet stripped",
              lambda p: _last_epoch_saved(p.train_progress(1))),
         When("state saved: converge of iteration 1", _state_is("converge", 1))],
        [When("iteration 0 trained and recorded (train_result.json), state not yet saved",
              lambda p: p.train_result(0).is_file()),
         When("analyse 0 writing its FN crops", lambda p: _files(p.fn_crops(0)) >= 1),
         When("state saved: review of iteration 0", _state_is("review", 0)),
         When("review 0 wrote v001/version.json (its manifest next)",
              lambda p: (p.dataset_version(1) / "version.json").is_file()),
         When("state saved: analyze of iteration 1", _state_is("analyze", 1)),
         When("track 1 wrote metadata.json, the final state not yet", lambda p: p.metadata(1).is_file())],
    ]


def targeted_points(*, chained: bool = True) -> list[KillPoint]:
    """The targeted moments: as their three chains (the CI), or each in a fresh run of its own."""
    chains = targeted_moments()
    if chained:
        return [KillPoint(f"targeted chain {'ABC'[i]}", "targeted", chain) for i, chain in enumerate(chains)]
    return [KillPoint(m.label, "targeted", [m]) for chain in chains for m in chain]


def random_points(n: int, duration: float, seed: int, *, chain: int = 1) -> list[KillPoint]:
    """n points of `chain` kills at seeded random times: the first uniform over 2-95 % of the reference run's
    wall time, each later one (killing a --resume) uniform over 10-60 % of it."""
    rng = random.Random(seed)
    return [KillPoint(f"random {i + 1}", "random",
                      [At(round(rng.uniform(0.02, 0.95) * duration, 2))] +
                      [At(round(rng.uniform(0.10, 0.60) * duration, 2)) for _ in range(chain - 1)])
            for i in range(n)]


# ------------------------------------------------------------------------------------------------ running

def _start(cfg: Path, args: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as fh:
        fh.write(f"\n===== al_loop.py {' '.join(args)} =====\n")
        fh.flush()
        # a session of its own: one SIGKILL to the group reaches the orchestrator and its training child
        return subprocess.Popen([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfg), "--headless", *args],
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cfg.parent,
                                env=_env(), start_new_session=True)


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group pgid."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def kill_group(proc: subprocess.Popen, wait_s: float = 20.0) -> None:
    """SIGKILL the process group of `proc` (started with start_new_session) and wait until none of it lives."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + wait_s
    while (alive := _group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        raise RuntimeError(f"processes {alive} of the killed group {proc.pid} are still alive")


def _where(paths: RunPaths) -> str:
    """What the run was doing, as its state file and training progress say."""
    s = _state(paths)
    if not s:
        return "no run_state.json yet"
    where = f"{s.get('step')} {s.get('iteration')}" + (" (baseline)" if s.get("baseline") else "")
    if s.get("step") == "retrain":
        k = 0 if s.get("baseline") else s.get("iteration", 0) + 1
        try:
            last = json.loads(paths.train_progress(k).read_text().splitlines()[-1])
            where += f", training {k}: {last['event']} epoch {last.get('epoch', '-')}" + (
                f" batch {last['batch']}/{last['batches']}" if last["event"] == "batch" else "")
        except (OSError, ValueError, IndexError, KeyError):
            where += f", training {k}: not started"
    return where


def _damage(paths: RunPaths) -> list[str]:
    """Checkpoints that do not load right after a kill (the kill landed inside their write)."""
    from al.yolo import checkpoints

    out = []
    for d in sorted(paths.iterations.glob("iteration_*/weights")):
        for ck in sorted(d.glob("*.pt")):
            why = checkpoints.problem(ck)
            if why is not None:
                out.append(f"{ck.relative_to(paths.root)}: {why[:60]}")
    return out


def _temp_files(run_dir: Path) -> list[str]:
    """Hidden files and folders a finished run would not have (what a killed write leaves)."""
    out = []
    for p in run_dir.rglob(".*"):
        rel = p.relative_to(run_dir).as_posix()
        if not HIDDEN_OK.match(rel) and not (p.is_dir() and rel == ".yolo_config"):
            out.append(rel)
    return sorted(out)


@dataclass
class Attempt:
    args: list[str]
    code: int | None
    seconds: float
    killed_at: str | None = None  # the moment's label, None when it ran to its end
    where: str | None = None
    damaged: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    """Moments this attempt ran past without seeing them (their window was shorter than the poll)."""


def _attempt(cfg: Path, paths: RunPaths, args: list[str], moments: list[Watch], log: Path,
             timeout: float, poll_s: float = 0.002) -> Attempt:
    """One al_loop.py process, killed at the first of `moments` that fires (removed from the list with the ones
    before it, which this run passed without their window being seen: too short for the poll). A time moment is
    watched only when it is the first (its clock starts with this attempt)."""
    t0 = time.monotonic()
    if moments and isinstance(moments[0], At):
        moments[0].t0 = t0
    proc = _start(cfg, args, log)
    while proc.poll() is None:
        for i, m in enumerate(moments):
            if isinstance(m, At) and i > 0:
                break
            if m.fired(paths):
                kill_group(proc)
                missed = [x.label for x in moments[:i]]
                del moments[:i + 1]
                return Attempt(args, None, round(time.monotonic() - t0, 2), m.label, _where(paths),
                               _damage(paths), _temp_files(paths.root), missed)
        if time.monotonic() - t0 > timeout:
            kill_group(proc)
            raise RuntimeError(f"al_loop.py {' '.join(args)} ran over {timeout:.0f} s; see {log}")
        time.sleep(poll_s)
    return Attempt(args, proc.returncode, round(time.monotonic() - t0, 2), missed=[m.label for m in moments])


@dataclass
class PointResult:
    name: str
    kind: str
    attempts: list[Attempt]
    kills: int
    finished: bool
    seconds: float
    trainings_resumed: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)
    """Per CSV metric column "iteration/column": |this run - reference|."""
    max_delta: float = 0.0
    exact: bool = True
    """Held to exact equality (no training resumed mid-way)."""
    passed: bool = False


def run_point(cfg: Path, point: KillPoint, log: Path, *, timeout: float = 900, max_resumes: int = 6
              ) -> tuple[list[Attempt], bool]:
    """A fresh run killed at each of the point's moments, then resumed until it exits 0. Returns the attempts and
    whether the run finished (exit 0, or a kill after the final state save: state done)."""
    paths = RunPaths(_run_dir(cfg))
    shutil.rmtree(paths.root, ignore_errors=True)
    attempts: list[Attempt] = []
    moments = list(point.moments)
    args: list[str] = []
    for _ in range(len(moments) + max_resumes):
        a = _attempt(cfg, paths, args, moments, log, timeout)
        attempts.append(a)
        done = _state(paths).get("step") == "done"
        if a.killed_at is not None:
            if done:  # killed after the last state save: --resume would say the run is complete
                return attempts, True
            args = ["--resume"]
            continue
        if a.code == 0 and done:
            return attempts, True
        if a.code == 2 and "No run to resume" in log.read_text(errors="replace").rsplit("=====", 1)[-1]:
            args = []  # killed before the first state save: the tool says to start again without --resume
            continue
        return attempts, False
    return attempts, False


def _run_dir(cfg: Path) -> Path:
    rd = Path(yaml.safe_load(cfg.read_text())["run_dir"])
    return rd if rd.is_absolute() else (cfg.parent / rd)


# ---------------------------------------------------------------------------------------------- the tree

def _weights_digest(path: Path) -> str | None:
    """SHA-1 of a checkpoint's model tensors (not of the file: Ultralytics stores a date, and a stripped file
    drops the optimizer)."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001  (reported as a problem by the caller: any load failure counts)
        return None
    model = ck.get("ema") or ck.get("model")
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().half().cpu().numpy().tobytes())
    return h.hexdigest()


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(run_dir: Path) -> dict:
    """What the comparison needs of a finished run tree (read before the next run reuses the path)."""
    from al.core import artifacts, store

    paths = RunPaths(run_dir)
    files, temp, bad_json = [], [], []
    for p in sorted(run_dir.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(run_dir).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) and not HIDDEN_OK.match(rel):
            temp.append(rel)
            continue
        if VOLATILE.match(rel):
            continue
        files.append(rel)
        if p.suffix in (".json", ".jsonl") and not p.is_symlink():
            try:
                if p.suffix == ".json":
                    _read_json(p)
                else:
                    for ln in p.read_text().splitlines():
                        json.loads(ln)
            except ValueError as e:
                bad_json.append(f"{rel}: {e}")
    iters = sorted(int(d.name.split("_")[1]) for d in paths.iterations.glob("iteration_*"))
    typed = []
    for k in iters:
        loaders = [(paths.validation(k), artifacts.load_validation),
                   (paths.hard_examples(k), artifacts.load_hard_examples), (paths.review(k), artifacts.load_review)]
        for f, load in loaders:
            if f.is_file():
                try:
                    load(paths, k)
                except store.StoreError as e:
                    typed.append(str(e))
    datasets = {}
    for d in sorted(paths.dataset_root.glob("v[0-9][0-9][0-9]")):
        datasets[d.name] = {f.name: (_read_json(f) if f.suffix == ".json" else f.read_text())
                            for f in sorted(d.iterdir()) if f.is_file() and f.suffix in (".json", ".txt", ".yaml")}
    per_iter = {}
    for k in iters:
        meta = _read_json(paths.metadata(k)) if paths.metadata(k).is_file() else {}
        per_iter[str(k)] = {
            "picks": [p["image"] for p in _read_json(paths.hard_examples(k))["picks"]]
            if paths.hard_examples(k).is_file() else None,
            "review": {key: v for key, v in _read_json(paths.review(k)).items()} if paths.review(k).is_file() else None,
            "metadata": {"dataset": meta.get("dataset"), "model": meta.get("model"), "converged": meta.get("converged"),
                         "reason": meta.get("reason")},
            "weights": _weights_digest(paths.best(k)) if paths.best(k).is_file() else None,
        }
    resumed = {}  # per training: epochs trained after a resume from a mid-training checkpoint
    for k in iters:
        if paths.train_progress(k).is_file():
            evs = [json.loads(ln) for ln in paths.train_progress(k).read_text().splitlines() if ln.strip()]
            first = next((i for i, e in enumerate(evs) if e["event"] == "resume"), len(evs))
            resumed[str(k)] = sum(e["event"] == "epoch_start" for e in evs[first:])
    state = _read_json(paths.state) if paths.state.is_file() else {}
    return {"files": files, "temp": temp, "bad_json": bad_json, "typed": typed, "datasets": datasets,
            "iterations": per_iter, "resumed": resumed, "csv": store.read_csv(paths.convergence_csv),
            "state": {k: state.get(k) for k in ("step", "iteration", "baseline", "converged", "reason", "stopped_at",
                                                "review_pending", "error", "dry_run", "auto")}}


_NUM = re.compile(r"\d+\.\d+")


def _masked(d: dict) -> dict:
    """`d` with the numbers in its reason masked ("Continue training: F1=0.1565" names the F1 it measured)."""
    return {**d, "reason": _NUM.sub("#", d.get("reason") or "")}


def _diff(a, b, where: str, out: list[str], limit: int = 12) -> None:
    """Append where a and b differ (dicts and lists walked, the first `limit` differences)."""
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: {'missing' if k not in b else 'extra'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", out, limit)
    elif a != b:
        out.append(f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}")


def compare(ref: dict, got: dict, *, tolerance: float, exact: bool) -> tuple[list[str], dict[str, float]]:
    """Differences between a run tree and the reference (empty: equal), and the metric deltas."""
    problems: list[str] = []
    # the FN crops are named after the model's false negatives: other weights, other names
    model_named = (lambda f: False) if exact else MODEL_NAMED.search
    rf, gf = ({f for f in x["files"] if not model_named(f)} for x in (ref, got))
    missing, extra = sorted(rf - gf), sorted(gf - rf)
    if missing:
        problems.append(f"files missing: {missing[:6]}{' ...' if len(missing) > 6 else ''}")
    if extra:
        problems.append(f"files not in the reference: {extra[:6]}{' ...' if len(extra) > 6 else ''}")
    if got["temp"]:
        problems.append(f"temp files left behind: {got['temp'][:6]}")
    problems += [f"bad JSON: {e}" for e in got["bad_json"]]
    problems += [f"artefact does not load: {e}" for e in got["typed"]]
    if got["state"].get("step") != "done":
        problems.append(f"run_state.json step is {got['state'].get('step')!r}, not 'done'")
    for name, part in (("state", "state"), ("dataset", "datasets")):
        d: list[str] = []
        r, g = ref[part], got[part]
        if part == "state" and not exact:
            r, g = _masked(r), _masked(g)
        _diff(r, g, name, d)
        problems += d
    for k in sorted(set(ref["iterations"]) | set(got["iterations"])):
        r, g = ref["iterations"].get(k), got["iterations"].get(k)
        if r is None or g is None:
            problems.append(f"iteration {k}: {'missing' if g is None else 'not in the reference'}")
            continue
        d = []
        keys = ["picks", "review", "metadata"] + (["weights"] if exact else [])
        rr, gg = {x: r[x] for x in keys}, {x: g[x] for x in keys}
        if not exact:
            rr["metadata"], gg["metadata"] = _masked(rr["metadata"]), _masked(gg["metadata"])
        _diff(rr, gg, f"iteration {k}", d)
        problems += d
    deltas: dict[str, float] = {}
    if [r["iteration"] for r in ref["csv"]] != [r["iteration"] for r in got["csv"]]:
        problems.append(f"CSV iterations {[r['iteration'] for r in got['csv']]} != "
                        f"{[r['iteration'] for r in ref['csv']]}")
        return problems, deltas
    for r, g in zip(ref["csv"], got["csv"]):
        k = r["iteration"]
        for col in BOOKKEEPING:
            a, b = r[col], g[col]
            if col == "reason" and not exact:
                a, b = _masked({"reason": a})["reason"], _masked({"reason": b})["reason"]
            if a != b:
                problems.append(f"CSV iteration {k} {col}: {g[col]!r} != reference {r[col]!r}")
        for col in METRICS:
            a, b = r[col], g[col]
            if (a == "") != (b == ""):
                problems.append(f"CSV iteration {k} {col}: {b!r} vs reference {a!r}")
                continue
            if a == "":
                continue
            delta = abs(float(a) - float(b))
            deltas[f"{k}/{col}"] = round(delta, 6)
            if delta > (0.0 if exact else tolerance):
                problems.append(f"CSV iteration {k} {col}: {b} vs reference {a} (|delta| {delta:.4f} > "
                                f"{0.0 if exact else tolerance})")
        if exact:
            for col in COUNTS:
                if r[col] != g[col]:
                    problems.append(f"CSV iteration {k} {col}: {g[col]!r} != reference {r[col]!r}")
    return problems, deltas


# -------------------------------------------------------------------------------------------- the harness

def _judge(name: str, kind: str, attempts: list[Attempt], finished: bool, snap: dict | None, ref: dict,
           tolerance: float, seconds: float) -> PointResult:
    res = PointResult(name, kind, attempts, kills=sum(a.killed_at is not None for a in attempts), finished=finished,
                      seconds=round(seconds, 1))
    if not finished:
        last = attempts[-1]
        res.problems.append(f"did not finish: al_loop.py {' '.join(last.args)} exited {last.code}")
        return res
    res.trainings_resumed = snap["resumed"]
    res.exact = not any(snap["resumed"].values())
    res.problems, res.deltas = compare(ref, snap, tolerance=tolerance, exact=res.exact)
    res.max_delta = max(res.deltas.values(), default=0.0)
    res.passed = not res.problems
    return res


def run_harness(cfg: Path, points: list[KillPoint], *, tolerance: float = TOLERANCE, second_reference: bool = False,
                random_n: int = 0, random_chain: int = 1, seed: int = 0, keep: Path | None = None,
                say: Callable[[str], None] = print) -> dict:
    """The reference run, then every point (and `random_n` random points drawn over the reference's duration);
    returns the report (see `summarize`). `keep`: move each point's run tree there instead of deleting it."""
    t_start = time.monotonic()
    run_dir = _run_dir(cfg)
    logs = cfg.parent / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    t0 = time.monotonic()
    attempts, ok = run_point(cfg, KillPoint("reference", "none"), logs / "reference.log")
    if not ok:
        raise RuntimeError(f"the uninterrupted reference run failed; see {logs / 'reference.log'}")
    duration = time.monotonic() - t0
    ref = snapshot(run_dir)
    say(f"reference: {duration:.1f} s; CSV: " + ", ".join(
        f"it{r['iteration']} f1={r['f1']} map50={r['map50']} test_map50={r['test_map50']}" for r in ref["csv"]))
    if keep:
        _keep(run_dir, keep / "reference")
    todo = ([KillPoint("second uninterrupted run", "none")] if second_reference else []) + list(points) + \
        random_points(random_n, duration, seed, chain=random_chain)
    results = []
    for i, point in enumerate(todo, 1):
        t0 = time.monotonic()
        log = logs / f"point_{i:02d}.log"
        attempts, finished = run_point(cfg, point, log)
        snap = snapshot(run_dir) if finished else None
        res = _judge(point.name, point.kind, attempts, finished, snap, ref, tolerance, time.monotonic() - t0)
        results.append(res)
        kills = "; ".join(f"{a.killed_at} @ {a.where}" + (f" [damaged: {', '.join(a.damaged)}]" if a.damaged else "")
                          for a in attempts if a.killed_at)
        say(f"[{i}/{len(todo)}] {'PASS' if res.passed else 'FAIL'} {point.name}: {res.kills} kill(s), "
            f"{len(attempts) - 1} restart(s), {res.seconds:.0f} s, max |delta| {res.max_delta:.4f}"
            f"{'' if res.exact else ' (training resumed)'}; {kills or 'not killed'}")
        for p in res.problems:
            say(f"      {p}")
        if keep:
            _keep(run_dir, keep / f"point_{i:02d}")
    report = summarize(results, reference=ref, reference_seconds=duration, tolerance=tolerance,
                       wall=time.monotonic() - t_start)
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _keep(run_dir: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), dest)


def _stats(xs: list[float]) -> dict:
    return {"n": len(xs), "median": round(statistics.median(xs), 6) if xs else None,
            "max": round(max(xs), 6) if xs else None}


def summarize(results: list[PointResult], *, reference: dict, reference_seconds: float, tolerance: float,
              wall: float) -> dict:
    """Pass counts and metric deltas, overall and by kind; every point with its attempts."""
    killed = [r for r in results if r.kind != "none"]
    resumed = [r for r in killed if r.finished and not r.exact]
    by_col: dict[str, list[float]] = {}
    for r in resumed:
        for key, d in r.deltas.items():
            by_col.setdefault(key.split("/", 1)[1], []).append(d)
    return {
        "points": len(killed), "passed": sum(r.passed for r in killed),
        "kills": sum(r.kills for r in killed), "not_killed": [r.name for r in killed if r.kills == 0],
        "by_kind": {k: {"points": sum(r.kind == k for r in results), "passed": sum(r.passed for r in results
                                                                                   if r.kind == k)}
                    for k in sorted({r.kind for r in results})},
        "second_reference": next(({"passed": r.passed, "max_delta": r.max_delta, "problems": r.problems}
                                  for r in results if r.kind == "none"), None),
        "tolerance": tolerance,
        "exact_points": sum(r.exact for r in killed if r.finished),
        "training_resumed_points": len(resumed),
        "max_delta_per_point": _stats([r.max_delta for r in resumed]),
        "delta_per_column": {c: _stats(v) for c, v in sorted(by_col.items())},
        "reference_seconds": round(reference_seconds, 1), "wall_seconds": round(wall, 1),
        "reference_csv": reference["csv"],
        "results": [asdict(r) for r in results],
    }


def markdown(report: dict, command: str) -> str:
    """The report as a short Markdown page."""
    lines = [f"# Crash harness: {report['passed']}/{report['points']} runs passed, {report['kills']} kills", "",
             f"Command: `{command}`", "",
             f"Wall time {report['wall_seconds']:.0f} s; the uninterrupted reference run took "
             f"{report['reference_seconds']:.1f} s. {report['kills']} kills in all.", ""]
    sr = report["second_reference"]
    if sr:
        lines += [f"Second uninterrupted run vs the reference: {'identical' if sr['passed'] else 'DIFFERENT'} "
                  f"(max |delta| {sr['max_delta']:.6f}){'' if sr['passed'] else ': ' + '; '.join(sr['problems'])}.",
                  ""]
    m = report["max_delta_per_point"]
    lines += [f"Points held to exact equality (no training resumed mid-way): {report['exact_points']}. Points whose "
              f"training resumed from a mid-training checkpoint: {report['training_resumed_points']}; their largest "
              f"metric |delta| per point: median {m['median']}, max {m['max']} (tolerance {report['tolerance']}).",
              "", "| column | n | median |delta| | max |delta| |", "|---|---|---|---|"]
    lines += [f"| {c} | {s['n']} | {s['median']} | {s['max']} |" for c, s in report["delta_per_column"].items()]
    lines += ["", "| # | point | result | kills: moment @ where the run was | restarts | max |delta| | s |",
              "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(report["results"], 1):
        kills = "<br>".join(f"{a['killed_at']} @ {a['where']}" + (f" (damaged: {', '.join(a['damaged'])})"
                                                                   if a["damaged"] else "")
                            for a in r["attempts"] if a["killed_at"]) or "-"
        res = "pass" if r["passed"] else "FAIL: " + "; ".join(r["problems"])[:300]
        lines.append(f"| {i} | {r['name']} | {res} | {kills} | {len(r['attempts']) - 1} | "
                     f"{r['max_delta']:.4f}{'' if r['exact'] else ' (resumed)'} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=1, help="random kill points (seeded)")
    ap.add_argument("--random-chain", type=int, default=3, help="kills per random point (the later ones kill "
                    "the --resume of the one before)")
    ap.add_argument("--targeted", choices=("chains", "each", "none"), default="chains",
                    help="the targeted moments as three chained runs, each in a run of its own, or none")
    ap.add_argument("--second-reference", action="store_true", help="also compare a second uninterrupted run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="metric tolerance after a resumed training")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where crash_harness.{json,md} go")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp dir, deleted)")
    ap.add_argument("--keep", action="store_true", help="keep every run tree under WORK/kept/")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = (args.work or Path(tempfile.mkdtemp(prefix="al_crash_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", flush=True)

    size = Size()
    data = make_data(work, size)
    baseline = train_baseline(work, size)
    say(f"learned baseline: {baseline}")
    cfg = write_config(work, data, baseline, size)
    points = [] if args.targeted == "none" else targeted_points(chained=args.targeted == "chains")
    report = run_harness(cfg, points, tolerance=args.tolerance, second_reference=args.second_reference,
                         random_n=args.random, random_chain=args.random_chain, seed=args.seed,
                         keep=work / "kept" if args.keep else None, say=say)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/crash_harness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "crash_harness.json").write_text(json.dumps({"command": command, **report}, indent=1) + "\n")
    (args.out / "crash_harness.md").write_text(markdown(report, command))
    say(f"{report['passed']}/{report['points']} runs passed ({report['kills']} kills); report in "
        f"{args.out / 'crash_harness.md'}")
    if args.work is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["passed"] == report["points"] else 1


if __name__ == "__main__":
    sys.exit(main())
