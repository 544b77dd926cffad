"""The loop end to end in dry-run mode (real Ultralytics inference with an untrained model, no training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from al.app.api import open_run
from al.app.api import run_loop as run
from al.cli import main
from al.core import artifacts, store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.events import RunFailed, StepFinished
from al.core.paths import RunPaths
from tests.conftest import make_config, run_in_process

EXPECTED = ["retrain", "validate", "analyze", "converge", "extract", "review", "retrain", "track",
            "validate", "analyze", "converge", "track"]


def _run(cfg, **kw):
    """Run the machine (tests.conftest.run_in_process); returns the exit code and the steps started."""
    code, seen, _ = run_in_process(cfg, **kw)
    return code, seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data):
    """One uninterrupted dry run: its step order and final CSV."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = load_config(make_config(tmp, tiny_data))
    code, seen = _run(cfg)
    assert code == 0
    return cfg, seen, (cfg.run_dir / "metrics" / "convergence_tracking.csv").read_text()


def test_machine_order_and_run_tree(reference):
    cfg, seen, csv = reference
    assert seen == EXPECTED
    p = RunPaths(cfg.run_dir)
    for k in (0, 1):
        for f in (p.best(k), p.validation(k), p.validation_images(k), p.error_report(k), p.prompt_suggestions(k),
                  p.metadata(k), p.training_log(k), p.error_analysis(k) / "fn_size_distribution.png",
                  p.error_analysis(k) / "fn_position_distribution.png", p.error_analysis(k) / "error_heatmap.png",
                  p.iteration_report(k), p.prompts(k)):
            assert f.is_file(), f
        assert any(p.fn_crops(k).iterdir())
    for name in ("f1_trend", "metrics_trend", "counts_trend", "per_class_f1_trend", "per_class_fn_trend"):
        assert (p.convergence_plots / f"{name}.png").is_file()
    assert p.hard_examples(0).is_file() and not p.hard_examples(1).is_file()  # converged at iteration 1
    rows = store.read_csv(p.convergence_csv)
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert rows[1]["converged"] == "1" and rows[1]["reason"] == "Maximum iterations reached: 2"
    # the 4 picks of iteration 0 moved from val into train
    assert int(rows[1]["labelled_images"]) == int(rows[0]["labelled_images"]) + 4
    assert int(rows[1]["val_images"]) == int(rows[0]["val_images"]) - 4
    state = store.read_json(p.state)
    assert state["step"] == "done"
    meta = store.read_json(p.metadata(0))
    assert meta["dry_run"] is True and set(meta["timings_s"]) >= {"validate", "analyze", "extract", "review"}
    val = artifacts.load_validation(p, 0)
    assert val.test.images == 12 and val.train_sample == 8
    review = store.read_json(p.review(0))
    assert review["mode"] == "simulated" and review["simulation"] is True and review["added_images"] == 4


@pytest.mark.parametrize("stop_after", range(1, len(EXPECTED)))
def test_resume_after_every_step_gives_the_same_csv(tmp_path, tiny_data, reference, stop_after):
    _, _, ref_csv = reference
    cfg = load_config(make_config(tmp_path, tiny_data))
    code, seen = _run(cfg, stop_after=stop_after)
    assert code == 130 and seen == EXPECTED[:stop_after]
    state = store.read_json(RunPaths(cfg.run_dir).state)
    assert state["step"] == "interrupted" and state["stopped_at"] == EXPECTED[stop_after]
    code, seen2 = _run(cfg, resume=True)
    assert code == 0 and seen2 == EXPECTED[stop_after:]
    assert (cfg.run_dir / "metrics" / "convergence_tracking.csv").read_text() == ref_csv


def test_existing_run_needs_resume_or_start_iteration(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0
    out = capsys.readouterr().out
    assert "ACTIVE LEARNING COMPLETE" in out and "[STEP 1/7] Validating model..." in out
    assert main(["--config", str(cfgp), "--headless"]) == 2
    err = capsys.readouterr().err  # complete: --resume would not continue it (tests/integration/test_error_advice.py)
    assert "is complete" in err and "Use --start-iteration N" in err and "--resume" not in err
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 2
    assert "is complete" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--config", str(cfgp), "--resume", "--start-iteration", "1"])
    assert e.value.code == 2


def test_resume_without_run_and_lock_held(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 2
    assert "No run to resume" in capsys.readouterr().err
    paths = RunPaths(load_config(cfgp).run_dir)
    with FileLock(str(paths.lock)):
        assert main(["--config", str(cfgp), "--headless"]) == 2
    assert "Another al_loop is already running" in capsys.readouterr().err


def test_start_iteration_keeps_earlier_and_moves_later_aside(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__max_iterations=3))
    assert _run(cfg)[0] == 0
    p = RunPaths(cfg.run_dir)
    first_val0 = p.validation(0).read_bytes()
    code, seen = _run(cfg, start_iteration=1)
    assert code == 0
    assert seen[:3] == ["review", "retrain", "track"] and seen[3] == "validate"
    assert p.validation(0).read_bytes() == first_val0  # earlier iteration untouched
    superseded = list((cfg.run_dir / "superseded").glob("*/iterations/iteration_1"))
    assert len(superseded) == 1 and (superseded[0] / "validation.json").is_file()
    rows = store.read_csv(p.convergence_csv)
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]


