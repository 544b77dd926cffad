"""The stable decision set and the promotion gate through the real loop on tiny data (docs/GATE.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from al.core import artifacts, store
from al.core.config import ConfigError, load_config
from al.core.events import GateVerdict, RunFailed
from al.core.paths import RunPaths
from al.data import dataset
from al.frontends.lines import render
from tests.conftest import make_config, run_in_process


def _cfg(tmp_path: Path, data: Path, gate: dict | None = None, **over):
    over.setdefault("active_learning__max_iterations", 3)
    return load_config(make_config(tmp_path, data, gate=gate or {}, **over))


def _promotions(paths: RunPaths, n: int) -> list[artifacts.Promotion]:
    return [artifacts.load_promotion(paths, k) for k in range(n)]


def _spec_model(paths: RunPaths, k: int) -> str:
    return store.read_json(paths.train_result(k))["spec"]["model"]


def test_val_frozen_set_is_carved_once_never_mined_and_rejections_keep_the_champion(tmp_path, tiny_data):
    """Dry run (every model a copy of the one it fine-tunes: equal figures): with margin 0 no challenger beats the
    champion, so iteration 0 stays champion, each retrain fine-tunes it, and the rejected weights are kept."""
    cfg = _cfg(tmp_path, tiny_data, {"decision_set": "val_frozen", "val_frozen_fraction": 0.25})
    code, _, events = run_in_process(cfg)
    assert code == 0
    paths = RunPaths(cfg.run_dir)
    ds = artifacts.load_decision_set(paths)
    _, base = dataset.read_snapshot(paths.dataset_version(0))
    assert ds.set == "val_frozen" and len(ds.images) == 6 and set(ds.images) <= set(base["val"])
    assert ds.created_iteration == 0 and set(ds.hashes) == set(ds.images)
    for k in range(3):
        _, splits = dataset.read_snapshot(paths.dataset_version(k))
        assert set(ds.images) <= set(splits["val"])  # they stay in val ...
        if paths.hard_examples(k).is_file():  # ... and are never picked
            assert not {p["image"] for p in artifacts.load_hard_examples(paths, k).picks} & set(ds.images)
    val_sizes = [len(dataset.read_snapshot(paths.dataset_version(k))[1]["val"]) for k in range(3)]
    assert val_sizes[0] > val_sizes[1] > val_sizes[2]  # the remainder shrinks; the decision set does not

    p0, p1, p2 = _promotions(paths, 3)
    assert (p0.promoted, p0.champion_before, p0.champion_after, p0.delta) == (True, None, 0, None)
    for p in (p1, p2):
        assert (p.promoted, p.champion_before, p.champion_after) == (False, 0, 0)
        assert p.delta == 0.0 and p.ci_low == 0.0 == p.ci_high and "not above the margin" in p.reason
        assert p.decision_set == "val_frozen" and p.decision_images == 6 and p.resamples == 1000
    for k in (1, 2):  # every retrain fine-tuned the champion; the rejected challengers are kept
        assert _spec_model(paths, k) == str(paths.best(0))
        assert paths.best(k).is_file() and paths.decision_eval(k).is_file()
    champ = artifacts.load_champion(paths)
    assert (champ.iteration, champ.weights, champ.metric) == (0, str(paths.best(0)), "f1")

    rows = store.read_csv(paths.convergence_csv)
    assert [r["decision_set"] for r in rows] == ["val_frozen"] * 3 and {r["decision_images"] for r in rows} == {"6"}
    assert [r["champion"] for r in rows] == ["0", "0", "0"] and [r["promoted"] for r in rows] == ["1", "0", "0"]
    assert [r["gate_delta"] for r in rows] == ["", "0.0", "0.0"] and json.loads(rows[1]["gate_alarms"]) == []
    for k, r in enumerate(rows):
        val = artifacts.load_validation(paths, k)
        assert val.decision is not None and val.decision.images == 6
        assert float(r["decision_f1"]) == pytest.approx(val.decision.f1)
        assert int(r["val_images"]) == val_sizes[k]
    meta = store.read_json(paths.metadata(1))
    assert meta["promotion"]["champion_after"] == 0 and meta["model"]["trained_next_from"] == str(paths.best(0))
    report = store.read_json(paths.iteration_report(1))
    assert report["promotion"]["promoted"] is False and report["decision"]["set"] == "val_frozen"
    lines = [t for e in events if isinstance(e, GateVerdict) for t, _ in render(e)]
    assert lines[0].startswith("[GATE] iteration 0 is the champion on val_frozen (6 images)")
    assert lines[1].startswith("[GATE] challenger 1 vs champion 0 on val_frozen (6 images): f1 ")
    assert "delta +0.0000 [95% CI +0.0000, +0.0000] -> REJECTED" in lines[1]


def test_fine_tune_from_latest_and_the_decision_set_defaults_to_test(tmp_path, tiny_data):
    cfg = _cfg(tmp_path, tiny_data, {"fine_tune_from": "latest"}, active_learning__max_iterations=2)
    assert run_in_process(cfg)[0] == 0
    paths = RunPaths(cfg.run_dir)
    ds = artifacts.load_decision_set(paths)
    _, base = dataset.read_snapshot(paths.dataset_version(0))
    assert ds.set == "test" and ds.images == sorted(base["test"])
    assert _spec_model(paths, 1) == str(paths.best(0))
    assert artifacts.load_promotion(paths, 1).champion_after == 0  # rejected, yet latest is what is built on
    # the test split is the decision set: decision figures equal validate's test figures
    val = artifacts.load_validation(paths, 1)
    assert val.decision is not None and val.test is not None
    assert val.decision.f1 == pytest.approx(val.test.f1) and val.decision.map50 == pytest.approx(val.test.map50)
    assert val.decision.map50_95 == pytest.approx(val.test.map50_95)


def test_start_iteration_derives_the_champion_from_earlier_iterations(tmp_path, tiny_data):
    """margin -1 accepts every challenger: the champion is always the latest model. A restart at 2 moves iteration
    2 aside, so champion.json must be derived again from iteration 1's verdict, and the retrain starts from it."""
    cfg = _cfg(tmp_path, tiny_data, {"margin": -1.0})
    assert run_in_process(cfg)[0] == 0
    paths = RunPaths(cfg.run_dir)
    assert [p.champion_after for p in _promotions(paths, 3)] == [0, 1, 2]
    assert artifacts.load_champion(paths).iteration == 2
    # stop right after the restart's first step (iteration 1's review): nothing of iteration 2 exists yet
    code, seen, _ = run_in_process(cfg, start_iteration=2, stop_after=1)
    assert seen == ["review"]
    assert artifacts.load_champion(paths).iteration == 1
    assert not paths.promotion(2).is_file()
    old = list((paths.root / "superseded").glob("*/champion.json"))
    assert len(old) == 1 and json.loads(old[0].read_text())["iteration"] == 2
    assert run_in_process(cfg, resume=True)[0] == 0
    assert _spec_model(paths, 2) == str(paths.best(1))
    assert artifacts.load_promotion(paths, 2).champion_before == 1


