"""A new user's bad inputs: a YAML tag in a config or a data.yaml, a YAML syntax error, a lost model and its verified
copy. Each is one [ERROR] line naming the file, the line to edit and the fix (no traceback), the advice given is
advice that works, and the user's files are byte-identical afterwards."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import yaml

from al.core import store
from al.core.config import load_config
from al.core.events import RunFailed
from al.core.paths import RunPaths
from al.data.dataset import DatasetError
from al.frontends.lines import render
from al.review import ReviewError, roboflow
from al.sim.spec import SimulationError, arm_strategy
from al.steps import review
from al.yolo import checkpoints
from tests.conftest import make_config
from tests.integration.test_error_advice import cli, error
from tests.integration.test_recovery import _advice, _run
from tests.integration.test_review_support import resume, run_at_review


@pytest.fixture(autouse=True, scope="module")
def _ultralytics_logs_outside_capsys():
    """Ultralytics' logger keeps the stream it was set up with: set it up before a test's capsys."""
    import ultralytics  # noqa: F401


def digests(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under `roots` (the user's config, dataset and returned labels)."""
    files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the tiny demo set; returns its data.yaml."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_data.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    spec = yaml.safe_load((dst / "data.yaml").read_text())
    spec["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dst / "data.yaml"


def _line(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


# --------------------------------------------------------------------------------------------------- YAML tags

TAGS = ["!!python/object/apply:os.system ['touch pwned']", "!!python/name:os.system", "!!python/object:os.Foo {}",
        "!custom value", "!!binary aGk=", "!<tag:example.com,2024:x> 1"]


@pytest.mark.parametrize("tag", TAGS, ids=lambda t: t.split()[0])
def test_a_tag_in_the_config_is_refused_naming_its_line(tmp_path, data, capsys, monkeypatch, tag):
    monkeypatch.chdir(tmp_path)
    p = make_config(tmp_path, data)
    text = p.read_text().replace("  combined_dir: combined\n", f"  combined_dir: {tag}\n")
    p.write_text(text)
    before = digests(p, data.parent)
    code, out = cli(capsys, "--config", p, "--dry-run")
    shown = tag.split()[0]
    assert code == 2 and error(out) == (f"[ERROR] {p}:{_line(text, 'combined_dir:')}: the YAML tag '{shown}' is not "
                                        f"allowed: a config holds plain values (remove the tag)")
    assert digests(p, data.parent) == before and not (tmp_path / "run").exists()
    assert not (tmp_path / "pwned").exists()
    p.write_text(text.replace(f"  combined_dir: {tag}\n", "  combined_dir: combined\n"))  # the fix it names
    assert load_config(p).dataset.combined_dir == tmp_path / "combined"


def test_a_tag_in_the_data_yaml_is_refused_naming_its_line(tmp_path, data, capsys):
    text = data.read_text() + "extra: !!python/name:os.system\n"
    data.write_text(text)
    p = make_config(tmp_path, data)
    before = digests(p, data.parent)
    code, out = cli(capsys, "--config", p, "--dry-run")
    assert code == 2 and error(out) == (f"[ERROR] {data}:{_line(text, 'extra:')}: the YAML tag '!!python/name:"
                                        f"os.system' is not allowed: a config holds plain values (remove the tag)")
    assert digests(p, data.parent) == before


@pytest.mark.parametrize("value, needle", [("!!int abc", "'abc' cannot be read as !!int"),
                                           ("2024-13-01", "'2024-13-01' cannot be read as !!timestamp")])
def test_a_value_its_type_cannot_hold_names_the_line(tmp_path, data, capsys, value, needle):
    p = make_config(tmp_path, data)
    text = p.read_text() + f"tracking:\n  mlflow:\n    experiment: {value}\n"
    p.write_text(text)
    before = digests(p)
    code, out = cli(capsys, "--config", p)
    assert code == 2 and error(out) == (f"[ERROR] {p}:{_line(text, 'experiment:')}: {needle}. Fix the value, or "
                                        f"quote it to keep it as text")
    assert digests(p) == before


def test_a_tag_in_returned_labels_data_yaml_is_refused_and_returned_is_kept(tmp_path, tiny_data):
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=2)
    assert review.run(ctx) == "pause"
    returned = ctx.env.paths.returned(0)
    picks = [pk["image"] for pk in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]
    (returned / "labels").mkdir(parents=True)
    for pick in picks:
        (returned / "labels" / f"{Path(pick).stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (returned / "data.yaml").write_text("names:\n  - !!python/object/apply:os.system ['true']\n")
    before = digests(returned)
    with pytest.raises(DatasetError) as e:
        resume(ctx)
    assert str(e.value) == (f"{returned / 'data.yaml'}:2: the YAML tag '!!python/object/apply:os.system' is not "
                            f"allowed: a config holds plain values (remove the tag)")
    assert digests(returned) == before


def test_a_tag_in_a_roboflow_export_and_in_an_arm_value(tmp_path):
    (tmp_path / "data.yaml").write_text("names: !!python/name:os.system\n")
    with pytest.raises(ReviewError) as e:
        roboflow.export_names(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'data.yaml'}:1: the YAML tag '!!python/name:os.system' is not "
                                   f"allowed") and f"download the version again (delete {tmp_path})" in str(e.value)
    with pytest.raises(SimulationError, match=r"'!!python/name:os.system' is not a plain YAML value; write a number"):
        arm_strategy("combined@hard_negative_share=!!python/name:os.system")
    assert arm_strategy("combined@hard_negative_share=0.5")[1] == {"hard_negative_share": 0.5}


# ------------------------------------------------------------------------------------------------- YAML syntax

HEAD = "run_dir: run\ndataset:\n  data_yaml: {data}\n"
SYNTAX = [  # (what follows HEAD, the line to fix, the fix the message names)
    ("training\n  epochs_base: 3\n", 4, "'training' has no ':' after it. Write 'training:'"),
    ("training:\n  epochs_base 3\n  batch: 2\n", 5, "'epochs_base 3' has no ':' after its key. Write 'epochs_base: 3'"),
    ("training:\n  epochs_base:3\n  batch: 2\n", 5, "no space after its ':'. Write 'epochs_base: 3'"),
    ("  mining_source val\n  pool_dir: pool\n", 4, "Write 'mining_source: val'"),
    ("training:\n  epochs_base: 3\n   batch: 2\n", 6, "indented deeper than the key it belongs with, so it reads as "
     "part of the value on line 5. Indent it like the other keys of its section"),
    ("training:\n    epochs_base: 3\n  batch: 2\n", 6, "indented unlike the keys above it. Indent it with as many "
     "spaces as the other keys of its section"),
    ("training:\n  device: \"cpu\n  batch: 2\n", 5, "the quote \" opened on this line is not closed. End the value "
     "with \""),
    ("training:\n  device: 'cpu\n  batch: 2\nreview: {}\n", 5, "the quote ' opened on this line is not closed"),
    ("training:\n  device: [0, 1\n  batch: 2\n", 5, "the '[' opened on this line is not closed. Close it with ']'"),
    ("training: {batch: 2\nreview: {}\n", 4, "the '{' opened on this line is not closed. Close it with '}'"),
    ("training: {batch: 2,\n  epochs_base: 3\n  workers: 0}\n", 5, "a ',' or the closing '}' is missing at the end "
     "of this line (the '{' opened on line 4)"),
    ("training:\n\tbatch: 2\n", 5, "a tab character; YAML indents with spaces only. Replace the tab with spaces"),
    ("training:\n  batch: 2\t\n", 5, "a tab character"),
    ("\n\ntraining\n\n# the training section\n  batch: 2\n", 6, "'training' has no ':' after it"),
]


@pytest.mark.parametrize("bad, line, fix", SYNTAX, ids=[f"line{n}-{f[:28]}" for _, n, f in SYNTAX])
def test_a_syntax_error_names_the_line_to_fix(tmp_path, data, capsys, bad, line, fix):
    p = tmp_path / "c.yaml"
    p.write_text(HEAD.format(data=data) + bad)
    before = digests(p, data.parent)
    code, out = cli(capsys, "--config", p)
    msg = error(out)
    assert code == 2 and msg.startswith(f"[ERROR] {p}:{line}: not valid YAML: ") and fix in msg, msg
    assert len(out.strip().splitlines()) == 1 and msg.endswith(".")
    assert digests(p, data.parent) == before and not (tmp_path / "run").exists()


def test_a_syntax_error_in_the_data_yaml_names_its_line(tmp_path, data, capsys):
    text = data.read_text().replace("names:", "names", 1)
    data.write_text(text)
    p = make_config(tmp_path, data)
    before = digests(p, data.parent)
    code, out = cli(capsys, "--config", p, "--dry-run")
    assert code == 2 and error(out) == (f"[ERROR] {data}:{_line(text, 'names')}: not valid YAML: 'names' has no ':' "
                                        f"after it. Write 'names:'.")
    assert digests(p, data.parent) == before


# ------------------------------------------------------------------------------------------- a lost checkpoint

def test_a_lost_model_and_its_copy_advise_only_the_command_that_works(tmp_path, data, capsys):
    cfgp = make_config(tmp_path, data, active_learning__max_iterations=3, gate={"fine_tune_from": "latest"})
    cfg = load_config(cfgp)
    p = RunPaths(cfg.run_dir)
    assert _run(cfg, stop_after=13)[0] == 130  # stopped before iteration 1's retrain, which fine-tunes best(1)
    p.best(1).unlink()
    p.best_good(1).unlink()
    before = digests(cfgp, data.parent)
    capsys.readouterr()
    for _ in range(2):  # the same advice on every try, and never the --resume that fails again
        code, out = cli(capsys, "--config", cfgp, "--resume")
        assert code == 1
        lines = [ln for ln in out.splitlines() if ln.startswith("[ERROR]")]
        assert lines == [lines[0], "[ERROR] The run is saved; go on with the command the error above names "
                                   "(--resume would stop at the same error)"], out[-2000:]
        assert f"{p.best(1)} is missing and has no verified copy" in lines[0]
        assert not re.search(r"python al_loop\.py [^\n]*--resume", out), out[-2000:]
    args = _advice(lines[0], "--start-iteration")
    assert args[2:] == ["--start-iteration", "1", "--dry-run"]
    code, out = cli(capsys, *args)
    assert code == 0 and "ACTIVE LEARNING COMPLETE" in out and checkpoints.problem(p.best(1)) is None
    assert digests(cfgp, data.parent) == before


def test_a_failure_that_resume_cannot_get_past_prints_no_resume_command():
    cmd = "python al_loop.py --config c.yaml --resume"
    ok = "\n".join(t for t, _ in render(RunFailed(1, "review", "x: fix it", cmd)))
    assert ok.endswith(f"after fixing the cause, resume with: {cmd}")
    lost = "\n".join(t for t, _ in render(RunFailed(1, "retrain", "best.pt is missing. Re-make it with: "
                                                                        "python al_loop.py --start-iteration 1",
                                                         None)))
    assert "--resume would stop at the same error" in lost and cmd not in lost
