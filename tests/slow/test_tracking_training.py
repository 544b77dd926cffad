"""A real tiny training with tracking.mlflow on: the epochs are in the store once, Ultralytics' own MLflow callback
logs nothing (its name has 'test_mlflow' in it: Ultralytics skips its callback in other pytest tests, which would
hide a regression), and nothing lands in the working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from al.core.config import load_config
from al.core.paths import RunPaths
from tests.conftest import make_config

pytest.importorskip("mlflow", reason="the mlflow extra: pip install -e '.[mlflow]' (./run test installs it)")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_mlflow_history_of_a_real_training_is_logged_once(tmp_path, tiny_data, monkeypatch):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1, training__epochs_base=2,
                       tracking={"mlflow": {"enabled": True}})
    res = subprocess.run([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfgp), "--headless"],
                         capture_output=True, text=True, timeout=600, cwd=cwd)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    paths = RunPaths(load_config(cfgp).run_dir)
    assert "[MLFLOW] iteration 0 logged as run" in res.stdout
    assert "MLflow: logging run_id" not in paths.training_log(0).read_text()  # Ultralytics' callback never started
    uri = f"sqlite:///{paths.mlflow_store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exps = client.search_experiments(view_type=ViewType.ALL)
    assert sorted(e.name for e in exps) == ["Default", "run"]
    runs = client.search_runs([e.experiment_id for e in exps], run_view_type=ViewType.ALL)
    assert [r.info.run_name for r in runs] == ["iteration_0"]
    [run] = runs
    # the training's epochs, once each (Ultralytics' callback would have added a second run with its own copy)
    history = client.get_metric_history(run.info.run_id, "train/metrics/mAP50B")
    assert [m.step for m in history] == [1, 2]
    assert "val/f1" in run.data.metrics and "train.epochs" in run.data.params
    assert list(cwd.iterdir()) == []  # no mlruns/ or mlflow.db in the working directory
