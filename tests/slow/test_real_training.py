"""Real Ultralytics training on a tiny dataset (imgsz 64, 1-2 epochs): end to end, --auto, kill -9 + --resume."""

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
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _cli(cfg: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfg), "--headless", *args],
                          capture_output=True, text=True, timeout=600, **kw)


def test_two_iterations_with_auto_pseudo_labels(tmp_path, tiny_data):
    cfgp = make_config(tmp_path, tiny_data, active_learning__review_source="manual")
    res = _cli(cfgp, "--auto")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "[REVIEW] --auto: labelling 4 picks with model predictions (pseudo-labels)" in res.stdout
    p = RunPaths(load_config(cfgp).run_dir)
    for k in (0, 1):
        assert p.best(k).is_file() and p.last(k).is_file()
        assert "Epoch" in p.training_log(k).read_text()  # Ultralytics' own console output went to the log
        assert (p.iteration(k) / "results.csv").is_file()  # Ultralytics wrote inside the iteration folder
    assert not (tmp_path / "runs").exists() and not (p.root / "runs").exists()
    spec1 = store.read_json(p.train_spec(1))["spec"]
    assert spec1["model"] == str(p.best(0)) and spec1["lr0"] == pytest.approx(0.001 * 0.5)
    review = store.read_json(p.review(0))
    assert review["mode"] == "pseudo" and review["added_images"] == 4
    rows = store.read_csv(p.convergence_csv)
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert int(rows[1]["labelled_images"]) == int(rows[0]["labelled_images"]) + 4
    assert store.read_json(p.metadata(0))["auto"] is True


def _children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_during_retraining_then_resume(tmp_path, tiny_data):
    cfgp = make_config(tmp_path, tiny_data, training__epochs_base=4, active_learning__max_iterations=2)
    p = RunPaths(load_config(cfgp).run_dir)
    proc = subprocess.Popen([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfgp), "--headless"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = p.train_progress(0)
    deadline = time.time() + 300
    # wait until the baseline has finished (and checkpointed) at least one epoch, then kill -9 the orchestrator
    while time.time() < deadline:
        if progress.is_file() and any(json.loads(line)["event"] == "epoch_end"
                                      for line in progress.read_text().splitlines() if line.endswith("}")):
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    else:
        pytest.fail("training never reached the end of an epoch")
    children = _children_of(proc.pid)
    assert children, "training runs in a child process"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while any(_alive(c) for c in children) and time.time() - t0 < 20:
        time.sleep(0.2)
    assert not any(_alive(c) for c in children), "the training child outlived its killed parent"
    assert p.last(0).is_file()
    res = _cli(cfgp, "--resume")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Resuming interrupted training" in res.stdout
    log = p.training_log(0).read_text()
    assert "resume =====" in log and "Resuming training" in log
    rows = store.read_csv(p.convergence_csv)
    assert [r["iteration"] for r in rows] == ["0", "1"]  # no lost or duplicated iteration
    epochs = [json.loads(line)["epoch"] for line in progress.read_text().splitlines()
              if json.loads(line)["event"] == "epoch_end"]
    assert epochs[-1] == 4 and sorted(set(epochs)) == [1, 2, 3, 4]
