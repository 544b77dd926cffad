"""No run is ever stuck: damaged checkpoints, a full disk, a read-only run directory and a corrupt or lost
run_state.json, each followed by the advice the error gives (dry runs: real Ultralytics checkpoints, no training)."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from al.cli import main
from al.core import store
from al.core.config import load_config
from al.core.events import Message, RunFailed
from al.core.paths import RunPaths
from al.yolo import checkpoints
from tests.conftest import make_config, run_in_process
from tests.integration.test_loop import EXPECTED


def _run(cfg, **kw):
    """Run the machine in-process (tests.conftest.run_in_process): exit code, steps started, every event."""
    return run_in_process(cfg, **kw)


def _warnings(events) -> list[str]:
    return [e.text for e in events if isinstance(e, Message) and e.level == "warning"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a kill in the middle of Ultralytics' in-place write leaves


def _advice(text: str, flag: str) -> list[str]:
    """The arguments of the command an error message tells the user to run (`python al_loop.py ARGS`)."""
    for m in re.finditer(r"python al_loop\.py (--config \S+(?: --[a-z-]+(?: \d+)?)*)", text):
        if flag in m.group(1).split():
            return shlex.split(m.group(1))
    raise AssertionError(f"no '{flag}' command in: {text}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data):
    """One uninterrupted dry run's final CSV."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = load_config(make_config(tmp, tiny_data))
    assert _run(cfg)[0] == 0
    return cfg.run_dir.joinpath("metrics", "convergence_tracking.csv").read_text()


# ---------------------------------------------------------------------------------------------- checkpoints

def test_checkpoint_verification_and_good_copies(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__max_iterations=1))
    assert _run(cfg)[0] == 0
    p = RunPaths(cfg.run_dir)
    assert p.best_good(0).read_bytes() == p.best(0).read_bytes()  # every trained model has its verified copy
    assert checkpoints.problem(p.best(0)) is None
    _truncate(p.best(0))
    assert checkpoints.problem(p.best(0)).startswith("truncated or corrupt")
    assert checkpoints.problem(tmp_path / "nope.pt") == "missing"
    (tmp_path / "x.pt").write_bytes(b"not a zip")
    assert checkpoints.problem(tmp_path / "x.pt").startswith("truncated or corrupt")
    t = checkpoints.trust(p.best(0))
    assert t.ok and t.restored and checkpoints.problem(p.best(0)) is None
    assert p.best(0).read_bytes() == p.best_good(0).read_bytes()


def test_truncated_best_is_restored_with_a_warning(tmp_path, tiny_data, reference):
    cfg = load_config(make_config(tmp_path, tiny_data))
    p = RunPaths(cfg.run_dir)
    code, seen, _ = _run(cfg, stop_after=8)  # stopped before validating iteration 1
    assert code == 130 and store.read_json(p.state)["stopped_at"] == "validate"
    _truncate(p.best(1))
    _truncate(p.best(0))
    code, seen, events = _run(cfg, resume=True)
    assert code == 0 and seen == EXPECTED[8:]
    warned = _warnings(events)
    assert any(f"Iteration 1's model {p.best(1)} was truncated or corrupt" in w and "restored the verified copy"
               in w for w in warned), warned
    assert checkpoints.problem(p.best(1)) is None
    assert p.convergence_csv.read_text() == reference


def test_damaged_source_model_of_a_retrain_is_restored(tmp_path, tiny_data, reference):
    cfg = load_config(make_config(tmp_path, tiny_data))
    p = RunPaths(cfg.run_dir)
    assert _run(cfg, stop_after=6)[0] == 130  # stopped before iteration 0's retrain (which fine-tunes best(0))
    p.best(0).unlink()
    code, seen, events = _run(cfg, resume=True)
    assert code == 0 and seen == EXPECTED[6:]
    assert any(f"Iteration 0's model (which this retrain fine-tunes) {p.best(0)} was missing" in w
               for w in _warnings(events))
    assert p.convergence_csv.read_text() == reference


