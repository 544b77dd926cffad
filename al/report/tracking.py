"""The experiment history in MLflow (docs/TRACKING.md): one MLflow run per iteration, the champion in the registry.

The only module that imports mlflow (an import-linter contract keeps it so), and only when tracking.mlflow is
enabled. It talks to the store through an explicit MlflowClient, never through mlflow's global ("fluent") state
or the MLFLOW_TRACKING_URI default, so nothing lands in the current directory's mlruns/. Every call is idempotent:
the run of iteration k is found again by its tags (run key + iteration) and updated, never duplicated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from al.core import artifacts, store
from al.core.config import Config, MlflowConfig
from al.core.errors import UserError
from al.core.paths import RunPaths
from al.data import dataset

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

RUN_KEY_TAG = "al.run_key"
"""Hash of the run directory's absolute path: tells this run's iterations from another run's in a shared store."""
ITERATION_TAG = "al.iteration"
RUN_DIR_TAG = "al.run_dir"
DIGEST_TAG = "al.config_digest"
SUPERSEDED_TAG = "al.superseded"
PROMOTION_TAG = "promotion"
"""promoted | rejected | none (no promotion.json: the gate did not run)."""
REJECTED_TAG = "rejected"
CHAMPION_ALIAS = "champion"
CHAMPION_ARTIFACT = "champion"
"""Artefact folder of a promoted iteration's run holding its best.pt (the registered model version's source)."""

_BATCH = 100  # MLflow's per-request limit on params and tags (metrics: 1000)


class TrackingError(UserError):
    """The MLflow store refused or could not be reached; the message names the store and what to do."""


@dataclass
class Logged:
    """What one call of log_iteration recorded (for the step's message and the tests)."""

    run_id: str
    created: bool
    metrics: int
    params: int
    artifacts: int
    registered_version: str | None = None
    champion_version: str | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- where it goes

def store_uri(ml: MlflowConfig, paths: RunPaths) -> str:
    """tracking.mlflow.tracking_uri, else the run's own SQLite store (paths.mlflow_store/mlflow.db)."""
    return ml.tracking_uri or f"sqlite:///{paths.mlflow_store.resolve() / 'mlflow.db'}"


def shown_uri(ml: MlflowConfig, paths: RunPaths) -> str:
    """store_uri for messages and logs: a password in it (postgresql://user:secret@host/db) is masked."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", store_uri(ml, paths))


def _artifact_location(ml: MlflowConfig, paths: RunPaths) -> str | None:
    if ml.artifact_location:
        loc = ml.artifact_location
        return loc if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", loc) else Path(loc).resolve().as_uri()
    if ml.tracking_uri is None:  # the run's own store keeps its artefacts beside the database
        return (paths.mlflow_store.resolve() / "artifacts").as_uri()
    return None  # a server or a shared database: its own default


def experiment_name(ml: MlflowConfig, paths: RunPaths) -> str:
    return ml.experiment or paths.root.resolve().name


def model_name(ml: MlflowConfig, paths: RunPaths) -> str:
    return ml.registered_model or re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{experiment_name(ml, paths)}-detector")


def run_key(paths: RunPaths) -> str:
    return hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:16]


def _client(ml: MlflowConfig, paths: RunPaths) -> MlflowClient:
    # mlflow logs its database migrations at INFO on stderr: that would draw over the TUI
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    uri = store_uri(ml, paths)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class _Guard:
    """Turns anything the store raises into a TrackingError naming the store and the fixes (a UserError: the
    runner shows one line and the run stays resumable)."""

    def __init__(self, ml: MlflowConfig, paths: RunPaths, what: str):
        self.uri, self.what = shown_uri(ml, paths), what

    def __enter__(self) -> _Guard:
        return self

    def __exit__(self, typ, exc, tb) -> Literal[False]:
        if exc is None or isinstance(exc, UserError) or not isinstance(exc, Exception):
            return False
        raise TrackingError(f"MLflow store {self.uri} failed while logging {self.what}: {type(exc).__name__}: "
                            f"{exc}. Fix the store "
                            f"(tracking.mlflow.tracking_uri; is the server up?) and --resume: the step logs again "
                            f"without duplicating; or set tracking.mlflow.enabled: false") from exc


def _experiment_id(client: MlflowClient, ml: MlflowConfig, paths: RunPaths) -> str:
    name = experiment_name(ml, paths)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=_artifact_location(ml, paths))
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _runs(client: MlflowClient, exp_id: str, paths: RunPaths, *, iteration: int | None = None) -> list:
    """This run directory's active MLflow runs (of one iteration), oldest first."""
    from mlflow.entities import ViewType

    flt = f"tags.`{RUN_KEY_TAG}` = '{run_key(paths)}'"
    if iteration is not None:
        flt += f" and tags.`{ITERATION_TAG}` = '{iteration}'"
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], flt, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


