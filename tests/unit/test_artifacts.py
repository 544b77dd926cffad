"""The typed step artefacts (al.core.artifacts): round trips, refusals that name the file, the schema-1
validation.json of runs started before the split, and how often one step parses the per-image records."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from al.app.api import open_run, run_loop
from al.core import artifacts, store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.events import StepStarted
from al.core.paths import RunPaths
from al.core.store import StoreError
from al.steps import review
from tests.conftest import make_config
from tests.integration.test_review_support import run_at_review

NAMES = ["zero", "one"]
COUNTS = {"tp": 3, "fp": 1, "fn": 2, "precision": 0.75, "recall": 0.6, "f1": 0.666667}


def summary_body(k: int = 0, **over) -> dict:
    return {"iteration": k, "split": "val", "weights": "/w/best.pt", "conf": 0.25, "iou": 0.5, "names": NAMES,
            "dataset_version": "abc", "per_class": {n: COUNTS for n in NAMES}, "overall": COUNTS,
            "map50": 0.5, "map50_95": 0.3, "train_f1": 0.9, "train_sample": 8,
            "test": {**COUNTS, "map50": 0.4, "map50_95": 0.2, "per_class": {n: COUNTS for n in NAMES}, "images": 5},
            "timing": {"predict_s": 1.5, "images": 20}, **over}


def record(i: int) -> dict:
    return {"image": f"/data/v{i}.jpg", "width": 64, "height": 48, "gt": [[1, 1.0, 2.0, 30.0, 40.0]],
            "pred": [[1, 0.9, 1.5, 2.0, 30.0, 41.0], [0, 0.3, 5.0, 5.0, 9.0, 9.0]],
            "tp": [[0, 0, 0.93]], "fp": [1], "fn": []}


def test_validation_round_trip_writes_two_files(tmp_path):
    paths = RunPaths(tmp_path)
    summary = artifacts.ValidationSummary(**summary_body())
    records = artifacts.ValidationRecords(iteration=0, images=[record(i) for i in range(3)])
    artifacts.save_validation(paths, 0, summary, records)
    assert store.read_json(paths.validation(0), schema=2).keys() >= {"overall", "per_class", "map50", "names"}
    assert "images" not in store.read_json(paths.validation(0), schema=2)
    assert len(store.read_json(paths.validation_images(0))["images"]) == 3
    assert artifacts.load_validation(paths, 0) == summary
    back = artifacts.load_validation_records(paths, 0)
    assert back.images[0]["gt"][0] == (1, 1.0, 2.0, 30.0, 40.0) and back.images[0]["tp"] == [(0, 0, 0.93)]
    assert set(back.by_image()) == {f"/data/v{i}.jpg" for i in range(3)}


@pytest.mark.parametrize("bad, where", [
    ({"overall": {**COUNTS, "f1": 1.5}}, "overall.f1"),
    ({"names": "zero"}, "names"),
    ({"map50": None}, "map50"),
    ({"surprise": 1}, "surprise"),
])
def test_an_invalid_summary_is_refused_naming_the_file_and_the_key(tmp_path, bad, where):
    paths = RunPaths(tmp_path)
    store.write_json(paths.validation(2), summary_body(2, **bad), schema=2)
    with pytest.raises(StoreError) as e:
        artifacts.load_validation(paths, 2)
    msg = str(e.value)
    assert str(paths.validation(2)) in msg and f"'{where}'" in msg and "--start-iteration 2" in msg


def test_corrupt_or_foreign_files_are_refused_naming_the_file(tmp_path):
    paths = RunPaths(tmp_path)
    paths.validation(0).parent.mkdir(parents=True)
    paths.validation(0).write_text('{"schema": 2, "iteration": ')
    with pytest.raises(StoreError, match=r"validation\.json: corrupt JSON.*--start-iteration 0"):
        artifacts.load_validation(paths, 0)
    store.write_json(paths.validation(0), summary_body(), schema=7)
    with pytest.raises(StoreError, match=r"validation\.json: schema 7, expected 2 or 1"):
        artifacts.load_validation(paths, 0)
    bad = record(0) | {"gt": [[1, 2.0, 3.0]]}  # a box with three numbers
    store.write_json(paths.validation_images(0), {"iteration": 0, "images": [record(1), bad]})
    with pytest.raises(StoreError, match=r"validation_images\.json: invalid value at 'images\.1\.gt\.0\.3'"):
        artifacts.load_validation_records(paths, 0)
    with pytest.raises(StoreError, match=r"hard_examples\.json: file not found"):
        artifacts.load_hard_examples(paths, 0)


def test_hard_examples_keep_strategy_keys_and_refuse_a_pick_without_image(tmp_path):
    paths = RunPaths(tmp_path)
    picks = [{"image": "/a.jpg", "score": 0.8, "rank": 1, "kind": "uncertain", "components": {"entropy": 0.8},
              "reasons": ["r"], "errors": [], "uncertainty": 0.8}]
    hard = artifacts.HardExamples(iteration=1, source="pool", strategy="entropy", candidates=4, picks=picks)
    artifacts.save_hard_examples(paths, 1, hard)
    raw = store.read_json(paths.hard_examples(1))
    assert raw["picks"] == picks and "scan" not in raw  # written as given, nothing invented
    assert artifacts.load_hard_examples(paths, 1).picks == picks
    store.write_json(paths.hard_examples(1), {"iteration": 1, "source": "pool", "picks": [{"score": 0.5}]})
    with pytest.raises(StoreError, match=r"hard_examples\.json: invalid value at 'picks\.0\.image'"):
        artifacts.load_hard_examples(paths, 1)
    store.write_json(paths.hard_examples(1), {"iteration": 1, "source": "web", "picks": []})
    with pytest.raises(StoreError, match=r"hard_examples\.json: invalid value at 'source'"):
        artifacts.load_hard_examples(paths, 1)


def test_review_result_keeps_the_backend_summary_and_checks_its_counts(tmp_path):
    paths = RunPaths(tmp_path)
    body = {"iteration": 0, "mode": "manual", "backend": "local", "picks": 4, "returned_labelled": 3,
            "added_images": 3, "added_boxes": 7, "removed_from_val": 3, "val_changed": True,
            "dataset_version": "v1", "dataset_counts": {"train": 10}, "manifest": "m.json",
            "manifest_diff": "d.json", "source": "returned", "negatives": 1}
    artifacts.save_review(paths, 0, artifacts.ReviewResult(**body))
    back = artifacts.load_review(paths, 0)
    assert back.added_images == 3 and back.to_json()["source"] == "returned"
    store.write_json(paths.review(0), body | {"added_images": -1})
    with pytest.raises(StoreError, match=r"review\.json: invalid value at 'added_images'.*--start-iteration 1"):
        artifacts.load_review(paths, 0)


def test_a_schema_1_validation_json_is_read_and_split(tmp_path):
    """A run started before the split resumes: its one-file validation.json is read and rewritten as two."""
    paths = RunPaths(tmp_path)
    old = summary_body() | {"images": [record(i) for i in range(4)]}
    store.write_json(paths.validation(0), old, schema=1)
    records = artifacts.load_validation_records(paths, 0)
    assert [r["image"] for r in records.images] == [r["image"] for r in old["images"]]
    assert paths.validation_images(0).is_file()
    new = store.read_json(paths.validation(0), schema=2)
    assert "images" not in new and new["overall"] == COUNTS
    assert artifacts.load_validation(paths, 0).overall.f1 == COUNTS["f1"]


def test_a_hand_made_schema_1_file_with_records_only_is_left_alone(tmp_path):
    paths = RunPaths(tmp_path)
    store.write_json(paths.validation(0), {"iteration": 0, "names": NAMES, "images": [record(0)]})
    before = paths.validation(0).read_bytes()
    assert artifacts.load_validation_records(paths, 0).images[0]["image"] == "/data/v0.jpg"
    with pytest.raises(StoreError, match=r"validation\.json: invalid value at 'conf': Field required"):
        artifacts.load_validation(paths, 0)
    assert paths.validation(0).read_bytes() == before and not paths.validation_images(0).exists()


# ------------------------------------------------------------------------------ parses of the records per step

def test_one_loop_parses_the_records_at_most_once_per_step(tmp_path, tiny_data, monkeypatch):
    """A dry run with the combined strategy (its hard negatives read the validation FPs): analyze, extract and
    review each parse the per-image records once; converge, track and the final line read only the summary."""
    cfg = load_config(make_config(tmp_path, tiny_data, sampling_strategy={"strategy": "combined"}))
    bus = Listeners()
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=bus)
    step: list = [None]
    bus.subscribe(lambda ev: step.__setitem__(0, (ev.iteration, ev.step)) if isinstance(ev, StepStarted) else None)
    counts: Counter = Counter()
    real = store.read_json

    def counting(path, *a, **kw):  # counts, then reads as the store does
        counts[(step[0], path.name)] += 1
        return real(path, *a, **kw)

    monkeypatch.setattr(store, "read_json", counting)
    assert run_loop(ctx) == 0
    records = {key: n for (key, name), n in counts.items() if name == "validation_images.json"}
    summaries = {key: n for (key, name), n in counts.items() if name == "validation.json"}
    assert records == {(0, "analyze"): 1, (0, "extract"): 1, (0, "review"): 1, (1, "analyze"): 1}
    assert summaries == {(0, "analyze"): 1, (0, "converge"): 1, (0, "track"): 1,
                         (1, "analyze"): 1, (1, "converge"): 1, (1, "track"): 2}  # track, then the final F1
    hashed = store.read_json(RunPaths(cfg.run_dir).hash_cache)["entries"]  # the one hash service's run cache
    assert len(hashed) >= 24 + 24 + 12  # train, val and test of tiny_data at least
    summary_files = RunPaths(cfg.run_dir).iterations.glob("iteration_*/validation.json")
    assert not [f for f in summary_files if "images" in json.loads(f.read_text())]


def test_a_manual_review_parses_the_records_once_even_from_an_old_file(tmp_path, tiny_data, monkeypatch):
    """The review step writes the annotation package from the records (here a schema-1 file, as runs started
    before the split have): one parse for the whole step."""
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=2, review_cfg={"local": {"thumbnails": False}})
    seen: list[str] = []
    real = store.read_json
    monkeypatch.setattr(store, "read_json", lambda path, *a, **kw: seen.append(path.name) or real(path, *a, **kw))
    assert review.run(ctx) == "pause"
    assert (ctx.env.paths.package(0) / "package.json").is_file()
    assert [n for n in seen if n.startswith("validation")] == ["validation.json"]