def test_lost_previous_best_error_says_how_and_that_works(tmp_path, tiny_data, capsys):
    # fine_tune_from latest: iteration 1's retrain fine-tunes best(1) (with the default, the dry run's rejected
    # challenger 1 is not built on: the champion 0 is)
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=3, gate={"fine_tune_from": "latest"})
    cfg = load_config(cfgp)
    p = RunPaths(cfg.run_dir)
    assert _run(cfg, stop_after=13)[0] == 130  # stopped before iteration 1's retrain
    assert store.read_json(p.state)["stopped_at"] == "retrain"
    p.best(1).unlink()
    p.best_good(1).unlink()
    capsys.readouterr()
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("[ERROR] Iteration 1, step 'retrain'"))
    assert f"{p.best(1)} is missing and has no verified copy" in line
    args = _advice(line, "--start-iteration")
    assert args[2:] == ["--start-iteration", "1", "--dry-run"]
    state = store.read_json(p.state)
    assert state["step"] == "failed" and state["stopped_at"] == "retrain"
    # the same failure on every resume until the advice is followed ...
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 1
    capsys.readouterr()
    # ... which re-makes iteration 1's model from iteration 0's and completes the run
    assert main([*args, "--headless"]) == 0
    assert "ACTIVE LEARNING COMPLETE" in capsys.readouterr().out
    assert checkpoints.problem(p.best(1)) is None and store.read_json(p.state)["step"] == "done"
    assert [r["iteration"] for r in store.read_csv(p.convergence_csv)] == ["0", "1", "2"]


@pytest.mark.parametrize("k, stop_after", [(0, 1), (1, 8)])
def test_lost_model_at_validate_error_says_how_and_that_works(tmp_path, tiny_data, reference, capsys, k,
                                                              stop_after):
    cfgp = make_config(tmp_path, tiny_data)
    cfg = load_config(cfgp)
    p = RunPaths(cfg.run_dir)
    assert _run(cfg, stop_after=stop_after)[0] == 130  # stopped before validating iteration k
    assert store.read_json(p.state)["stopped_at"] == "validate" and store.read_json(p.state)["iteration"] == k
    p.best(k).unlink()
    p.best_good(k).write_bytes(b"")  # the copy is damaged too
    capsys.readouterr()
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"[ERROR] Iteration {k}, step 'validate'"))
    assert f"Iteration {k}'s model {p.best(k)} is missing and has no verified copy" in line
    args = _advice(line, "--start-iteration")
    assert args[2:] == ["--start-iteration", str(k), "--dry-run"]
    assert main([*args, "--headless"]) == 0
    assert store.read_json(p.state)["step"] == "done" and checkpoints.problem(p.best(k)) is None
    assert p.convergence_csv.read_text() == reference


def test_start_iteration_needs_a_loadable_previous_model(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=2)
    p = RunPaths(load_config(cfgp).run_dir)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0
    _truncate(p.best(0))
    p.best_good(0).unlink()
    capsys.readouterr()
    assert main(["--config", str(cfgp), "--start-iteration", "1", "--dry-run", "--headless"]) == 2
    err = capsys.readouterr().err
    assert f"{p.best(0)} is truncated or corrupt" in err
    args = _advice(err, "--start-iteration")
    assert args[2:] == ["--start-iteration", "0", "--dry-run"]
    assert main([*args, "--headless"]) == 0
    assert store.read_json(p.state)["step"] == "done" and checkpoints.problem(p.best(0)) is None


# ---------------------------------------------------------------------------------------- full disk, I/O

class FullDisk:
    """os.fsync that fails with ENOSPC for run_state.json's temp file from its `start`-th save on, `times`
    times (None: until lifted), as a disk that fills up would."""

    def __init__(self, monkeypatch, start: int, times: int | None = None):
        self.real, self.start, self.times, self.saves, self.failed = os.fsync, start, times, 0, 0
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".run_state.json."):
            self.saves += 1
            if self.saves >= self.start and (self.times is None or self.failed < self.times):
                self.failed += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd)


def _one_error_line(out: str, err: str) -> str:
    assert "Traceback" not in out + err
    lines = [ln for ln in (out + err).splitlines() if ln.startswith("[ERROR]")]
    assert lines, out[-2000:] + err
    return lines[0]