# -------------------------------------------------------------------------------------------- what is logged

def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and prefix.count(".") < 2:
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else k, v)
    else:
        yield prefix, value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _params(cfg: Config, paths: RunPaths, k: int) -> dict[str, str]:
    """The config values (flattened, dotted keys), its digest, the dataset version, the sampling strategy and the
    prompt version of iteration k."""
    out = dict(_flatten("", cfg.model_dump(mode="json", exclude={"tracking"})))
    out["config_digest"] = cfg.digest()
    out["config_file"] = str(cfg.source_path)
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    out["dataset_version"] = str(ver["id"])
    out["dataset_train_images"] = str(len(splits["train"]))
    out["sampling_strategy"] = cfg.sampling_strategy.strategy
    if paths.prompts(k).is_file():
        out["prompt_version"] = f"{paths.prompts(k).stem}@{_sha(paths.prompts(k))}"
    if paths.train_spec(k).is_file():  # what trained the evaluated model (lr0 decays per iteration)
        spec = store.read_json(paths.train_spec(k)).get("spec", {})
        out |= {f"train.{key}": str(spec[key]) for key in ("epochs", "lr0", "model") if key in spec}
        yoloe = spec.get("yoloe")  # a YOLOE model was trained with a versioned set of text prompts (al.yolo.yoloe)
        if isinstance(yoloe, dict):
            out |= {f"yoloe.{key}": str(yoloe[key]) for key in ("prompt_version", "prompt_digest", "target")
                    if key in yoloe}
    return {key[:250]: val[:6000] for key, val in out.items()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _counts(prefix: str, c: artifacts.Counts) -> dict[str, float]:
    return {f"{prefix}/{n}": float(getattr(c, n)) for n in ("precision", "recall", "f1", "tp", "fp", "fn")}


def _split(prefix: str, s: artifacts.SplitMetrics, per_class: bool) -> dict[str, float]:
    out = _counts(prefix, s) | {f"{prefix}/map50": s.map50, f"{prefix}/map50_95": s.map50_95,
                                f"{prefix}/images": float(s.images)}
    if per_class:
        out |= {f"{prefix}/f1/{name}": c.f1 for name, c in s.per_class.items()}
        out |= {f"{prefix}/ap50_95/{name}": ap.ap50_95 for name, ap in s.per_class_ap.items()}
    return out


def _metrics(cfg: Config, paths: RunPaths, k: int, promotion: artifacts.Promotion | None) -> dict[str, float]:
    """Iteration k's figures: the validation summary (val remainder, test, decision set), its CSV row's counts,
    and the gate's verdict. Keys: val/..., test/..., decision/..., data/..., gate/..."""
    per_class = cfg.tracking.mlflow.log_per_class
    val = artifacts.load_validation(paths, k)
    out = _counts("val", val.overall) | {"val/map50": val.map50, "val/map50_95": val.map50_95}
    if val.train_f1 is not None:
        out["train/f1_sample"] = val.train_f1
    if per_class:
        out |= {f"val/f1/{name}": c.f1 for name, c in val.per_class.items()}
        out |= {f"val/fn/{name}": float(c.fn) for name, c in val.per_class.items()}
        out |= {f"val/ap50_95/{name}": ap.ap50_95 for name, ap in val.per_class_ap.items()}
    if val.test is not None:
        out |= _split("test", val.test, per_class)
    if val.decision is not None:
        out |= _split("decision", val.decision, per_class)
    row = next((r for r in store.read_csv(paths.convergence_csv) if r.get("iteration") == str(k)), None)
    if row is not None:
        for col in ("labelled_images", "val_images"):
            if str(row.get(col, "")).strip():
                out[f"data/{col}"] = float(row[col])
        out["converged"] = float(row.get("converged") in ("1", "True", "true"))
    if promotion is not None:
        out["gate/promoted"] = float(promotion.promoted)
        out["gate/challenger"] = promotion.challenger_value
        out["gate/alarms"] = float(len(promotion.alarms))
        out["gate/champion_after"] = float(promotion.champion_after)
        for name in ("champion_value", "delta", "ci_low", "ci_high"):
            if (v := getattr(promotion, name)) is not None:
                out[f"gate/{name.removesuffix('_value')}"] = v
        if per_class:
            out |= {f"gate/ap50_95_delta/{name}": d for name, d in promotion.per_class_delta.items()}
    return {key: v for key, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _training_curve(paths: RunPaths, k: int) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, epoch) of each epoch of the training that made iteration k's model, from the
    training child's progress file (a resumed training repeats epochs: the last record of an epoch wins)."""
    f = paths.train_progress(k)
    if not f.is_file():
        return []
    epochs: dict[int, dict] = {}
    for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed training may be cut short
            continue
        if isinstance(ev, dict) and ev.get("event") == "epoch_end" and isinstance(ev.get("epoch"), int):
            epochs[ev["epoch"]] = ev
    out = []
    for epoch, ev in sorted(epochs.items()):
        ts = int(float(ev.get("t", 0)) * 1000)
        values = {**(ev.get("metrics") or {}), "fitness": ev.get("fitness")}
        for key, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                # Ultralytics' key names without parentheses (as its own MLflow callback writes them)
                out.append((f"train/{key.replace('(', '').replace(')', '')}", float(v), ts, epoch))
    return out


def _artifact_files(paths: RunPaths, k: int) -> list[tuple[Path, str]]:
    """(file, artefact folder) pairs: the trend plots as they stood after iteration k, its error-analysis plots,
    reports and the step files a reader of the history wants."""
    out = [(p, "plots") for p in sorted(paths.convergence_plots.glob("*.png"))]
    out += [(p, "error_analysis") for p in sorted(paths.error_analysis(k).glob("*.png"))]
    out += [(p, "error_analysis") for p in (paths.error_report(k), paths.prompt_suggestions(k))]
    out += [(p, "reports") for p in (paths.iteration_report(k), paths.metadata(k), paths.validation(k),
                                     paths.promotion(k), paths.hard_examples(k), paths.review(k), paths.prompts(k),
                                     paths.training_log(k))]
    return [(p, folder) for p, folder in out if p.is_file()]


# -------------------------------------------------------------------------------------------------- the calls

def log_iteration(cfg: Config, paths: RunPaths, k: int, *, dry_run: bool, auto: bool) -> Logged:
    """Create or update iteration k's MLflow run; on a promotion register the champion and move its alias."""
    ml = cfg.tracking.mlflow
    from mlflow.entities import Metric, Param, RunTag

    promotion = artifacts.load_promotion(paths, k) if paths.promotion(k).is_file() else None
    metrics = _metrics(cfg, paths, k, promotion)
    params = _params(cfg, paths, k)
    # a re-run logs the same figures with the same timestamps: the store keeps one value, not two
    ts = int(paths.validation(k).stat().st_mtime * 1000)
    with _Guard(ml, paths, f"iteration {k}'s run"):
        client = _client(ml, paths)
        exp_id = _experiment_id(client, ml, paths)
        found = _runs(client, exp_id, paths, iteration=k)
        tags = {RUN_KEY_TAG: run_key(paths), ITERATION_TAG: str(k), RUN_DIR_TAG: str(paths.root.resolve()),
                DIGEST_TAG: cfg.digest(), "dry_run": str(dry_run).lower(), "auto": str(auto).lower(),
                PROMOTION_TAG: "none" if promotion is None else ("promoted" if promotion.promoted else "rejected")}
        if found:
            run = found[0]
            client.update_run(run.info.run_id, status="RUNNING")
        else:
            run = client.create_run(exp_id, run_name=f"iteration_{k}", tags=tags)
        rid = run.info.run_id
        logged = Logged(run_id=rid, created=not found, metrics=0, params=0, artifacts=0)
        if len(found) > 1:
            logged.notes.append(f"{len(found)} MLflow runs are tagged iteration {k} of this run directory; "
                                f"updating the oldest ({rid})")

        # params are write-once in MLflow: a value that changed (config edited before a --resume) is noted in a tag
        old = run.data.params if found else {}
        new = {key: v for key, v in params.items() if key not in old}
        changed = sorted(key for key, v in params.items() if key in old and old[key] != v)
        if changed:
            tags["al.params_changed"] = json.dumps({key: params[key] for key in changed})[:5000]
            logged.notes.append(f"config values changed since iteration {k} was first logged: {changed[:5]} "
                                f"(MLflow params are write-once; the new values are in the tag al.params_changed)")
        if promotion is not None and not promotion.promoted:
            tags[REJECTED_TAG] = "true"
        elif found and REJECTED_TAG in run.data.tags:
            client.delete_tag(rid, REJECTED_TAG)
        for chunk in _chunks(list(new.items()), _BATCH):
            client.log_batch(rid, params=[Param(key, v) for key, v in chunk])
        for chunk in _chunks(list(tags.items()), _BATCH):
            client.log_batch(rid, tags=[RunTag(key, v) for key, v in chunk])
        rows = [Metric(key, v, ts, k) for key, v in metrics.items()]
        if ml.log_training_curves:
            rows += [Metric(key, v, t, epoch) for key, v, t, epoch in _training_curve(paths, k)]
        for chunk in _chunks(rows, 1000):
            client.log_batch(rid, metrics=list(chunk))
        logged.params, logged.metrics = len(new), len(rows)

        if ml.log_artifacts:
            for f, folder in _artifact_files(paths, k):
                client.log_artifact(rid, str(f), folder)
                logged.artifacts += 1
        if promotion is not None and ml.register_champion:
            _champion(client, ml, paths, k, rid, promotion, logged)
        client.set_terminated(rid, "FINISHED")
    return logged


def _chunks(items: list, n: int) -> Iterable[list]:
    return (items[i:i + n] for i in range(0, len(items), n))


def _version_of(client: MlflowClient, name: str, paths: RunPaths, iteration: int):
    """The registered version of this run directory's iteration `iteration`, or None."""
    vs = client.search_model_versions(f"name = '{name}' and tags.`{RUN_KEY_TAG}` = '{run_key(paths)}' and "
                                      f"tags.`{ITERATION_TAG}` = '{iteration}'")
    live = [v for v in vs if SUPERSEDED_TAG not in (v.tags or {})]
    return max(live, key=lambda v: int(v.version)) if live else None


def _champion(client: MlflowClient, ml: MlflowConfig, paths: RunPaths, k: int, rid: str,
              promotion: artifacts.Promotion, logged: Logged) -> None:
    """A promoted iteration: its best.pt becomes a model version (once). Either way the alias 'champion' is moved
    to the version of promotion.champion_after (a rejected challenger leaves it where it was)."""
    from mlflow.exceptions import MlflowException

    name = model_name(ml, paths)
    try:
        client.create_registered_model(name, description="The active-learning loop's champion detector "
                                                          "(alias 'champion'); one version per promotion.")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    if promotion.promoted and promotion.champion_after == k:
        version = _version_of(client, name, paths, k)
        if version is None or version.run_id != rid:
            client.log_artifact(rid, str(paths.best(k)), CHAMPION_ARTIFACT)
            version = client.create_model_version(
                name, f"runs:/{rid}/{CHAMPION_ARTIFACT}", run_id=rid,
                tags={RUN_KEY_TAG: run_key(paths), ITERATION_TAG: str(k), DIGEST_TAG: _sha(paths.best(k))},
                description=f"iteration {k}: {promotion.reason}"[:5000])
        logged.registered_version = str(version.version)
    target = _version_of(client, name, paths, promotion.champion_after)
    if target is not None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(target.version))
        logged.champion_version = str(target.version)
    else:
        logged.notes.append(f"the champion (iteration {promotion.champion_after}) has no registered version in "
                            f"{shown_uri(ml, paths)}: it was promoted before tracking was enabled; the alias "
                            f"'{CHAMPION_ALIAS}' is left as it is")