def test_a_changed_decision_image_is_refused(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data.parent, data)
    cfg = _cfg(tmp_path, data / tiny_data.name)
    code, _, _ = run_in_process(cfg, stop_after=3)  # baseline, validate and analyze of iteration 0
    paths = RunPaths(cfg.run_dir)
    ds = artifacts.load_decision_set(paths)
    victim = Path(ds.images[1])
    label = dataset.label_path(str(victim))
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")  # one more box: the figures would change
    code, _, events = run_in_process(cfg, resume=True)
    assert code != 0
    [failed] = [e for e in events if isinstance(e, RunFailed)]
    assert failed.step == "validate" and failed.iteration == 1
    assert str(paths.decision_set) in failed.message and str(victim) in failed.message
    assert "--start-iteration 0" in failed.message


def test_a_better_challenger_is_promoted_with_its_interval(tmp_path, tiny_data, learned_baseline):
    """Iteration 0 is an untrained model (mAP 0); iteration 1's weights are replaced by a model that learned: the
    gate on mAP50 promotes it, with an interval, and iteration 2 fine-tunes it."""
    cfg = _cfg(tmp_path, tiny_data, {"metric": "map50", "map_resamples": 300}, training__imgsz=96,
               active_learning__overfit_gap=1.0)  # the learned model's train/val gap must not stop the run
    paths = RunPaths(cfg.run_dir)
    run_in_process(cfg, stop_after=7)  # up to the retrain that writes iteration 1's weights
    assert paths.best(1).is_file() and not paths.validation(1).is_file()
    shutil.copyfile(learned_baseline, paths.best(1))
    paths.best_good(1).unlink(missing_ok=True)
    assert run_in_process(cfg, resume=True)[0] == 0
    p0, p1, p2 = _promotions(paths, 3)
    assert p0.challenger_value == 0.0
    assert p1.promoted and p1.champion_after == 1 and p1.delta is not None and p1.delta > 0
    assert p1.ci_low is not None and p1.ci_high is not None and p1.ci_low <= p1.delta <= p1.ci_high
    assert p1.challenger_value == pytest.approx(artifacts.load_validation(paths, 1).decision.map50, abs=1e-6)
    assert _spec_model(paths, 2) == str(paths.best(1))
    # the saved arrays are the bootstrap's input: the same verdict from them again (deterministic)
    from al.metrics import gate as stats

    with np.load(paths.decision_eval(1)) as z:
        a1 = stats.DecisionArrays.from_dict({k: z[k] for k in z.files})
    with np.load(paths.decision_eval(0)) as z:
        a0 = stats.DecisionArrays.from_dict({k: z[k] for k in z.files})
    gc = cfg.gate
    r = stats.compare(a0, a1, list(artifacts.load_validation(paths, 1).names), metric="map50", margin=gc.margin,
                      require_significant=False, confidence=gc.confidence, resamples=gc.map_resamples,
                      seed=(cfg.training.seed, 1), max_class_drop=gc.max_class_drop,
                      min_class_instances=gc.min_class_instances)
    assert (round(r.ci_low, 6), round(r.ci_high, 6)) == (p1.ci_low, p1.ci_high)


@pytest.mark.parametrize(("key", "value", "words"), [
    ("margin", 2, "less than or equal to 1"), ("decision_set", "pool", "'auto', 'test' or 'val_frozen'"),
    ("resamples", 3, "greater than or equal to 10"), ("typo_key", 1, "unknown key 'gate.typo_key'"),
])
def test_bad_gate_values_are_refused_naming_the_key(tmp_path, tiny_data, key, value, words):
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, tiny_data, {key: value})
    assert f"gate.{key}" in str(e.value) and words in str(e.value)