def test_disk_full_while_saving_state_then_resume(tmp_path, tiny_data, reference, monkeypatch, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    p = RunPaths(load_config(cfgp).run_dir)
    disk = FullDisk(monkeypatch, start=4, times=1)  # the save after analyze fails once; the ballast makes room
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 1
    out, err = capsys.readouterr()
    line = _one_error_line(out, err)
    assert f"{p.state}: disk full (No space left on device)" in line and "needed. Free at least" in line
    assert disk.failed == 1
    state = store.read_json(p.state)  # valid, and says where it failed
    assert state["step"] == "failed" and state["stopped_at"] == "converge" and "disk full" in state["error"]
    monkeypatch.undo()
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 0
    assert p.convergence_csv.read_text() == reference
    assert p.reserve.stat().st_size == 256 * 1024  # the ballast is back


def test_disk_stays_full_keeps_the_previous_state(tmp_path, tiny_data, reference, monkeypatch, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    p = RunPaths(load_config(cfgp).run_dir)
    FullDisk(monkeypatch, start=4)  # even the failed state cannot be written
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 1
    out, err = capsys.readouterr()
    line = _one_error_line(out, err)
    assert f"{p.state}: disk full" in line
    assert "The failure could not be recorded; run_state.json keeps the last saved step" in out
    state = store.read_json(p.state)  # the previous valid state: analyze had not been recorded as finished
    assert state["step"] == "analyze"
    monkeypatch.undo()
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 0
    assert p.convergence_csv.read_text() == reference


def test_write_errors_name_the_path_and_the_fix(tmp_path, monkeypatch):
    def fail(code):
        def fsync(fd):
            raise OSError(code, os.strerror(code))
        return fsync

    for code, expect in ((errno.ENOSPC, "disk full"), (errno.EROFS, "cannot write"), (errno.EIO, "I/O error")):
        monkeypatch.setattr(os, "fsync", fail(code))
        with pytest.raises(store.StoreWriteError) as e:
            store.write_json(tmp_path / "s.json", {"x": 1})
        assert str(e.value).startswith(f"{tmp_path / 's.json'}: {expect}") and e.value.errno == code
        assert isinstance(e.value, OSError) and "\n" not in str(e.value)
    assert [f.name for f in tmp_path.iterdir()] == []  # no temp file left behind


def _read_only(monkeypatch, root: Path):
    """Simulate a read-only folder (root ignores permission bits): creating an entry under `root` fails with
    EACCES, as the kernel does for a user; files that exist can still be opened, as they can there."""
    real_open, real_mkdir, real_replace = os.open, os.mkdir, os.replace
    root = str(root.resolve())

    def inside(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(root + os.sep)

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def fake_open(path, flags, *a, **k):
        if flags & os.O_CREAT and inside(path) and not os.path.exists(path):
            raise denied(path)
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if inside(path) and not os.path.exists(path):
            raise denied(path)
        return real_mkdir(path, *a, **k)

    def fake_replace(src, dst, *a, **k):
        if inside(dst):
            raise denied(dst)
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "replace", fake_replace)


def test_read_only_run_dir_simulated(tmp_path, tiny_data, reference, monkeypatch, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    p = RunPaths(load_config(cfgp).run_dir)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0
    assert (p.root / "iterations").is_dir()
    p.state.write_text(json.dumps({**store.read_json(p.state), "step": "interrupted", "stopped_at": "validate"}))
    before = p.state.read_text()
    capsys.readouterr()
    _read_only(monkeypatch, p.root)
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 1
    out, err = capsys.readouterr()
    line = _one_error_line(out, err)
    assert "cannot write (Permission denied)" in line and "writable" in line
    assert line.endswith("Then run the same command again.")
    assert p.state.read_text() == before
    monkeypatch.undo()
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 0


def test_read_only_new_run_dir_simulated(tmp_path, tiny_data, monkeypatch, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    p = RunPaths(load_config(cfgp).run_dir)
    p.root.mkdir(parents=True)
    _read_only(monkeypatch, p.root)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 1
    line = _one_error_line(*capsys.readouterr())
    assert line == (f"[ERROR] {p.lock}: cannot write (Permission denied). Make {p.root} writable, or set run_dir "
                    f"to a writable folder. Then run the same command again.")
    monkeypatch.undo()
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits, so chmod cannot make the run "
                    "directory read-only; test_read_only_run_dir_simulated covers it")
def test_read_only_run_dir_chmod(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    p = RunPaths(load_config(cfgp).run_dir)
    p.root.mkdir(parents=True)
    p.root.chmod(0o555)
    try:
        assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 1
        out, err = capsys.readouterr()
        assert "Permission denied" in _one_error_line(out, err)
    finally:
        p.root.chmod(0o755)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0


# ------------------------------------------------------------------------------------------------- --repair

@pytest.mark.parametrize("stop_after", [1, 3, 5, 6, 7, 8, 11])
def test_corrupt_state_repair_then_resume(tmp_path, tiny_data, reference, capsys, stop_after):
    cfgp = make_config(tmp_path, tiny_data)
    cfg = load_config(cfgp)
    p = RunPaths(cfg.run_dir)
    assert _run(cfg, stop_after=stop_after)[0] == 130
    stopped = store.read_json(p.state)
    p.state.write_text('{"schema": 1, "iteration": 0, "st')  # a torn or hand-broken file
    capsys.readouterr()
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 2
    err = capsys.readouterr().err
    assert f"{p.state}: corrupt JSON" in err and "Delete the file" not in err
    repair = _advice(err, "--repair")
    assert main([*repair, "--headless"]) == 0
    out = capsys.readouterr().out
    assert "[REPAIR]" in out and "rebuilding it from the run tree" in out
    rebuilt = store.read_json(p.state)
    assert (rebuilt["iteration"], rebuilt["step"]) == (stopped["iteration"], EXPECTED[stop_after])
    assert rebuilt["dry_run"] is True and rebuilt["baseline"] == stopped["baseline"]
    assert list(p.root.glob("run_state.json.*.bak"))  # the broken file is kept
    resume = _advice(out, "--resume")
    assert main([*resume, "--headless"]) == 0
    assert p.convergence_csv.read_text() == reference


def test_lost_state_with_a_run_tree(tmp_path, tiny_data, reference, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    cfg = load_config(cfgp)
    p = RunPaths(cfg.run_dir)
    assert _run(cfg, stop_after=9)[0] == 130
    p.state.unlink()
    capsys.readouterr()
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 2  # a fresh start would overwrite the tree
    assert "holds a run" in capsys.readouterr().err
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 2
    err = capsys.readouterr().err
    assert main([*_advice(err, "--repair"), "--headless"]) == 0
    out = capsys.readouterr().out
    assert "iteration 1, step 'analyze'" in out  # EXPECTED[9]
    assert main([*_advice(out, "--resume"), "--headless"]) == 0
    assert p.convergence_csv.read_text() == reference


def test_repair_sees_damaged_artefacts_and_an_awaiting_review(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__review_source="manual")
    p = RunPaths(load_config(cfgp).run_dir)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0  # pauses awaiting review
    assert store.read_json(p.state)["step"] == "awaiting_review"
    p.state.unlink()
    assert main(["--config", str(cfgp), "--repair", "--headless"]) == 0
    st = store.read_json(p.state)
    assert st["step"] == "awaiting_review" and st["review_pending"] is True and st["iteration"] == 0
    assert "next: review (awaiting the reviewer's labels" in capsys.readouterr().out
    p.hard_examples(0).write_text("{")  # a damaged artefact: its step runs again
    assert main(["--config", str(cfgp), "--repair", "--headless"]) == 0
    out = capsys.readouterr().out
    assert "next: extract (iterations/iteration_0/hard_examples.json: corrupt JSON" in out
    assert store.read_json(p.state)["step"] == "extract"
    (tmp_path / "other").mkdir()
    empty = make_config(tmp_path / "other", tiny_data)
    assert main(["--config", str(empty), "--repair", "--headless"]) == 2
    assert "Nothing to repair" in capsys.readouterr().err


def test_repair_refuses_while_another_loop_runs(tmp_path, tiny_data, capsys):
    from filelock import FileLock

    cfgp = make_config(tmp_path, tiny_data)
    p = RunPaths(load_config(cfgp).run_dir)
    p.root.mkdir(parents=True)
    with FileLock(str(p.lock)):
        assert main(["--config", str(cfgp), "--repair", "--headless"]) == 2
    assert "Another al_loop is already running" in capsys.readouterr().err


def test_failed_event_says_when_the_state_was_not_saved():
    from al.frontends.lines import render

    text = render(RunFailed(0, "validate", "x: disk full", "python al_loop.py --config c.yaml --resume",
                            saved=False))[0][0]
    assert "could not be recorded" in text and "--resume" in text
