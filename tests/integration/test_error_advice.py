"""Every error message in al/ that tells the user to run a command or change a setting, followed literally: the
test makes the mistake, reads the message, does what it says (runs the command it names through al.cli.main, as
al_loop.py does, or makes the change it names in the config file or the dataset) and sees the run go on.

Dry runs on the tiny demo data (no training). Messages that other tests already follow to success:
  lost or damaged checkpoints (--start-iteration K)        tests/integration/test_recovery.py
  corrupt or lost run_state.json (--repair, then --resume) tests/integration/test_recovery.py
  disk full / read-only run directory (run it again)       tests/integration/test_recovery.py
  export the reviewed dataset to dataset.combined_dir      tests/integration/test_loop.py
  class names differ: review.local.class_mapping           tests/integration/test_imports.py
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from al.cli import main
from al.core import store
from al.core.config import ConfigError, load_config
from al.core.errors import ReviewError
from al.core.paths import RunPaths
from al.data import dataset
from al.steps import review
from tests.conftest import make_config
from tests.integration.test_recovery import _advice, _run
from tests.integration.test_review_roboflow import _ctx, server  # noqa: F401  (server: the stand-in Roboflow API)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _ultralytics_logs_outside_capsys():
    """Ultralytics' logger keeps the stream it was set up with: set it up before a test's capsys (which closes its
    streams at the end of the test), or later tests print logging errors."""
    import ultralytics  # noqa: F401


def cli(capsys, *argv) -> tuple[int, str]:
    """al_loop.py with these arguments (headless): its exit code and everything it printed."""
    code = main([*map(str, argv), "--headless"])
    out, err = capsys.readouterr()
    return code, out + err


def error(text: str) -> str:
    """The first [ERROR] line of a run's output (there must be one, and no traceback)."""
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("[ERROR]")]
    assert lines, text[-3000:]
    return lines[0]


def flag(text: str, name: str) -> list[str]:
    """The flag (and its number) that a message names without the whole command, e.g. '--start-iteration 1'."""
    m = re.search(rf"{name}(?: (\d+))?\b", text)
    assert m, f"no {name} in: {text}"
    return [name, *([m.group(1)] if m.group(1) else [])]


def edit(cfgp: Path, key: str, value) -> None:
    """What the user does in the config file: set the dotted `key` to `value`."""
    cfg = yaml.safe_load(cfgp.read_text())
    *sections, last = key.split(".")
    node = cfg
    for s in sections:
        node = node.setdefault(s, {})
    node[last] = value
    cfgp.write_text(yaml.safe_dump(cfg, sort_keys=False))


