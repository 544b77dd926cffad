"""The simulation's driver: which units a call runs (arms, upper bounds, compute checks), in what order and how
many side by side, what is kept in simulation_state.json so that a killed simulation continues, and the results
it writes at the end."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from al.core import store
from al.sim import unit as units
from al.sim.data import prepare_seed_data
from al.sim.spec import EXTENDABLE, STATE_SCHEMA, UPPER, SimSpec, SimulationError, arm_folder, check_spec

REPEAT_SEED_OFFSET = 1000
"""The compute check's repeat of a point trains with the seed's training seed plus this."""


@dataclass(frozen=True)
class Job:
    """One unit of work: an arm of a seed and protocol, or one of its extra points (UPPER, @check_...)."""

    seed: int
    proto: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.seed}/{self.proto}/{self.name}"

    @property
    def is_arm(self) -> bool:
        return not self.name.startswith("@")


def baseline_path(spec: SimSpec, seed: int, proto: str) -> Path:
    """The seed's shared baseline of a protocol family, trained by its first arm: converged trains it by early
    stopping from the start weights, matched and chained for epochs_base epochs."""
    return spec.out / f"seed_{seed}" / ("baseline_converged.pt" if proto == "converged" else "baseline.pt")


def _family(job: Job) -> tuple[int, str]:
    return job.seed, "converged" if job.proto == "converged" else "fixed"


def plan(spec: SimSpec, done: set[str]) -> list[Job]:
    """The units this call still has to run, in priority order: seed by seed (so a run cut short has whole seeds),
    its arms, then its upper bound, then its compute checks (they read random's finished arm)."""
    extra: dict[int, list[Job]] = {}
    for k in spec.extra_keys():
        seed, proto, name = k.split("/", 2)
        extra.setdefault(int(seed), []).append(Job(int(seed), proto, name))
    jobs = []
    for s in spec.all_seeds:
        jobs += [Job(s, p, a) for p in spec.protocols for a in spec.arms]
        jobs += sorted(extra.get(s, []), key=lambda j: j.name != UPPER)
    return [j for j in jobs if j.key not in done]


def ready(spec: SimSpec, job: Job, done: set[str], making: set[tuple[int, str]]) -> str | None:
    """Whether `job` can start now: "run", "make" (it trains its family's shared baseline first), or None."""
    if job.is_arm:
        if baseline_path(spec, job.seed, job.proto).is_file():
            return "run"
        return None if _family(job) in making else "make"
    if job.name.startswith("@check_last"):
        return "run" if f"{job.seed}/{job.proto}/random" in done else None
    return "run"


def _load_state(spec: SimSpec) -> dict:
    path = spec.out / "simulation_state.json"
    if not path.is_file():
        return {"spec": spec.identity(), "units": {}}
    try:
        state = store.read_json(path, schema=STATE_SCHEMA)
    except store.StoreError as e:
        raise SimulationError(f"{e} Delete {path} to redo every unit, or use another --out.") from None
    old = {k: v for k, v in (state.get("spec") or {}).items() if k not in EXTENDABLE}
    new = spec.identity()
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SimulationError(f"{spec.out} holds a simulation with other settings ({', '.join(diff)} differ). "
                              f"Run the same command as before to continue it, or use another --out.")
    return state


def machine() -> str:
    """One line: the CPU, its cores and the Python, for the results."""
    import os
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"


def simulate(spec: SimSpec, *, say: Callable[[str], None] = print, stop_after_units: int | None = None) -> dict:
    """Run (or continue) the simulation; returns the summary. stop_after_units stops after that many units
    finished in this call (what a kill would do, for tests)."""
    from filelock import FileLock, Timeout

    from al.yolo.detector import prepare_offline

    check_spec(spec)
    spec.out = spec.out.resolve()
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".simulate.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SimulationError(f"Another simulation is running in {out} (lock {out / '.simulate.lock'}); wait for it "
                              f"or use another --out.") from None
    try:
        state = _load_state(spec)
        prepare_offline(out / ".yolo_config")
        t0 = time.time()
        keys = [*spec.unit_keys(), *spec.extra_keys()]
        total = len(keys)
        done_before = sum(k in state["units"] for k in keys)

        def log(msg: str) -> None:
            say(f"[SIMULATE {time.time() - t0:7.1f}s] {msg}")

        log(f"{spec.data}: {len(spec.all_seeds)} seeds ({len(spec.confirm_seeds)} of them for confirmation) x "
            f"{len(spec.protocols)} protocols x {len(spec.arms)} arms, rounds of {spec.round_budgets()} "
            f"{spec.budget_unit}, {total - len(spec.unit_keys())} upper-bound and compute-check points; work folder "
            f"{out}" + (f"; {done_before}/{total} units already done" if done_before else ""))

        def record(key: str, payload: dict, secs: float) -> None:
            state["units"][key] = {**payload, "seconds": secs}
            store.write_json(out / "simulation_state.json", state, schema=STATE_SCHEMA)
            done = sum(k in state["units"] for k in keys)
            left = total - done
            mean = statistics.mean(u["seconds"] for u in state["units"].values())
            pts = payload.get("rows") or [payload["row"]]
            from al.sim.results import write_results

            try:  # results always cover what is done; a report that fails here must not stop the training
                write_results(spec, state, time.time() - t0, say=lambda _: None)
            except Exception as e:  # noqa: BLE001 - the final write below raises it with its traceback
                log(f"WARNING: the intermediate results could not be written ({type(e).__name__}: {e}); the "
                    f"final ones are written at the end")
            log(f"[{done}/{total}] {key} done in {secs:.0f} s: " + ", ".join(
                f"{r[f'labelled_{spec.budget_unit}']}->{_num(r['test_map50_95'])}"
                f" ({r.get('train_epochs')} ep)" for r in pts)
                + (f"; {left} units left, about {left * mean / 60 / max(1, spec.jobs):.0f} min at the mean unit "
                   f"time so far" if left else ""))

        todo = plan(spec, set(state["units"]))
        for seed in dict.fromkeys(j.seed for j in todo):  # here, before units of one seed run side by side
            prepare_seed_data(spec, seed, out / f"seed_{seed}" / "data")
        workers = min(spec.jobs, max(1, len(todo)))
        if stop_after_units is not None:
            workers = 1
        if workers > 1:
            log(f"{workers} units at a time (--jobs {spec.jobs}); a seed's first arm trains its shared baseline "
                f"before its other arms start")
        finished = _run(spec, todo, workers, t0, record, state, stop_after_units, log)
        if finished is False:
            log(f"stopped after {stop_after_units} units; run the same command again to continue")
            return {}
        from al.sim.results import write_results

        return write_results(spec, state, time.time() - t0, say=log)
    finally:
        lock.release()


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _run(spec: SimSpec, todo: list[Job], workers: int, t0: float, record: Callable[[str, dict, float], None],
         state: dict, stop_after: int | None, log: Callable[[str], None]) -> bool:
    """Run `todo` (in processes of their own when workers > 1). A failed unit keeps the units that wait for it
    waiting; every other unit finishes, then the first failure is raised: the same command continues."""
    pending = list(todo)
    making: set[tuple[int, str]] = set()
    failed: SimulationError | None = None
    n_done = 0

    def take() -> tuple[Job, str] | None:
        done = set(state["units"])
        for job in pending:
            how = ready(spec, job, done, making)
            if how is not None:
                pending.remove(job)
                if how == "make":
                    making.add(_family(job))
                return job, how
        return None

    if workers == 1:
        while pending:
            nxt = take()
            if nxt is None:
                break
            if stop_after is not None and n_done >= stop_after:
                return False
            job, _ = nxt
            try:
                key, payload, secs = do_unit(spec, job, log)
            except SimulationError as e:
                failed = failed or e
                making.discard(_family(job))
                continue
            making.discard(_family(job))
            record(key, payload, secs)
            n_done += 1
    else:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        mp = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp) as pool:
            running: dict = {}

            def fill() -> None:
                while len(running) < workers:
                    nxt = take()
                    if nxt is None:
                        return
                    job, _ = nxt
                    running[pool.submit(_worker, spec, job, t0)] = job

            fill()
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = running.pop(fut)
                    making.discard(_family(job))
                    try:
                        key, payload, secs = fut.result()
                        record(key, payload, secs)
                    except SimulationError as e:
                        failed = failed or e
                fill()
    if failed is not None:
        raise failed
    if pending:
        raise SimulationError(f"{len(pending)} units could not start (e.g. {pending[0].key}): the unit they wait "
                              f"for did not finish. Run the same command again.")
    return True