def supersede(cfg: Config, paths: RunPaths, start: int) -> int:
    """--start-iteration `start`: the MLflow runs of iterations >= start are tagged al.superseded, renamed and
    deleted (MLflow's soft delete: the UI's 'deleted' filter and `mlflow runs restore` still reach them; `mlflow
    gc` purges them); their model versions are tagged superseded, and the alias 'champion' goes back to the
    champion before `start` (promotion.json of iteration start-1) or is removed. Returns the runs superseded."""
    ml = cfg.tracking.mlflow
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with _Guard(ml, paths, f"superseding iterations >= {start}"):
        client = _client(ml, paths)
        exp = client.get_experiment_by_name(experiment_name(ml, paths))
        if exp is None:
            return 0
        gone = [r for r in _runs(client, exp.experiment_id, paths)
                if str(r.data.tags.get(ITERATION_TAG, "")).isdigit() and int(r.data.tags[ITERATION_TAG]) >= start]
        for r in gone:
            client.set_tag(r.info.run_id, SUPERSEDED_TAG, stamp)
            client.update_run(r.info.run_id, name=f"{r.info.run_name} (superseded {stamp})")
            client.delete_run(r.info.run_id)
        name = model_name(ml, paths)
        if client.search_registered_models(f"name = '{name}'"):
            ids = {r.info.run_id for r in gone}
            for v in client.search_model_versions(f"name = '{name}' and tags.`{RUN_KEY_TAG}` = '{run_key(paths)}'"):
                if v.run_id in ids:
                    client.set_model_version_tag(name, str(v.version), SUPERSEDED_TAG, stamp)
            before = (artifacts.load_promotion(paths, start - 1).champion_after
                      if start > 0 and paths.promotion(start - 1).is_file() else None)
            target = _version_of(client, name, paths, before) if before is not None else None
            if target is not None:
                client.set_registered_model_alias(name, CHAMPION_ALIAS, str(target.version))
            elif any(v.run_id in ids for v in _alias_versions(client, name)):
                client.delete_registered_model_alias(name, CHAMPION_ALIAS)
    return len(gone)


def _alias_versions(client: MlflowClient, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return [client.get_model_version_by_alias(name, CHAMPION_ALIAS)]
    except MlflowException:
        return []