def test_start_iteration_supersedes_every_later_artefact(tmp_path, tiny_data):
    """Nothing of the old iterations >= N stays live (reports, prompts, CSV rows, plots): only under superseded/."""
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__max_iterations=3))
    assert _run(cfg)[0] == 0
    p = RunPaths(cfg.run_dir)
    later = [p.iteration(1), p.iteration(2), p.dataset_version(1), p.dataset_version(2), p.added_images(1).parent,
             p.iteration_report(1), p.iteration_report(2), p.prompts(1), p.prompts(2)]
    assert all(f.exists() for f in later)
    old_csv, old_plot = p.convergence_csv.read_text(), (p.convergence_plots / "f1_trend.png").read_bytes()
    old_history = p.prompt_history.read_text()

    ctx = open_run(cfg, start_iteration=1, dry_run=True, ui=Listeners())
    assert [f for f in later if f.exists()] == []
    [old] = (cfg.run_dir / "superseded").iterdir()
    assert [f for f in later if not (old / f.relative_to(p.root)).exists()] == []
    assert p.iteration(0).is_dir() and p.iteration_report(0).is_file() and p.prompts(0).is_file()
    assert [r["iteration"] for r in store.read_csv(p.convergence_csv)] == ["0"]
    assert (old / p.convergence_csv.relative_to(p.root)).read_text() == old_csv
    assert [v["iteration"] for v in store.read_json(p.prompt_history)["versions"]] == [0]
    assert (old / p.prompt_history.relative_to(p.root)).read_text() == old_history
    assert (p.convergence_plots / "f1_trend.png").read_bytes() != old_plot  # drawn again from row 0 alone
    assert (old / p.convergence_plots.relative_to(p.root) / "f1_trend.png").read_bytes() == old_plot

    assert run(ctx) == 0
    assert [r["iteration"] for r in store.read_csv(p.convergence_csv)] == ["0", "1", "2"]
    assert [v["iteration"] for v in store.read_json(p.prompt_history)["versions"]] == [0, 1, 2]
    assert all(f.exists() for f in later)


def test_an_unreadable_image_in_the_analysis_is_a_user_error_and_the_run_resumes(tmp_path, tiny_data):
    data = tmp_path / "tiny"  # a copy: one of its images is broken below
    shutil.copytree(tiny_data.parent, data, ignore=shutil.ignore_patterns("*.cache"))
    (data / "data.yaml").write_text(yaml.safe_dump({**yaml.safe_load(tiny_data.read_text()), "path": str(data)}))
    cfg = load_config(make_config(tmp_path, data / "data.yaml", active_learning__max_iterations=1))
    p = RunPaths(cfg.run_dir)
    bus = Listeners()
    events, broken = [], {}

    def break_an_image(ev):  # after validate read it, before analyze opens it
        if isinstance(ev, StepFinished) and ev.step == "validate" and not broken:
            rec = next(r for r in artifacts.load_validation_records(p, 0).images if r["fn"] or r["fp"])
            img = Path(rec["image"]).resolve()
            assert img.is_relative_to(data)
            broken[img] = img.read_bytes()
            img.write_bytes(b"not an image")

    bus.subscribe(break_an_image)
    bus.subscribe(events.append)
    assert run(open_run(cfg, dry_run=True, ui=bus)) == 1
    [failed] = [e for e in events if isinstance(e, RunFailed)]
    [(img, original)] = broken.items()
    assert failed.step == "analyze" and failed.saved and "\n" not in failed.message
    assert str(img) in failed.message and "cannot be read. Restore the image" in failed.message
    assert "Traceback" not in failed.message and "(full traceback in" not in failed.message
    assert store.read_json(p.state)["step"] == "failed"
    img.write_bytes(original)  # the fix the message names
    code, seen = _run(cfg, resume=True)
    assert code == 0 and seen[0] == "analyze"


def test_failed_step_is_resumable_after_fix(tmp_path, tiny_data):
    # manual review with no exported dataset: pause, then a clear failure, then success once it exists
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__review_source="manual"))
    code, seen = _run(cfg)
    assert code == 0 and seen[-1] == "review"
    p = RunPaths(cfg.run_dir)
    assert store.read_json(p.state)["step"] == "awaiting_review"
    code, _ = _run(cfg, resume=True)
    assert code == 1
    st = store.read_json(p.state)
    assert st["step"] == "failed" and st["stopped_at"] == "review" and "Dataset not found" in st["error"]
    combined = cfg.dataset.combined_dir
    # the human's export: the pool images with their (hidden until now) labels
    shutil.copytree(tiny_data.parent / "pool" / "images", combined / "images" / "train")
    shutil.copytree(tiny_data.parent / "pool" / "labels_hidden", combined / "labels" / "train")
    (combined / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\n"
                                        "names: {0: zero, 1: one, 2: two, 3: three, 4: four}\n")
    code, seen = _run(cfg, resume=True)
    assert code == 0 and seen[0] == "review"
    review = store.read_json(p.review(0))
    assert review["mode"] == "manual" and review["added_images"] == 16 and review["removed_from_val"] == 0
    assert review["added_boxes"] == sum(len(f.read_text().splitlines())
                                        for f in (tiny_data.parent / "pool" / "labels_hidden").iterdir())


def test_class_name_mismatch_in_combined_is_refused(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data, active_learning__review_source="manual",
                                  active_learning__require_human_review=False))
    combined = cfg.dataset.combined_dir
    shutil.copytree(tiny_data.parent / "images" / "train", combined / "images" / "train")
    (combined / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames: [a, b]\n")
    code, _ = _run(cfg)
    assert code == 1
    err = store.read_json(RunPaths(cfg.run_dir).state)["error"]
    assert "class names ['a', 'b'] differ from the model's" in err