def _worker(spec: SimSpec, job: Job, t0: float) -> tuple[str, dict, float]:
    """workers > 1: one unit in a process of its own."""

    def log(msg: str) -> None:
        print(f"[SIMULATE {time.time() - t0:7.1f}s] {msg}", flush=True)

    return do_unit(spec, job, log)


def do_unit(spec: SimSpec, job: Job, log: Callable[[str], None]) -> tuple[str, dict, float]:
    """One unit: an arm's loop (training its family's shared baseline first when there is none yet), or one
    training point. Returns (key, payload, seconds); payload is {"rows": [...]} or {"row": {...}}."""
    seed_dir = spec.out / f"seed_{job.seed}"
    data = seed_dir / "data"
    info = prepare_seed_data(spec, job.seed, data)
    u0 = time.time()
    tag = f"seed {job.seed} {job.proto}/{job.name}"
    if job.is_arm:
        baseline = baseline_path(spec, job.seed, job.proto)
        has = baseline.is_file()
        log(f"seed {job.seed} ({info['seed_set']} seed images, pool {info['pool']}), {job.proto}/{job.name}"
            + ("" if has else ": trains the shared baseline first"))
        unit_dir = seed_dir / job.proto / arm_folder(job.name)
        cfg = units.unit_config(spec, data, unit_dir / "run", job.name, job.proto, job.seed,
                                initial_weights=baseline if has else None)
        first = unit_dir / "run" / "iterations" / "iteration_0" / "train_result.json"
        if has and first.is_file() and "adopted" not in store.read_json(first):
            cfg["model"].pop("initial_weights", None)  # it trained its own baseline before another arm's was there
        units.run_loop_unit(cfg, unit_dir, tag, log)
        made = None
        if not has:
            best = unit_dir / "run" / "iterations" / "iteration_0" / "weights" / "best.pt"
            store.write_bytes_atomic(baseline, best.read_bytes())
            made = units.point_row(unit_dir / "run", 0)
            store.write_json(baseline.with_suffix(".json"), {"row": made, "made_by": job.key})
        elif baseline.with_suffix(".json").is_file():
            made = store.read_json(baseline.with_suffix(".json"))["row"]
        rows = units.unit_rows(spec, data, unit_dir, job.name, job.proto, job.seed, baseline_row=made)
        return job.key, {"rows": rows}, round(time.time() - u0, 1)
    unit_dir = seed_dir / job.proto / job.name.lstrip("@")
    if job.name == UPPER:
        data_yaml = data / "full.yaml"
        mult = 1
    else:  # @check_<first|last>_x<mult>
        _, which, m = job.name.lstrip("@").split("_")
        mult = int(m.lstrip("x"))
        data_yaml = data / "data.yaml" if which == "first" else _last_yaml(spec, job, data, unit_dir)
    log(f"{tag}: one training point ({data_yaml.name}, cap x{mult})")
    # the repeat of a point trains with another training seed: on one machine the same seed gives the same model
    # bit for bit, so only another seed measures how much a point's mAP moves between trainings
    train_seed = job.seed + REPEAT_SEED_OFFSET if job.name.endswith("_x1") else job.seed
    cfg = units.point_config(spec, data_yaml, unit_dir / "run", job.proto, train_seed, mult)
    units.run_loop_unit(cfg, unit_dir, tag, log)
    row = {"seed": job.seed, "protocol": job.proto, "arm": job.name, "round": 0, "mult": mult,
           **units.point_row(unit_dir / "run", 0)}
    return job.key, {"row": row}, round(time.time() - u0, 1)


def _last_yaml(spec: SimSpec, job: Job, data: Path, unit_dir: Path) -> Path:
    """A data.yaml whose train split is random's last training set (its final dataset version)."""
    import yaml

    from al.core.paths import RunPaths
    from al.data import dataset

    paths = RunPaths(spec.out / f"seed_{job.seed}" / job.proto / "random" / "run")
    _, splits = dataset.read_snapshot(paths.dataset_version(spec.n_rounds))
    unit_dir.mkdir(parents=True, exist_ok=True)
    store.write_text_atomic(unit_dir / "train.txt", "\n".join(splits["train"]) + "\n")
    raw = yaml.safe_load((data / "data.yaml").read_text())
    raw.update(train=str(unit_dir / "train.txt"), val=str(data / "val.txt"), test=str(data / "test.txt"))
    store.write_text_atomic(unit_dir / "data.yaml", yaml.safe_dump(raw, sort_keys=False))
    return unit_dir / "data.yaml"
