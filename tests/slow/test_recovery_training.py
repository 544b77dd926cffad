"""Crash-safe checkpoints and a full disk with real Ultralytics training (imgsz 64, a few epochs): each failure,
then the resume its message advises, completes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from al.core import store
from al.core.config import load_config
from al.core.paths import RunPaths
from al.yolo import checkpoints
from tests.conftest import make_config
from tests.slow.test_real_training import _alive, _children_of

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# Loaded by every Python process started with this folder on PYTHONPATH (the orchestrator and its training
# child): Ultralytics' in-place write of last.pt number AL_TEST_FULL_AT stops half-way with ENOSPC, as on a disk
# that fills up during an epoch.
SITECUSTOMIZE = '''
import errno, os, pathlib
_real = pathlib.Path.write_bytes
_count = [0]
def _write_bytes(self, data):
    if self.name == "last.pt":
        _count[0] += 1
        if _count[0] >= int(os.environ["AL_TEST_FULL_AT"]):
            _real(self, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return _real(self, data)
pathlib.Path.write_bytes = _write_bytes
'''


def _cli(cfg: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfg), "--headless", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def _epochs(p: RunPaths, k: int) -> list[int]:
    lines = p.train_progress(k).read_text().splitlines()
    return [json.loads(ln)["epoch"] for ln in lines if json.loads(ln)["event"] == "epoch_end"]


def test_disk_full_during_training_then_resume(tmp_path, tiny_data):
    cfgp = make_config(tmp_path, tiny_data, training__epochs_base=3, active_learning__max_iterations=1)
    p = RunPaths(load_config(cfgp).run_dir)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "AL_TEST_FULL_AT": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    res = _cli(cfgp, env=env)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "Traceback" not in out
    line = next(ln for ln in out.splitlines() if ln.startswith("[ERROR] Iteration 0"))
    assert f"Training of iteration 0 stopped: {p.last(0)}: disk full (No space left on device)" in line
    assert "needed. Free at least" in line and "MB" in line
    state = store.read_json(p.state)
    assert state["step"] == "failed" and state["stopped_at"] == "retrain" and "disk full" in state["error"]
    assert checkpoints.problem(p.last(0)).startswith("truncated")  # the half-written epoch 2
    assert checkpoints.problem(p.last_good(0)) is None  # epoch 1, verified
    # space freed: the resume restores epoch 1's checkpoint and finishes the training
    res = _cli(cfgp, "--resume")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (f"[CHECKPOINT] WARNING: {p.last(0)} was truncated or corrupt" in res.stdout
            and "restored the last verified copy" in res.stdout)
    assert "Resuming interrupted training" in res.stdout
    assert _epochs(p, 0)[-1] == 3 and sorted(set(_epochs(p, 0))) == [1, 2, 3]
    assert checkpoints.problem(p.best(0)) is None and p.best_good(0).read_bytes() == p.best(0).read_bytes()
    assert not p.last_good(0).exists()  # a finished training needs no resume copy
    assert store.read_json(p.state)["step"] == "done"


def _kill_after_epoch(cfgp: Path, p: RunPaths, epoch: int) -> None:
    """Start the loop, kill -9 it once the baseline has finished `epoch` epochs (its child dies with it)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfgp), "--headless"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if p.train_progress(0).is_file() and len(_epochs_done(p)) >= epoch:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    else:
        pytest.fail("training never reached the end of an epoch")
    children = _children_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while any(_alive(c) for c in children) and time.time() - t0 < 20:
        time.sleep(0.2)


def _epochs_done(p: RunPaths) -> list[int]:
    lines = [ln for ln in p.train_progress(0).read_text().splitlines() if ln.endswith("}")]
    return [json.loads(ln)["epoch"] for ln in lines if json.loads(ln)["event"] == "epoch_end"]


@pytest.mark.parametrize("damage", ["best", "last_without_copy"])
def test_damaged_checkpoint_after_a_kill_then_resume(tmp_path, tiny_data, damage):
    cfgp = make_config(tmp_path, tiny_data, training__epochs_base=3, active_learning__max_iterations=1)
    p = RunPaths(load_config(cfgp).run_dir)
    _kill_after_epoch(cfgp, p, 1)
    ck = p.best(0) if damage == "best" else p.last(0)
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 3])  # as a kill in the middle of Ultralytics' in-place rewrite leaves it
    if damage == "last_without_copy":
        p.last_good(0).unlink()
    res = _cli(cfgp, "--resume")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    if damage == "best":
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("[CHECKPOINT]"))
        assert line.startswith(f"[CHECKPOINT] WARNING: {p.best(0)} was truncated or corrupt (")
        assert line.endswith(f"restored the last verified copy {p.best_good(0)}: the training resumes from there")
        assert "Resuming interrupted training" in res.stdout
    else:
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("[CHECKPOINT]"))
        assert line.startswith(f"[CHECKPOINT] WARNING: {p.last(0)} is truncated or corrupt (")
        assert line.endswith("and has no verified copy; re-running iteration 0's training from its first epoch")
        assert "Resuming interrupted training" not in res.stdout
        assert sorted(set(_epochs(p, 0))) == [1, 2, 3]  # the progress restarted from epoch 1
    assert checkpoints.problem(p.best(0)) is None
    assert store.read_json(p.state)["step"] == "done"


def test_finished_training_with_an_unloadable_best_trains_again(tmp_path, tiny_data, monkeypatch, capsys):
    from al.cli import main
    from al.steps import retrain

    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    p = RunPaths(load_config(cfgp).run_dir)
    real = subprocess.Popen

    class Finished:
        """A training child that 'finished' leaving a damaged best.pt and no verified copy."""

        returncode = 0

        def __init__(self, *a, **k):
            p.weights(0).mkdir(parents=True, exist_ok=True)
            p.best(0).write_bytes(b"PK\x03\x04 truncated")

        def poll(self):
            return 0

    monkeypatch.setattr(retrain.subprocess, "Popen", Finished)
    assert main(["--config", str(cfgp), "--headless"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("[ERROR] Iteration 0"))
    assert f"{p.best(0)} is truncated or corrupt" in line and "--resume trains it again from its first epoch" in line
    monkeypatch.setattr(retrain.subprocess, "Popen", real)
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 0
    assert checkpoints.problem(p.best(0)) is None and store.read_json(p.state)["step"] == "done"
    assert "Resuming interrupted training" not in capsys.readouterr().out
