"""What a simulation runs (SimSpec), its checks, and the names of its arms and protocols."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from al.core.config import ConfigError, parse_yaml
from al.core.errors import UserError

STRATEGIES = ("random", "entropy", "combined", "most_boxes", "diversity")
"""The pool strategies an arm may name (sampling_strategy.strategy)."""
ARMS = ("random", "entropy", "combined")
PROTOCOLS = ("converged", "matched", "chained")
MODELS = ("yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml")
STATE_SCHEMA = 1
DEFAULT_POOL = 300
UPPER = "@upper"
"""The name of a seed's upper-bound unit: the seed set and the whole pool, labelled, trained once per protocol."""
CHECK_ROUNDS = ("first", "last")
"""converged: random's points that the compute check retrains (its smallest and its largest training set)."""


class SimulationError(UserError):
    """A simulation that cannot run as asked; the message names the option or file and the fix."""


class ArmFailed(SimulationError):
    """An arm's loop stopped (a failed step); the simulation continues from there when run again."""


@dataclass
class SimSpec:
    """What a simulation runs. Everything but `out`, `device`, `jobs` and the EXTENDABLE lists is part of its
    identity: a work folder made with other settings is refused (use another --out). Arms, seeds and protocols may
    be added to (or left out of) a work folder: its finished units and shared baselines are kept, and the results
    cover the arms, seeds and protocols asked for this time (an ablation runs only its new arms)."""

    data: Path
    out: Path
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 7])
    """The tuning seeds: where a default may be chosen."""
    confirm_seeds: list[int] = field(default_factory=list)
    """Fresh seeds that chose nothing: the verdicts are given on them (and on the tuning seeds, apart)."""
    protocols: list[str] = field(default_factory=lambda: ["converged"])
    rounds: int = 3
    budget: int = 32
    budgets: list[int] | None = None
    """Per-round budgets (rounds that grow, e.g. 16,32,64); overrides rounds x budget."""
    budget_unit: str = "images"
    seed_set: int = 32
    pool: int | None = None
    """Pool images drawn per seed; None: DEFAULT_POOL, or all the rest of train when fewer; 0: all the rest."""
    disjoint: bool = True
    """Seeds draw their seed set and pool from disjoint blocks of train where it is large enough (then the seeds
    are independent samples); where it is not, blocks wrap around and the overlap is reported."""
    seed_list: Path | None = None
    pool_list: Path | None = None
    model: str = "yolov8n.yaml"
    imgsz: int = 96
    batch: int = 16
    epochs_base: int = 100
    """matched, chained: the baseline's epochs."""
    epochs_round: int = 10
    """chained: epochs per round (matched: with matched_steps unset, these epochs of the seed set)."""
    matched_steps: int | None = 480
    """matched: training batches per point; None: --epochs-round epochs of the seed set."""
    max_epochs: int = 60
    """converged: the most epochs a point trains (its cap)."""
    patience: int = 10
    """converged: a point stops when its validation fitness has not improved for this many epochs."""
    upper_bound: bool = True
    """Train each seed's upper bound (the seed set and the whole pool) once per protocol."""
    check_seeds: int = 2
    """converged: on this many seeds (the first tuning seeds) random's first and last points are retrained twice,
    with the same budget (the retrain noise) and with twice its cap and patience (the compute check)."""
    lr: float = 0.002
    conf: float = 0.15
    epoch_val: bool = False
    """matched, chained: validate after every epoch and keep the best epoch's weights (converged always does)."""
    device: str = "cpu"
    workers: int = 0
    jobs: int = 1
    """Units run side by side in this many processes (an Ultralytics training on a CPU uses cores - 1 threads,
    one on a 2-core machine). The seed sets, pools and random draws do not depend on it."""

    def identity(self) -> dict:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
             if k not in ("out", "device", "workers", "jobs", *EXTENDABLE)}
        d["data"] = str(Path(self.data).resolve())
        return d

    def settings(self) -> dict:
        """The identity with this call's arms, seeds and protocols: what the results are of."""
        return {**self.identity(), **{k: list(getattr(self, k)) for k in EXTENDABLE}}

    @property
    def all_seeds(self) -> list[int]:
        return list(dict.fromkeys([*self.seeds, *self.confirm_seeds]))

    def round_budgets(self) -> list[int]:
        """The budget of each round, in the budget unit."""
        return list(self.budgets) if self.budgets else [self.budget] * self.rounds

    @property
    def n_rounds(self) -> int:
        return len(self.round_budgets())

    def unit_keys(self) -> list[str]:
        return [f"{s}/{p}/{a}" for s in self.all_seeds for p in self.protocols for a in self.arms]

    def extra_keys(self) -> list[str]:
        """The upper-bound and compute-check units of this call."""
        keys = []
        for s in self.all_seeds:
            for p in self.protocols:
                if self.upper_bound:
                    keys.append(f"{s}/{p}/{UPPER}")
                if p == "converged" and s in self.check_seeds_list() and "random" in self.arms:
                    keys += [f"{s}/{p}/@check_{r}_x{m}" for r in CHECK_ROUNDS for m in (1, 2)]
        return keys

    def check_seeds_list(self) -> list[int]:
        return self.seeds[:self.check_seeds]


EXTENDABLE = ("arms", "seeds", "confirm_seeds", "protocols")


