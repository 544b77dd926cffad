"""The experiment history in MLflow: the real mlflow package against a local SQLite store (docs/TRACKING.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install -e '.[mlflow]' (./run test installs it)")

from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from al.app.api import open_run, run_loop  # noqa: E402
from al.core import artifacts  # noqa: E402
from al.core.config import load_config  # noqa: E402
from al.core.context import Listeners  # noqa: E402
from al.core.events import Message  # noqa: E402
from al.core.paths import RunPaths  # noqa: E402
from al.core.state import RunState  # noqa: E402
from al.report import tracking  # noqa: E402
from al.steps import track  # noqa: E402
from tests.conftest import make_config, step_context  # noqa: E402

# The real promotion gate decides. A dry run copies the weights, so every challenger equals its champion (delta 0):
# with gate.margin -1 each is promoted, with margin 0 each is rejected.
PROMOTE_ALL = {"margin": -1.0}


def _run(cfg, **kw) -> tuple[int, list[Message]]:
    """The loop in-process (dry run), collecting the [MLFLOW] lines."""
    bus = Listeners()
    notes: list[Message] = []

    def sub(ev):
        if isinstance(ev, Message) and ev.text.startswith("[MLFLOW]"):
            notes.append(ev)

    bus.subscribe(sub)
    return run_loop(open_run(cfg, ui=bus, dry_run=True, auto=False, **kw)), notes


def _client(paths: RunPaths) -> MlflowClient:
    uri = f"sqlite:///{paths.mlflow_store / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _iteration_runs(client: MlflowClient, name: str, view=ViewType.ACTIVE_ONLY) -> dict[int, list]:
    exp = client.get_experiment_by_name(name)
    out: dict[int, list] = {}
    for r in client.search_runs([exp.experiment_id], run_view_type=view):
        out.setdefault(int(r.data.tags[tracking.ITERATION_TAG]), []).append(r)
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_data):
    """One dry run of 3 iterations with tracking.mlflow enabled (the default store under the run directory), run
    from an empty working directory."""
    tmp = tmp_path_factory.mktemp("tracked")
    cwd = tmp / "cwd"
    cwd.mkdir()
    cfg = load_config(make_config(tmp, tiny_data, active_learning__max_iterations=3, gate=PROMOTE_ALL,
                                  tracking={"mlflow": {"enabled": True}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        code, notes = _run(cfg, resume=False, start_iteration=None)
    assert code == 0
    return cfg, RunPaths(cfg.run_dir), cwd, notes


def test_one_run_per_iteration_with_params_metrics_and_artefacts(tracked):
    cfg, paths, cwd, notes = tracked
    client = _client(paths)
    assert (paths.mlflow_store / "mlflow.db").is_file()
    runs = _iteration_runs(client, cfg.run_dir.name)  # the experiment is named after the run directory
    assert sorted(runs) == [0, 1, 2] and all(len(v) == 1 for v in runs.values())
    for k, (run,) in runs.items():
        assert run.info.run_name == f"iteration_{k}" and run.info.status == "FINISHED"
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags[tracking.RUN_DIR_TAG] == str(paths.root.resolve())
        assert tags[tracking.DIGEST_TAG] == cfg.digest() == params["config_digest"]
        assert params["dataset_version"] == artifacts.load_validation(paths, k).dataset_version
        assert params["sampling_strategy"] == "fn_weighted"
        assert params["sampling_strategy.strategy"] == "fn_weighted"
        assert params["training.base_lr"] == "0.001" and params["active_learning.max_iterations"] == "3"
        assert params["prompt_version"].startswith(f"prompts_iteration_{k:02d}@")
        val = artifacts.load_validation(paths, k)
        assert metrics["val/f1"] == pytest.approx(val.overall.f1)
        assert metrics["val/fn"] == val.overall.fn
        assert metrics["test/map50_95"] == pytest.approx(val.test.map50_95)
        assert set(val.names) <= {key.split("/")[-1] for key in metrics if key.startswith("val/f1/")}
        assert metrics["gate/promoted"] == 1.0
        if k > 0:  # the dry run's challenger is its champion's copy: no class moved
            assert {key for key in metrics if key.startswith("gate/ap50_95_delta/")}
            assert all(v == 0.0 for key, v in metrics.items() if key.startswith("gate/ap50_95_delta/"))
        assert client.get_metric_history(run.info.run_id, "val/f1")[0].step == k
        arts = {a.path for folder in ("plots", "reports", "error_analysis")
                for a in client.list_artifacts(run.info.run_id, folder)}
        assert {"plots/f1_trend.png", f"reports/iteration_{k:02d}_report.json", "reports/validation.json",
                "reports/promotion.json", "reports/metadata.json", "error_analysis/error_report.json"} <= arts
        assert tags[tracking.PROMOTION_TAG] == "promoted" and tracking.REJECTED_TAG not in tags
    # the artefacts live beside the database, and nothing was written into the working directory
    assert (paths.mlflow_store / "artifacts").is_dir()
    assert list(cwd.iterdir()) == []
    assert [n.level for n in notes] == ["info"] * 3


def test_champion_registered_and_alias_on_the_promoted_iteration(tracked):
    cfg, paths, _, _ = tracked
    client = _client(paths)
    name = f"{cfg.run_dir.name}-detector"
    versions = {int(v.tags[tracking.ITERATION_TAG]): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == [0, 1, 2]
    champ = client.get_model_version_by_alias(name, tracking.CHAMPION_ALIAS)
    assert champ.version == versions[2].version
    runs = _iteration_runs(client, cfg.run_dir.name)
    assert champ.run_id == runs[2][0].info.run_id
    [weights] = client.list_artifacts(champ.run_id, tracking.CHAMPION_ARTIFACT)
    assert weights.path == "champion/best.pt" and weights.file_size == paths.best(2).stat().st_size


def test_rejected_challenger_is_logged_and_not_registered(tmp_path, tiny_data):
    """gate.margin 0: the dry run's challenger (its champion's copy, delta 0) is rejected by the real gate; its
    run is tagged so, nothing is registered for it and the alias stays on iteration 0."""
    cfg = load_config(make_config(tmp_path, tiny_data, gate={"margin": 0.0}, tracking={"mlflow": {"enabled": True}}))
    paths = RunPaths(cfg.run_dir)
    assert _run(cfg, resume=False, start_iteration=None)[0] == 0
    assert not artifacts.load_promotion(paths, 1).promoted
    client, name = _client(paths), f"{cfg.run_dir.name}-detector"
    runs = _iteration_runs(client, cfg.run_dir.name)
    [rejected] = runs[1]
    assert rejected.data.tags[tracking.PROMOTION_TAG] == "rejected" and tracking.REJECTED_TAG in rejected.data.tags
    assert rejected.data.metrics["gate/promoted"] == 0.0
    versions = {int(v.tags[tracking.ITERATION_TAG]) for v in client.search_model_versions(f"name = '{name}'")}
    assert versions == {0}
    assert client.get_model_version_by_alias(name, tracking.CHAMPION_ALIAS).run_id == runs[0][0].info.run_id


def test_rerun_of_track_updates_the_same_run(tracked):
    cfg, paths, _, _ = tracked
    client = _client(paths)
    before = _iteration_runs(client, cfg.run_dir.name)
    history = len(client.get_metric_history(before[2][0].info.run_id, "val/f1"))
    state = RunState.load(paths)
    state.iteration, state.step = 2, "track"
    assert track.run(step_context(cfg, state)) == "next"  # what --resume does after a crash inside track
    logged = tracking.log_iteration(cfg, paths, 2, dry_run=True, auto=False)
    assert not logged.created and logged.registered_version == logged.champion_version
    after = _iteration_runs(client, cfg.run_dir.name)
    assert {k: [r.info.run_id for r in v] for k, v in after.items()} == \
        {k: [r.info.run_id for r in v] for k, v in before.items()}
    assert len(client.get_metric_history(after[2][0].info.run_id, "val/f1")) == history  # not logged twice
    assert len(client.search_model_versions(f"name = '{cfg.run_dir.name}-detector'")) == 3


def test_start_iteration_supersedes_later_runs(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data, gate=PROMOTE_ALL, tracking={"mlflow": {
        "enabled": True, "experiment": "restart test", "registered_model": "restart-model"}}))
    paths = RunPaths(cfg.run_dir)
    assert _run(cfg, resume=False, start_iteration=None)[0] == 0
    client = _client(paths)
    first = _iteration_runs(client, "restart test")
    assert client.get_model_version_by_alias("restart-model", "champion").run_id == first[1][0].info.run_id
    code, notes = _run(cfg, resume=False, start_iteration=1)
    assert code == 0
    assert any("1 MLflow runs of iterations >= 1" in n.text for n in notes)
    live = _iteration_runs(client, "restart test")
    assert sorted(live) == [0, 1] and all(len(v) == 1 for v in live.values())
    assert live[0][0].info.run_id == first[0][0].info.run_id  # iteration 0 was kept
    assert live[1][0].info.run_id != first[1][0].info.run_id
    deleted = _iteration_runs(client, "restart test", ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted[1]] == [first[1][0].info.run_id] and sorted(deleted) == [1]
    assert tracking.SUPERSEDED_TAG in deleted[1][0].data.tags
    champ = client.get_model_version_by_alias("restart-model", tracking.CHAMPION_ALIAS)
    assert champ.run_id == live[1][0].info.run_id  # the redone iteration 1 is the champion again
    old = [v for v in client.search_model_versions("name = 'restart-model'") if v.run_id == first[1][0].info.run_id]
    assert len(old) == 1 and tracking.SUPERSEDED_TAG in old[0].tags


def test_supersede_moves_the_alias_back_to_the_champion_before(tmp_path, tiny_data):
    """Between --start-iteration's supersede and the redone iteration's track, 'champion' names the champion
    before the restart (promotion.json of the iteration before it), not a superseded model."""
    cfg = load_config(make_config(tmp_path, tiny_data, gate=PROMOTE_ALL, tracking={"mlflow": {"enabled": True}}))
    paths = RunPaths(cfg.run_dir)
    assert _run(cfg, resume=False, start_iteration=None)[0] == 0
    client, name = _client(paths), f"{cfg.run_dir.name}-detector"
    runs = _iteration_runs(client, cfg.run_dir.name)
    assert tracking.supersede(cfg, paths, 1) == 1
    assert client.get_model_version_by_alias(name, "champion").run_id == runs[0][0].info.run_id
    assert tracking.supersede(cfg, paths, 0) == 1
    with pytest.raises(mlflow.exceptions.MlflowException):  # nothing is champion before iteration 0
        client.get_model_version_by_alias(name, "champion")


def test_without_promotion_nothing_is_registered(tmp_path, tiny_data):
    """A run made before the gate (no promotion.json): its iterations are logged and no model is registered."""
    cfg = load_config(make_config(tmp_path, tiny_data))
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners())
    assert run_loop(ctx) == 0  # tracking off: nothing was logged
    paths = RunPaths(cfg.run_dir)
    assert not paths.mlflow_store.exists()
    for k in (0, 1):
        paths.promotion(k).unlink(missing_ok=True)
    cfg.tracking.mlflow.enabled = True
    logged = [tracking.log_iteration(cfg, paths, k, dry_run=True, auto=False) for k in (0, 1)]
    assert all(log.created and log.registered_version is None for log in logged)
    client = _client(paths)
    runs = _iteration_runs(client, cfg.run_dir.name)
    assert sorted(runs) == [0, 1]
    assert {r.data.tags[tracking.PROMOTION_TAG] for v in runs.values() for r in v} == {"none"}
    assert client.search_registered_models() == []


def test_unreachable_store_is_a_clear_error(tmp_path, tiny_data, monkeypatch):
    """A store that cannot be written stops track with one line naming the store and the fixes."""
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "not_a_dir"
    bad.write_text("a file where the database's folder should be")
    cfg = load_config(make_config(tmp_path, tiny_data, tracking={"mlflow": {
        "enabled": True, "tracking_uri": f"sqlite:///{bad}/mlflow.db"}}))
    paths = RunPaths(cfg.run_dir)
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners())
    from al.core.events import RunFailed

    seen: list = []
    ctx.ui.subscribe(lambda ev: seen.append(ev) if isinstance(ev, RunFailed) else None)  # type: ignore[attr-defined]
    assert run_loop(ctx) != 0
    [failed] = seen
    assert str(bad) in failed.message and "tracking.mlflow" in failed.message and "--resume" in failed.message
    assert RunState.load(paths).stopped_at == "track"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_ultralytics_mlflow_callback_is_off_in_the_loops_settings(tmp_path, tiny_data):
    """The training child switches Ultralytics' MLflow integration off in the loop's YOLO_CONFIG_DIR: a real
    trainer built afterwards (in a fresh process reading that settings file) gets no MLflow callback."""
    pytest.importorskip("mlflow")
    code = f"""
import sys
from pathlib import Path
from al.yolo.detector import disable_mlflow_callback, prepare_offline
prepare_offline(Path({str(tmp_path / "yolo_config")!r}))
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import SETTINGS
from ultralytics.utils.callbacks import mlflow as ul_mlflow
assert ul_mlflow.mlflow is not None  # mlflow is importable: the callback would be active
before = SETTINGS["mlflow"]
if sys.argv[1] == "off":
    disable_mlflow_callback()
t = DetectionTrainer(overrides=dict(model="yolov8n.yaml", data={str(tiny_data)!r}, project={str(tmp_path)!r},
                                    name="t", exist_ok=True, device="cpu", epochs=1, imgsz=64))
mine = set(ul_mlflow.callbacks.values())
on_disk = type(SETTINGS)(SETTINGS.file)["mlflow"]  # a fresh read of the settings file: what a later process sees
print(before, on_disk, any(f in mine for fs in t.callbacks.values() for f in fs))
"""

    def child(arg: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert child("on") == "True True True"  # Ultralytics' default: the callback would log every epoch
    assert child("off") == "True False False"  # off, and persisted in the loop's settings file
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
