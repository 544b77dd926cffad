"""Differences between a run that was SIGKILLed and resumed and an uninterrupted one, fixed: temp files of killed
writes stayed in the run tree and a review that ran again dropped the near-duplicate list from dataset version 0's
manifest (both found by the crash harness, benchmarks/crash_harness.py), and a training finished just before the
kill kept its 18 MB resume copy (found reading the code the harness pointed at). Dry runs, in-process."""

from __future__ import annotations

from al.app.api import open_run, run_loop
from al.core import store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.events import Message
from al.core.paths import RunPaths
from tests.conftest import make_config, run_in_process


def test_resume_removes_the_temp_files_of_killed_writes(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data))
    p = RunPaths(cfg.run_dir)
    assert run_in_process(cfg, stop_after=4)[0] == 130  # stopped before extract of iteration 0
    # what a kill -9 leaves mid-write, in the places the harness found them (a checkpoint's copy is 18 MB)
    left = [p.iteration(0) / ".validation.json.36_s6kg3.tmp", p.weights(0) / ".last.good.pt.se2ojeqk.tmp",
            p.metrics / ".convergence_tracking.csv.cqj33sph.tmp",
            p.convergence_plots / ".counts_trend.png._d5tk1ek.tmp", p.root / ".run_state.json.x1x2x3x4.tmp"]
    for f in left:
        f.write_bytes(b"partial")
    bus, events = Listeners(), []
    bus.subscribe(events.append)
    assert run_loop(open_run(cfg, resume=True, dry_run=True, ui=bus)) == 0
    assert store.read_json(p.state)["step"] == "done"
    assert not [f for f in left if f.exists()]
    assert not [f for f in p.root.rglob(".*.tmp") if "superseded" not in f.parts]
    assert (p.root / ".al_reserve").is_file()  # the run's own hidden files stay
    notes = [e.text for e in events if isinstance(e, Message) and e.text.startswith("[INIT] Removed")]
    assert notes and notes[0].startswith("[INIT] Removed 5 temp files that interrupted writes left behind")


def test_a_review_that_runs_again_keeps_the_near_duplicates_of_version_0(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data))
    p = RunPaths(cfg.run_dir)
    assert run_in_process(cfg)[0] == 0
    first = store.read_json(p.manifest(0))
    assert "near_duplicates" in first
    # --start-iteration 1 re-runs iteration 0's review, as a --resume does after a kill inside it: the manifest of
    # version 0 is saved again and must keep what the first review recorded
    code, seen, _ = run_in_process(cfg, start_iteration=1)
    assert code == 0 and seen[0] == "review"
    again = store.read_json(p.manifest(0))
    assert again.get("near_duplicates") == first["near_duplicates"]
    assert again["images"] == first["images"]


def test_a_training_finished_before_the_kill_drops_its_resume_copy(tmp_path, tiny_data):
    # retrain records train_result.json, then deletes last.good.pt (only a resumed training reads it); a kill between
    # the two left the 18 MB copy for good, since the resume sees the finished result and skips the training
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__max_iterations=1))
    p = RunPaths(cfg.run_dir)
    assert run_in_process(cfg, stop_after=1)[0] == 130  # the baseline is trained and recorded
    p.last_good(0).write_bytes(p.best_good(0).read_bytes())
    state = store.read_json(p.state)
    store.write_json(p.state, {**state, "step": "retrain", "stopped_at": None, "baseline": True})  # saved before
    code, seen, _ = run_in_process(cfg, resume=True)
    assert code == 0 and seen[0] == "retrain"
    assert not p.last_good(0).exists() and p.best_good(0).is_file()