def auto_jobs(device: str, cores: int | None = None) -> int:
    """Units to run side by side: on a CPU, as many trainings as fit the cores when each takes Ultralytics'
    cores - 1 threads (2 on a 2-core machine, 1 from 3 cores up); on a GPU one."""
    if str(device).strip().lower() != "cpu":
        return 1
    n = max(1, cores if cores is not None else (os.cpu_count() or 1))
    return max(1, n // max(1, n - 1))


def parse_list(text: str, what: str, cast: Callable = str) -> list:
    """'a,b,c' -> [a, b, c]; for whole numbers also ranges, '0-7,10'; an empty or bad entry is refused naming the
    option."""
    items = [s.strip() for s in str(text).split(",")]
    if not items or any(not s for s in items):
        raise SimulationError(f"--{what} {text!r}: give a comma-separated list, e.g. --{what} "
                              f"{'0,1,2' if cast is int else 'random,entropy'}")
    try:
        out: list = []
        for s in items:
            lo, dash, hi = s.partition("-")
            if cast is int and dash and lo:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out += list(range(a, b + 1))
            else:
                out.append(cast(s))
    except ValueError:
        raise SimulationError(f"--{what} {text!r}: every entry must be a whole number or a range, e.g. --{what} "
                              f"0,1,2 or 0-7") from None
    if len(set(out)) != len(out):
        raise SimulationError(f"--{what} {text!r} lists an entry twice")
    return out


def check_spec(spec: SimSpec) -> None:
    """Refuse options that cannot work, before anything is drawn or trained."""
    bad = [a for a in spec.arms if arm_strategy(a)[0] not in STRATEGIES]
    if bad:
        raise SimulationError(f"--arms: {bad} unknown; choose from {', '.join(STRATEGIES)} (the pool strategies of "
                              f"sampling_strategy.strategy), optionally with sampling_strategy keys of their own: "
                              f"combined@combined_class_balance_weight=0+hard_negative_share=0")
    bad = [p for p in spec.protocols if p not in PROTOCOLS]
    if bad:
        raise SimulationError(f"--protocol: {bad} unknown; choose from {', '.join(PROTOCOLS)}")
    if spec.budget_unit not in ("images", "boxes"):
        raise SimulationError(f"--budget-unit {spec.budget_unit!r}: use images or boxes")
    for name, v, low in (("rounds", spec.rounds, 1), ("budget", spec.budget, 1), ("seed-set", spec.seed_set, 1),
                         ("epochs-base", spec.epochs_base, 1), ("epochs-round", spec.epochs_round, 1),
                         ("batch", spec.batch, 1), ("max-epochs", spec.max_epochs, 1), ("patience", spec.patience, 1),
                         ("check-seeds", spec.check_seeds, 0)):
        if v < low:
            raise SimulationError(f"--{name} {v}: must be {low} or more")
    if spec.budgets is not None and (not spec.budgets or min(spec.budgets) < 1):
        raise SimulationError(f"--budgets {spec.budgets}: give one budget of 1 or more per round, e.g. 16,32,64")
    if spec.jobs < 1:
        raise SimulationError(f"--jobs {spec.jobs}: must be 1 or more (0 on the command line: auto)")
    if spec.pool is not None and spec.pool < 0:
        raise SimulationError(f"--pool {spec.pool}: must be 0 (all the rest of train) or more")
    if spec.matched_steps is not None and spec.matched_steps < 1:
        raise SimulationError(f"--matched-steps {spec.matched_steps}: must be 1 or more (0: --epochs-round epochs "
                              f"of the seed set)")
    if spec.imgsz % 32 or spec.imgsz < 32:
        raise SimulationError(f"--imgsz {spec.imgsz}: must be a multiple of 32, e.g. {max(32, spec.imgsz // 32 * 32)}")
    if not (spec.model in MODELS or (spec.model.endswith(".pt") and Path(spec.model).is_file())):
        raise SimulationError(f"--model {spec.model!r}: use one of {', '.join(MODELS)} (built untrained from "
                              f"Ultralytics' YAML, nothing is downloaded) or a local .pt file")
    if not spec.seeds:
        raise SimulationError("--seeds: give at least one seed")
    both = sorted(set(spec.seeds) & set(spec.confirm_seeds))
    if both:
        raise SimulationError(f"--confirm-seeds {both} are also tuning seeds (--seeds); confirmation seeds must be "
                              f"fresh: choose others")
    for a in spec.arms:
        arm_strategy(a)  # a malformed variant is refused here, an unknown key by the arm's config check


def arm_strategy(arm: str) -> tuple[str, dict]:
    """'combined@key=value+key=value' -> ('combined', {key: value}): an arm is a strategy, optionally with
    sampling_strategy keys of its own (the ablation arms); values are YAML scalars."""
    name, _, mods = arm.partition("@")
    out: dict = {}
    for item in filter(None, mods.split("+")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SimulationError(f"--arms {arm!r}: {item!r} is not key=value; write e.g. "
                                  f"combined@combined_diversity_weight=0.5+hard_negative_share=0")
        try:
            out[key.strip()] = parse_yaml(value, "value")
        except ConfigError:  # a tag, or a syntax error (an unclosed '[')
            raise SimulationError(f"--arms {arm!r}: {value!r} is not a plain YAML value; write a number, true/false "
                                  f"or a word, e.g. {key.strip()}=0.5") from None
    return name.strip(), out


def arm_folder(arm: str) -> str:
    """The arm's folder name (a variant's '@', '=' and '+' become '_')."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in arm)
