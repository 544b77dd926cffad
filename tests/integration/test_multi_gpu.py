"""training.device: [0, 1, ...] -> Ultralytics' DDP: the config, the refusal before training on a machine without
those GPUs, the device argument and DDP command the training child hands to Ultralytics, and the kill chain
(orchestrator -> training child -> DDP launcher -> ranks) with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from al.core.config import ConfigError, TrainingConfig, load_config
from al.yolo import ddp
from tests.conftest import make_config, run_in_process


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_device_lists_in_the_config(tmp_path, tiny_data):
    assert TrainingConfig(device=[0, 1]).device == [0, 1]
    assert TrainingConfig(device="0,1").device == [0, 1]  # Ultralytics' own spelling
    assert TrainingConfig(device="cpu").device == "cpu"
    for bad, why in (([], "distinct CUDA device numbers"), ([1, 1], "distinct"), ("0,gpu", "not a list of CUDA")):
        cfg = make_config(tmp_path, tiny_data, training={"device": bad})
        with pytest.raises(ConfigError, match=why) as e:
            load_config(cfg)
        assert "training.device" in str(e.value) and str(cfg) in str(e.value)


def test_the_device_argument_ultralytics_gets():
    assert ddp.trainer_device([0, 1]) == "0,1"  # its trainer counts the world size from this string
    assert ddp.trainer_device("2,3") == "2,3"
    assert ddp.trainer_device("cpu") == "cpu"
    assert ddp.trainer_device("0") == "0"
    assert ddp.requested([3]) == [3] and ddp.requested("0") is None
    from al.yolo.detector import resolve_device

    assert resolve_device([1, 0]) == "1" and resolve_device("2,3") == "2"  # inference: the first device


@pytest.mark.skipif(_gpus() >= 2, reason="this machine has the GPUs: the request is valid here")
def test_a_multi_gpu_request_without_the_gpus_fails_before_training(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data, training={
        "epochs_base": 1, "epochs_increment": 1, "imgsz": 64, "batch": 8, "workers": 0, "device": [0, 1],
        "patience": 0}))
    code, seen, events = run_in_process(cfg, dry_run=False)
    assert code != 0 and seen[-1] == "retrain"
    failed = [e for e in events if type(e).__name__ == "RunFailed"]
    assert failed, [type(e).__name__ for e in events]
    msg = failed[-1].message
    assert "training.device = [0, 1]" in msg and str(cfg.source_path) in msg
    assert ("no usable CUDA GPU" in msg) if _gpus() == 0 else (f"has {_gpus()} CUDA GPU" in msg)
    assert "--resume" in msg
    it0 = cfg.run_dir / "iterations" / "iteration_0"
    assert not (it0 / "training_log.txt").exists() and not (it0 / "weights").exists()  # no training child ran


def test_progress_and_callbacks_survive_cloudpickle_and_only_rank_0_reports(tmp_path, monkeypatch):
    cloudpickle = pytest.importorskip("cloudpickle")
    from al.yolo import train_worker

    prog = train_worker._Progress(tmp_path / "progress.jsonl")
    copy = cloudpickle.loads(cloudpickle.dumps(prog))  # what Ultralytics' DDP file does with the callbacks
    copy.emit(event="epoch_start", epoch=1, epochs=2)
    monkeypatch.setenv("RANK", "1")
    copy.emit(event="epoch_start", epoch=1, epochs=2)  # another rank: silent
    monkeypatch.setenv("RANK", "0")
    prog.emit(event="epoch_end", epoch=1, epochs=2)
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ['{"event": "epoch_start"', '{"event": "epoch_end"']


def test_ultralytics_ddp_command_keeps_the_iteration_folder_and_goes_through_the_launcher(tmp_path):
    from al.yolo.detector import prepare_offline

    prepare_offline(tmp_path / "yolo_config")
    from ultralytics.engine import trainer as trainer_mod

    ddp.install()
    ddp.install()  # idempotent
    save_dir = tmp_path / "iterations" / "iteration_1"
    save_dir.mkdir(parents=True)
    (save_dir / "train_spec.json").write_text("{}")
    fake = SimpleNamespace(args=SimpleNamespace(model="m.pt"), model=None, callbacks={}, resume=False,
                           save_dir=save_dir, world_size=2)
    cmd, file = trainer_mod.generate_ddp_command(fake)
    try:
        assert (save_dir / "train_spec.json").is_file()  # Ultralytics would have deleted the folder
        assert fake.resume is False
        assert cmd[:5] == [sys.executable, "-m", "al.yolo.ddp", "--launch", str(os.getpid())]
        assert cmd[5] == "torch.distributed.run" and cmd[-3:] == ["-m", "al.yolo.ddp", file]
        assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    finally:
        Path(file).unlink(missing_ok=True)
        Path(file).with_suffix(".pt").unlink(missing_ok=True)


# a stand-in rank lives until a signal kills it (the test's finally kills any that outlive the check)
RANK_SCRIPT = """
import os, signal, sys
from pathlib import Path
out = Path(sys.argv[0]).parent
(out / f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))
signal.pause()
"""

CHILD = """
import os, subprocess, sys, time
from pathlib import Path
from al.yolo import ddp
out = Path(sys.argv[1])
ddp.die_with_parent()
cmd = ddp.wrap_command([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        sys.argv[2], str(out / "rank.py")], os.getpid())
p = subprocess.Popen(cmd, stdout=open(out / "launch.log", "w"), stderr=subprocess.STDOUT)
(out / "launcher.pid").write_text(str(p.pid))
p.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by its new parent) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_9_of_the_training_child_takes_the_ddp_launcher_and_ranks_with_it(tmp_path):
    """The real chain on CPU: a stand-in training child starts torch.distributed.run through al.yolo.ddp exactly as
    the wrapped Ultralytics command does; two ranks start; kill -9 the child; everything below it dies."""
    import socket

    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    (tmp_path / "child.py").write_text(CHILD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import al

    env = {**os.environ, "PYTHONPATH": str(Path(al.__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path), str(port)], env=env)
    try:
        deadline = time.time() + 120
        pids: list[Path] = []
        while time.time() < deadline:
            pids = [tmp_path / n for n in ("launcher.pid", "rank0.pid", "rank1.pid")]
            if all(p.is_file() and p.read_text() for p in pids):
                break
            assert child.poll() is None, (tmp_path / "launch.log").read_text() if (tmp_path / "launch.log").exists() \
                else "child died"
            time.sleep(0.2)
        else:
            pytest.fail(f"ranks did not start: {(tmp_path / 'launch.log').read_text()}")
        launcher, r0, r1 = (int(p.read_text()) for p in pids)
        assert all(_alive(p) for p in (launcher, r0, r1))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in (launcher, r0, r1)):
            time.sleep(0.2)
        assert not any(_alive(p) for p in (launcher, r0, r1)), "a DDP process outlived the training child"
    finally:
        if child.poll() is None:
            child.kill()
        for n in ("launcher.pid", "rank0.pid", "rank1.pid"):
            f = tmp_path / n
            if f.is_file() and f.read_text() and _alive(int(f.read_text())):
                os.kill(int(f.read_text()), signal.SIGKILL)
