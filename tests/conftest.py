"""Shared fixtures: a tiny real dataset (the demo generator) and config files that point at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# Ultralytics must never reach the network in tests, whatever imports it first.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small real demo dataset (digits on photos), generated once per test session."""
    from al.data.demo import generate_demo

    out = tmp_path_factory.mktemp("data") / "tiny"
    return generate_demo(out, seed=3, n_train=24, n_val=24, n_test=12, n_pool=16, size=128)


def make_config(tmp_path: Path, data_yaml: Path, **overrides) -> Path:
    """Write a fast config (imgsz 64, 1 epoch) into tmp_path and return its path."""
    cfg = {
        "run_dir": "run",
        "dataset": {"data_yaml": str(data_yaml), "pool_dir": str(data_yaml.parent / "pool" / "images"),
                    "pool_labels_dir": str(data_yaml.parent / "pool" / "labels_hidden"),
                    "mining_source": "val", "combined_dir": "combined"},
        "model": {"baseline": "yolov8n.yaml"},
        "active_learning": {"max_samples_per_iteration": 4, "review_source": "simulated", "target_f1": 0.99,
                            "max_iterations": 2, "train_f1_sample": 8},
        "training": {"epochs_base": 1, "epochs_increment": 1, "imgsz": 64, "batch": 8, "workers": 0,
                     "device": "cpu", "patience": 0, "extra": {"nbs": 8, "fliplr": 0.0, "plots": False}},
        "validation": {"batch": 16},
    }
    for key, val in overrides.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section][field] = val
        else:
            cfg[section] = val
    path = tmp_path / "al_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def step_context(cfg, state=None, *, opts=None, ui=None):
    """A StepContext on `cfg` without opening a run (for tests that place a run at one step by hand)."""
    from al.core.context import Listeners, Options, RunEnv, StepContext
    from al.core.paths import RunPaths
    from al.core.state import RunState
    from al.yolo.service import DetectorService

    return StepContext(env=RunEnv(cfg=cfg, paths=RunPaths(cfg.run_dir), opts=opts or Options()),
                       state=state or RunState(), models=DetectorService(), ui=ui or Listeners())


@pytest.fixture(scope="session")
def learned_baseline(tmp_path_factory) -> Path:
    """A yolov8n that learned (mAP50 about 0.1 on its own validation split, non-zero on tiny_data's), trained from
    scratch once per test session by the product's training child: benchmarks/crash_harness.py's train_baseline
    (64 generated images at imgsz 96, 20 epochs, about a minute on 2 CPU cores). Point model.baseline at it to start
    a real run from a model whose metrics move."""
    from benchmarks.crash_harness import Size, train_baseline

    return train_baseline(tmp_path_factory.mktemp("learned_baseline"), Size())


def run_in_process(cfg, *, resume=False, stop_after=None, dry_run=True, auto=False, start_iteration=None):
    """Run the loop in-process; with stop_after=n, ask it to stop after the n-th finished step. Returns the exit
    code, the steps started in order, and every event."""
    from al.app.api import open_run, run_loop
    from al.core.context import Listeners
    from al.core.events import StepFinished, StepStarted

    bus = Listeners()
    seen, finished, events = [], [], []
    ctx = open_run(cfg, resume=resume, start_iteration=start_iteration, dry_run=dry_run, auto=auto, ui=bus)

    def sub(ev):
        events.append(ev)
        if isinstance(ev, StepStarted):
            seen.append(ev.step)
        if isinstance(ev, StepFinished):
            finished.append(ev.step)
            if stop_after is not None and len(finished) == stop_after:
                bus.stop()

    bus.subscribe(sub)
    return run_loop(ctx), seen, events