def completed(code: int, text: str) -> bool:
    return code == 0 and "ACTIVE LEARNING COMPLETE" in text and "[ERROR]" not in text


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the tiny demo set (these tests break and repair its files); returns its data.yaml."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_data.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    spec = yaml.safe_load((dst / "data.yaml").read_text())
    spec["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dst / "data.yaml"


# ------------------------------------------------------------------------------------------------ the config file

CONFIG_ADVICE = [  # (bad section, the advice in the message, the section once the advice is followed, check)
    ("training:\n  epochs_bse: 3\n", "Remove it or use one of the documented keys",
     "training:\n  epochs_base: 3\n", lambda c: c.training.epochs_base == 3),
    ("training:\n  epochs_base: 5\n  batch: 4\n  epochs_base: 7\n", "Remove one of them",
     "training:\n  batch: 4\n  epochs_base: 7\n", lambda c: c.training.epochs_base == 7),
    ("training:\n  imgsz: 100\n", "use e.g. 96", "training:\n  imgsz: 96\n", lambda c: c.training.imgsz == 96),
    ("training:\n  extra:\n    lr0: 0.1\n", "use the training.* keys instead", "training:\n  base_lr: 0.1\n",
     lambda c: c.training.base_lr == 0.1),
    ("sampling_strategy:\n  class_balance_weight: 0\n  size_diversity_weight: 0\n  spatial_diversity_weight: 0\n"
     "  uncertainty_weight: 0\n", "set at least one above 0",
     "sampling_strategy:\n  class_balance_weight: 1\n  size_diversity_weight: 0\n  spatial_diversity_weight: 0\n"
     "  uncertainty_weight: 0\n", lambda c: c.sampling_strategy.weights()["class_balance_weight"] == 1),
    ("sampling_strategy:\n  strategy: combined\n  combined_uncertainty_weight: 0\n  combined_diversity_weight: 0\n"
     "  combined_class_balance_weight: 0\n", "set at least one above 0",
     "sampling_strategy:\n  strategy: combined\n  combined_uncertainty_weight: 1\n  combined_diversity_weight: 0\n"
     "  combined_class_balance_weight: 0\n", lambda c: c.sampling_strategy.combined_weights()["uncertainty"] == 1),
    ("review:\n  backend: roboflow\n", "needs review.roboflow.project",
     "review:\n  backend: roboflow\n  roboflow:\n    project: digits\n",
     lambda c: c.review.roboflow.project == "digits"),
    ("review:\n  backend: roboflow\n", "or use backend: local", "review:\n  backend: local\n",
     lambda c: c.review.backend == "local"),
    ("review:\n  roboflow:\n    api_key_env: rf-AbC123secret\n", "use e.g. ROBOFLOW_API_KEY",
     "review:\n  roboflow:\n    api_key_env: ROBOFLOW_API_KEY\n",
     lambda c: c.review.roboflow.api_key_env == "ROBOFLOW_API_KEY"),
    ("  mining_source: pool\n", "needs dataset.pool_dir; set it", "  mining_source: pool\n  pool_dir: pool\n",
     lambda c: c.dataset.pool_dir.name == "pool"),
    ("  mining_source: pool\n", "or use mining_source: val", "  mining_source: val\n",
     lambda c: c.dataset.mining_source == "val"),
    ("model:\n  baseline: yolov8n\n", "expected a model YAML (e.g. yolov8n.yaml)", "model:\n  baseline: yolov8n.yaml\n",
     lambda c: c.model.baseline == "yolov8n.yaml"),
]


@pytest.mark.parametrize("bad,advice,fixed,check", CONFIG_ADVICE, ids=lambda v: v if isinstance(v, str) and
                         len(v) < 50 and " " in v else None)
def test_config_errors_say_what_to_change_and_the_change_loads(tmp_path, tiny_data, bad, advice, fixed, check):
    (tmp_path / "pool").mkdir()
    head = f"dataset:\n  data_yaml: {tiny_data}\n"
    p = tmp_path / "c.yaml"
    p.write_text(head + bad)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert advice in str(e.value) and str(e.value).startswith(f"{p}:")
    p.write_text(head + fixed)
    assert check(load_config(p))


def test_a_config_fixed_as_its_error_says_runs(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    edit(cfgp, "training.imgsz", 100)
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    assert code == 2 and "use e.g. 96" in error(text) and not (tmp_path / "run").exists()
    edit(cfgp, "training.imgsz", 96)
    assert completed(*cli(capsys, "--config", cfgp, "--dry-run"))


def test_a_missing_data_yaml_fixed_relative_to_the_named_folder(tmp_path, tiny_data):
    p = tmp_path / "cfg" / "c.yaml"
    p.parent.mkdir()
    p.write_text("dataset:\n  data_yaml: data.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    m = re.search(r"Fix the path \(relative paths resolve against (\S+)\)", str(e.value))
    assert m, str(e.value)
    p.write_text(f"dataset:\n  data_yaml: {os.path.relpath(tiny_data, m.group(1))}\n")
    assert load_config(p).dataset.data_yaml == tiny_data.resolve()


def test_a_missing_config_file_names_an_existing_example(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["--config", "config/nope.yaml"]) == 2
    m = re.search(r"e\.g\. --config (\S+)", capsys.readouterr().err)
    assert m and load_config(Path(m.group(1)), check_files=False).dataset.data_yaml.name == "data.yaml"


# ------------------------------------------------------------------------------------------------ data.yaml

def test_data_yaml_errors_say_what_to_change_and_the_change_reads(data):
    spec = yaml.safe_load(data.read_text())
    names = spec["names"]
    for bad, advice, fixes in [
        ({"nc": len(names) + 1}, "Make nc equal the number of names (or remove nc", [{"nc": len(names)}, {}]),
        ({"names": None}, "list the class names, e.g. names: {0: person}", [{"names": {0: "person"}}]),
        ({"val": "images/valid"}, "Fix the path (relative to 'path:'", [{"val": "images/val"}]),
    ]:
        data.write_text(yaml.safe_dump({**spec, **bad}))
        with pytest.raises(dataset.DatasetError) as e:
            dataset.read_data_yaml(data)
        assert advice in str(e.value)
        for fix in fixes:
            data.write_text(yaml.safe_dump({**{k: v for k, v in spec.items() if k != "nc"}, **fix}))
            assert dataset.read_data_yaml(data).splits["val"]


def _break_a_label(data: Path) -> tuple[Path, str]:
    lp = dataset.label_path(dataset.read_data_yaml(data).splits["train"][2])
    good = lp.read_text()
    lp.write_text(good + "9 0.5 0.5 0.2 0.2\n")
    return lp, good


@pytest.mark.parametrize("follow", ["skip", "fix the file"])
def test_bad_data_refused_then_the_advice_runs(tmp_path, data, capsys, follow):
    cfgp = make_config(tmp_path, data, active_learning__max_iterations=1)
    lp, good = _break_a_label(data)
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    line = error(text)
    assert code == 2 and f"Fix the files, or set dataset.on_bad_data: skip in {cfgp.resolve()}" in text, line
    if follow == "skip":
        edit(cfgp, "dataset.on_bad_data", "skip")
    else:
        lp.write_text(good)
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    assert completed(code, text)
    assert ("leaves these 1 images out" in text) == (follow == "skip")


@pytest.mark.parametrize("follow", ["fix the file", "start over"])
def test_data_gone_bad_under_a_run_then_the_advice_runs(tmp_path, data, capsys, follow):
    cfgp = make_config(tmp_path, data, active_learning__max_iterations=1)
    assert _run(load_config(cfgp), stop_after=1)[0] == 130
    lp, good = _break_a_label(data)
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 2 and "cannot leave images out" in text, line
    if follow == "fix the file":
        assert "fix the files, then run the same command again" in text
        lp.write_text(good)
        assert completed(*cli(capsys, "--config", cfgp, "--resume"))
    else:
        advice = text.split("set dataset.on_bad_data: skip and start over from the dataset with ")[1]
        edit(cfgp, "dataset.on_bad_data", "skip")
        code, text = cli(capsys, "--config", cfgp, *flag(advice, "--start-iteration"), "--dry-run")
        assert completed(code, text) and "leaves these 1 images out" in text


# ------------------------------------------------------------------------------------------------ opening a run

def test_an_existing_run_can_be_resumed_restarted_or_left_as_the_error_says(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    assert _run(load_config(cfgp), stop_after=2)[0] == 130
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    line = error(text)
    assert code == 2 and "Use --resume to continue it" in line
    assert completed(*cli(capsys, "--config", cfgp, "--resume"))
    # complete now: the same start is refused again, and each thing the error suggests now works
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    line = error(text)
    assert code == 2 and "--resume" not in line and "is complete" in line, line
    assert "--start-iteration N to re-run from iteration N" in line and "set run_dir to a new folder" in line
    assert completed(*cli(capsys, "--config", cfgp, "--start-iteration", 0, "--dry-run"))
    edit(cfgp, "run_dir", "run2")
    assert completed(*cli(capsys, "--config", cfgp, "--dry-run"))


def test_without_a_run_resume_and_start_iteration_say_start_one(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    code, text = cli(capsys, "--config", cfgp, "--resume")
    assert code == 2 and "Start one without --resume" in error(text)
    code, text = cli(capsys, "--config", cfgp, "--start-iteration", 1, "--dry-run")
    assert code == 2 and "Start one without flags first" in error(text)
    assert completed(*cli(capsys, "--config", cfgp, "--dry-run"))
    assert completed(*cli(capsys, "--config", cfgp, "--start-iteration", 1, "--dry-run"))


@pytest.mark.parametrize("follow", ["--resume", "a lower N"])
def test_start_iteration_past_the_last_extract_says_lower_or_resume(tmp_path, tiny_data, capsys, follow):
    cfgp = make_config(tmp_path, tiny_data)
    assert _run(load_config(cfgp), stop_after=4)[0] == 130  # iteration 0 stopped before extract
    code, text = cli(capsys, "--config", cfgp, "--start-iteration", 1, "--dry-run")
    assert code == 2 and "Use a lower N or --resume" in error(text)
    args = ["--resume"] if follow == "--resume" else ["--start-iteration", 0, "--dry-run"]
    assert completed(*cli(capsys, "--config", cfgp, *args))


def test_a_complete_run_continues_after_raising_the_limit_as_the_error_says(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    assert completed(*cli(capsys, "--config", cfgp, "--dry-run"))
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 2 and "raise active_learning.max_iterations" in line
    edit(cfgp, "active_learning.max_iterations", 2)
    code, text = cli(capsys, *_advice(line, "--start-iteration"), "--dry-run")
    assert completed(code, text) and "Maximum iterations reached: 2" in text
    rows = store.read_csv(RunPaths(load_config(cfgp).run_dir).convergence_csv)
    assert [r["iteration"] for r in rows] == ["0", "1"]


def test_a_second_loop_is_refused_until_the_first_one_ends(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    paths = RunPaths(load_config(cfgp).run_dir)
    paths.root.mkdir(parents=True)
    with FileLock(str(paths.lock)):
        code, text = cli(capsys, "--config", cfgp, "--dry-run")
        assert code == 2 and "Wait for it to finish or stop it" in error(text)
    assert completed(*cli(capsys, "--config", cfgp, "--dry-run"))


def test_nothing_to_repair_says_how_to_start(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data, active_learning__max_iterations=1)
    code, text = cli(capsys, "--config", cfgp, "--repair")
    m = re.search(r"Start a run with: python al_loop\.py (.+)$", error(text))
    assert code == 2 and m, text
    assert completed(*cli(capsys, *shlex.split(m.group(1)), "--dry-run"))  # --dry-run: no training in this test


# ------------------------------------------------------------------------------------------------ the run's files

@pytest.mark.parametrize("damage", ["file not found", "corrupt JSON"])
def test_a_lost_step_output_is_rebuilt_as_the_error_says(tmp_path, tiny_data, capsys, damage):
    cfgp = make_config(tmp_path, tiny_data)
    paths = RunPaths(load_config(cfgp).run_dir)
    assert _run(load_config(cfgp), stop_after=4)[0] == 130  # stopped before extract, which reads the error report
    if damage == "file not found":
        paths.error_report(0).unlink()
    else:
        paths.error_report(0).write_text('{"schema": 1, "err')
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 1 and f"{paths.error_report(0)}: {damage}" in line
    assert cli(capsys, "--config", cfgp, "--resume")[0] == 1  # --resume alone runs extract again: the same error
    code, text = cli(capsys, "--config", cfgp, *flag(line, "--repair"))
    assert code == 0 and "next: analyze" in text, text
    assert completed(*cli(capsys, *_advice(text, "--resume")))
    assert paths.error_report(0).is_file()


def test_a_corrupt_step_output_is_redone_as_the_error_says(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    paths = RunPaths(load_config(cfgp).run_dir)
    assert _run(load_config(cfgp), stop_after=5)[0] == 130  # stopped before review, which reads hard_examples
    paths.hard_examples(0).write_text('{"schema": 1, "picks": [')
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 1 and f"{paths.hard_examples(0)}: corrupt JSON" in line
    assert completed(*cli(capsys, "--config", cfgp, *flag(line, "--start-iteration"), "--dry-run"))


def test_a_lost_dataset_version_is_re_made_as_the_error_says(tmp_path, tiny_data, capsys):
    cfgp = make_config(tmp_path, tiny_data)
    paths = RunPaths(load_config(cfgp).run_dir)
    assert _run(load_config(cfgp), stop_after=6)[0] == 130  # stopped before retrain, which trains on version 1
    shutil.rmtree(paths.dataset_version(1))
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 1 and "Dataset version 1 missing" in line
    assert completed(*cli(capsys, "--config", cfgp, *flag(line, "--start-iteration"), "--dry-run"))
    assert (paths.dataset_version(1) / "data.yaml").is_file()


def test_a_baseline_that_is_no_checkpoint_is_refused_with_the_fix(tmp_path, tiny_data, capsys):
    (tmp_path / "model.pt").write_bytes(b"<html>404 not found</html>")  # a failed download
    cfgp = make_config(tmp_path, tiny_data, model={"baseline": "model.pt"}, active_learning__max_iterations=1)
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    line = error(text)
    assert code == 2 and "model.baseline" in line and "set model.baseline to a model YAML (e.g. yolov8n.yaml)" in line
    assert not RunPaths(load_config(cfgp).run_dir).state.exists()
    edit(cfgp, "model.baseline", "yolov8n.yaml")
    assert completed(*cli(capsys, "--config", cfgp, "--dry-run"))


# ------------------------------------------------------------------------------------------------ review

def _truth(image: str) -> str:
    return dataset.label_path(image).read_text()


def _picks(paths: RunPaths) -> list[str]:
    return [p["image"] for p in store.read_json(paths.hard_examples(0))["picks"]]


def _paused(tmp_path: Path, tiny_data: Path, capsys, **overrides) -> tuple[Path, RunPaths, str]:
    """A manual-review dry run paused at iteration 0's review: the config, the run's paths, what it printed."""
    cfgp = make_config(tmp_path, tiny_data, active_learning__review_source="manual", **overrides)
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    paths = RunPaths(load_config(cfgp).run_dir)
    assert code == 0 and store.read_json(paths.state)["step"] == "awaiting_review", text[-2000:]
    return cfgp, paths, text


def test_returned_labels_follow_each_review_error_to_an_import(tmp_path, tiny_data, capsys):
    cfgp, paths, text = _paused(tmp_path, tiny_data, capsys)
    resume = _advice(text.split("continue with:")[1], "--resume")
    returned = paths.returned(0)
    picks = _picks(paths)
    # nothing handed back yet
    code, text = cli(capsys, *resume)
    line = error(text)
    assert code == 1 and f"Put the corrected labels in {returned}" in line and "then run again with --resume" in line
    # handed back under names the package does not know
    for i, p in enumerate(picks):
        (returned / f"renamed_{i}.txt").write_text(_truth(p))
    code, text = cli(capsys, *resume)
    line = error(text)
    assert code == 1 and "Keep the image names, then run again with --resume" in line
    for i, p in enumerate(picks):
        (returned / f"renamed_{i}.txt").rename(returned / f"{Path(p).stem}.txt")
    # one file with a line training would drop
    bad = returned / f"{Path(picks[0]).stem}.txt"
    bad.write_text(_truth(picks[0]) + "9 0.5 0.5 0.1 0.1\n")
    code, text = cli(capsys, *resume)
    assert code == 1 and f"{bad}:" in text and "Fix the file, then continue (--resume)" in text, text[-2000:]
    bad.write_text(_truth(picks[0]))
    assert completed(*cli(capsys, *_advice(text, "--resume")))  # "after fixing the cause, resume with: ..."
    assert store.read_json(paths.review(0))["returned_labelled"] == len(picks)


@pytest.mark.parametrize("follow", ["review.local.import_from", "--auto", "review_source: simulated"])
def test_no_labels_and_no_export_folder_then_each_suggestion_works(tmp_path, tiny_data, capsys, follow):
    cfgp, paths, _ = _paused(tmp_path, tiny_data, capsys, dataset__combined_dir=None)
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 1 and "key 'dataset.combined_dir' is not set" in line
    assert "set review.local.import_from, or use --auto / review_source: simulated" in line
    if follow == "review.local.import_from":
        back = tmp_path / "reviewed"
        edit(cfgp, "review", {"local": {"import_from": str(back)}})
        code, text = cli(capsys, "--config", cfgp, "--resume")
        line = error(text)
        assert code == 1 and f"Dataset not found: {back}" in line and "Put the reviewed labels there" in line
        back.mkdir()
        for p in _picks(paths):
            (back / f"{Path(p).stem}.txt").write_text(_truth(p))
        assert completed(*cli(capsys, "--config", cfgp, "--resume"))
        assert store.read_json(paths.review(0))["added_images"] == 4
    elif follow == "--auto":
        assert completed(*cli(capsys, "--config", cfgp, "--resume", "--auto"))
        assert store.read_json(paths.review(0))["mode"] == "pseudo"
    else:
        edit(cfgp, "active_learning.review_source", "simulated")
        assert completed(*cli(capsys, "--config", cfgp, "--resume"))
        assert store.read_json(paths.review(0))["mode"] == "simulated"


def test_a_zip_over_the_member_limit_then_raising_it_imports(tmp_path, tiny_data, capsys):
    cfgp, paths, _ = _paused(tmp_path, tiny_data, capsys, review={"local": {"max_zip_members": 2}})
    with zipfile.ZipFile(paths.returned(0) / "labels.zip", "w") as zf:
        for p in _picks(paths):
            zf.writestr(f"{Path(p).stem}.txt", _truth(p))
    code, text = cli(capsys, "--config", cfgp, "--resume")
    line = error(text)
    assert code == 1 and "4 members, more than review.local.max_zip_members = 2" in line
    assert "or raise review.local.max_zip_members" in line
    edit(cfgp, "review.local.max_zip_members", 10)
    assert completed(*cli(capsys, "--config", cfgp, "--resume"))
    assert store.read_json(paths.review(0))["returned_labelled"] == 4


@pytest.mark.parametrize("follow", ["lower max_samples_per_iteration", "add validation images"])
def test_picks_that_would_empty_validation_then_each_suggestion_works(tmp_path, data, capsys, follow):
    spec = dataset.read_data_yaml(data)
    with_boxes = [p for p in spec.splits["val"] if _truth(p).strip()]
    val_list = data.parent / "val.txt"
    val_list.write_text("\n".join(with_boxes[:3]) + "\n")  # three validation images, each with objects
    raw = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**raw, "val": str(val_list)}))
    cfgp = make_config(tmp_path, data)  # 4 picks per iteration from the validation split
    code, text = cli(capsys, "--config", cfgp, "--dry-run")
    line = error(text)
    assert code == 1 and "would leave the validation split empty" in line, line
    if follow.startswith("lower"):
        assert "lower active_learning.max_samples_per_iteration (then --resume)" in line
        edit(cfgp, "active_learning.max_samples_per_iteration", 2)
        code, text = cli(capsys, "--config", cfgp, "--resume")
    else:
        m = re.search(r"add validation images to (\S+) and start over with: (python al_loop\.py .+?)\.$", line)
        assert m and m.group(1) == str(data.resolve()), line
        val_list.write_text("\n".join(with_boxes[:8]) + "\n")
        code, text = cli(capsys, *shlex.split(m.group(2))[2:])
    assert completed(code, text)
    assert store.read_json(RunPaths(load_config(cfgp).run_dir).review(0))["removed_from_val"] >= 2


@pytest.mark.parametrize("mistake", ["no key", "wrong key", "other workspace", "project typo"])
def test_roboflow_errors_then_the_fix_they_name_uploads(tmp_path, tiny_data, server, monkeypatch, mistake):  # noqa: F811
    ctx, _ = _ctx(tmp_path, tiny_data, server, monkeypatch, n_picks=1)
    rf = ctx.env.cfg.review.roboflow
    if mistake == "no key":
        monkeypatch.delenv("AL_TEST_RF_KEY")
    elif mistake == "wrong key":
        monkeypatch.setenv("AL_TEST_RF_KEY", "rf-someone-elses")
    elif mistake == "other workspace":
        rf.workspace = "other"
    else:
        rf.project = "prj"
    with pytest.raises(ReviewError) as e:
        review.run(ctx)
    msg = str(e.value)
    if mistake == "no key":
        m = re.search(r"set the environment variable (\w+) \(export \1=<your private API key>", msg)
        assert m, msg
        monkeypatch.setenv(m.group(1), server.key)
    elif mistake == "wrong key":
        m = re.search(r"API Keys into (\w+) \(or the secrets file\), then --resume", msg)
        assert m, msg
        monkeypatch.setenv(m.group(1), server.key)
    elif mistake == "other workspace":
        assert "or fix review.roboflow.workspace; then --resume" in msg, msg
        rf.workspace = server.ws
    else:
        assert "Check review.roboflow.workspace" in msg and "review.roboflow.project (prj)" in msg, msg
        rf.project = server.proj
    assert review.run(ctx) == "pause" and len(server.uploads) == 1  # uploaded: the loop waits for the review
