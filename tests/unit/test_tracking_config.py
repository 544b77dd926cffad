"""The tracking.mlflow section: defaults, resolution, and a clear refusal of every bad value."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from al.core.config import ConfigError, load_config
from al.core.paths import RunPaths
from tests.conftest import make_config


def _config(tmp_path: Path, tiny_data: Path, mlflow: dict) -> Path:
    return make_config(tmp_path, tiny_data, tracking={"mlflow": mlflow})


def _refused(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def test_off_by_default_and_the_default_store_is_under_the_run_dir(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data))
    assert cfg.tracking.mlflow.enabled is False
    pytest.importorskip("mlflow")
    from al.report import tracking

    cfg = load_config(_config(tmp_path, tiny_data, {"enabled": True}))
    paths = RunPaths(cfg.run_dir)
    assert tracking.store_uri(cfg.tracking.mlflow, paths) == f"sqlite:///{cfg.run_dir / 'mlflow' / 'mlflow.db'}"
    assert tracking.experiment_name(cfg.tracking.mlflow, paths) == "run"
    assert tracking.model_name(cfg.tracking.mlflow, paths) == "run-detector"


def test_relative_sqlite_path_and_artifact_folder_resolve_against_the_config(tmp_path, tiny_data, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir("/")
    cfg = load_config(_config(tmp_path, tiny_data, {"enabled": True, "tracking_uri": "sqlite:///hist/mlflow.db",
                                                    "artifact_location": "hist/artifacts"}))
    assert cfg.tracking.mlflow.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'hist' / 'mlflow.db'}"
    assert cfg.tracking.mlflow.artifact_location == str(tmp_path.resolve() / "hist" / "artifacts")
    absolute = f"sqlite:///{tmp_path / 'abs.db'}"  # sqlite:////tmp/...: kept as written
    cfg = load_config(_config(tmp_path, tiny_data, {"enabled": True, "tracking_uri": absolute,
                                                    "artifact_location": "s3://bucket/al"}))
    assert cfg.tracking.mlflow.tracking_uri == absolute and cfg.tracking.mlflow.artifact_location == "s3://bucket/al"


@pytest.mark.parametrize("mlflow,needle", [
    ({"enabled": True, "tracking_uri": "./mlruns"}, "is not a database or server URI"),
    ({"enabled": True, "tracking_uri": "file:///tmp/mlruns"}, "the model registry needs a database"),
    ({"enabled": True, "tracking_uri": "sqlite://mlflow.db"}, "sqlite:/// followed by the file's path"),
    ({"enabled": True, "registered_model": "my model/v1"}, "must start with a letter or digit"),
    ({"enabled": True, "experiment": ""}, "at least 1 character"),
    ({"enabled": "sometimes"}, "valid boolean"),
])
def test_bad_values_are_refused_with_key_and_fix(tmp_path, tiny_data, mlflow, needle):
    pytest.importorskip("mlflow")
    path = _config(tmp_path, tiny_data, mlflow)
    msg = _refused(path)
    bad = next(k for k in mlflow if k != "enabled") if len(mlflow) > 1 else "enabled"
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(f"{bad}:"))
    assert f"{path}:{line}: key 'tracking.mlflow.{bad}'" in msg and needle in msg, msg


def test_unknown_key_is_refused(tmp_path, tiny_data):
    msg = _refused(_config(tmp_path, tiny_data, {"enabled": False, "trackinguri": "sqlite:///x.db"}))
    assert "unknown key 'tracking.mlflow.trackinguri'" in msg


def test_enabled_without_mlflow_installed_names_the_key_and_the_extra(tmp_path, tiny_data, monkeypatch):
    # sys.modules[name] = None is how Python marks a module as not importable: `import mlflow` fails as if absent
    monkeypatch.setitem(sys.modules, "mlflow", None)
    path = _config(tmp_path, tiny_data, {"enabled": True})
    msg = _refused(path)
    assert "key 'tracking.mlflow.enabled'" in msg and "pip install -e '.[mlflow]'" in msg, msg
    cfg = yaml.safe_load(path.read_text())
    cfg["tracking"]["mlflow"]["enabled"] = False
    path.write_text(yaml.safe_dump(cfg))
    assert load_config(path).tracking.mlflow.enabled is False  # disabled: mlflow is not needed


def test_mlflow_is_imported_only_when_tracking_is_enabled():
    """The steps, the session and the CLI load without mlflow (it costs ~2 s): track imports it only when enabled."""
    import json
    import subprocess

    code = ("import sys, json, al.cli, al.app.session, al.steps, al.steps.track, al.core.config; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_password_in_the_tracking_uri_is_masked_in_messages(tmp_path, tiny_data):
    pytest.importorskip("mlflow")
    from al.report import tracking

    cfg = load_config(_config(tmp_path, tiny_data, {"enabled": True,
                                                    "tracking_uri": "postgresql://al:s3cret@db.team:5432/mlflow"}))
    assert tracking.shown_uri(cfg.tracking.mlflow, RunPaths(cfg.run_dir)) == "postgresql://al:***@db.team:5432/mlflow"
