"""The same labelled set, seed and settings train the same model in any run folder, with the dataset anywhere:
two real baseline trainings (the retrain step's child process, imgsz 64, 2 epochs) compared tensor for tensor."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from al.core.config import load_config
from al.data import dataset
from tests.conftest import make_config, step_context

pytestmark = pytest.mark.slow


def _moved_dataset(data_yaml: Path, dest: Path) -> Path:
    """A copy of the dataset at another location, its data.yaml pointing at the copy."""
    shutil.copytree(data_yaml.parent, dest)
    spec = yaml.safe_load((dest / data_yaml.name).read_text())
    spec["path"] = str(dest)
    (dest / data_yaml.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest / data_yaml.name


def _train_baseline(folder: Path, data_yaml: Path):
    """Dataset version 0 written by write_snapshot, then the retrain step trains the baseline on it."""
    from al.steps import retrain

    folder.mkdir(parents=True)
    cfg = load_config(make_config(folder, data_yaml, training__epochs_base=2))
    ctx = step_context(cfg)
    spec = dataset.read_data_yaml(data_yaml)
    splits = {k: spec.splits[k] for k in ("train", "val", "test")}
    dataset.write_snapshot(ctx.env.paths.dataset_version(0), spec.names, splits, {"version": 0, "names": spec.names})
    assert retrain.run(ctx) == "next"
    return ctx.env.paths, splits


def _tensors(best: Path) -> dict:
    import torch

    ck = torch.load(best, map_location="cpu", weights_only=False)
    return {f"{key}.{name}": t for key in ("model", "ema") if ck.get(key) is not None
            for name, t in ck[key].state_dict().items()}


def test_the_same_dataset_version_trains_the_same_model_in_another_run_folder(tmp_path, tiny_data):
    import torch

    a, splits_a = _train_baseline(tmp_path / "a", tiny_data)
    b, splits_b = _train_baseline(tmp_path / "b" / "deeper", _moved_dataset(tiny_data, tmp_path / "moved_data"))
    assert not set(splits_a["train"]) & set(splits_b["train"])  # not vacuous: every image has another path
    for split in ("train", "val"):
        assert sorted(os.listdir(a.dataset_version(0) / dataset.MIRROR / split / "images")) == \
            sorted(os.listdir(b.dataset_version(0) / dataset.MIRROR / split / "images"))
    ta, tb = _tensors(a.best(0)), _tensors(b.best(0))
    assert ta.keys() == tb.keys() and ta
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []
