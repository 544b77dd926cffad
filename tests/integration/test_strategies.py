"""Strategies by config: random / entropy / combined picks with their reasons, and extract on a pool in a dry run."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from al.app.api import open_run
from al.app.api import run_loop as run
from al.core import artifacts, store
from al.core.config import ConfigError, SamplingConfig, load_config
from al.core.context import Listeners
from al.core.events import Message, Progress
from al.core.paths import RunPaths
from al.data import dataset
from al.selection import pool, sampling
from al.steps import extract
from tests.conftest import make_config, step_context

NAMES = ["zero", "one", "two"]


def fake_scores(n=6) -> pool.PoolScores:
    """Images 0 and 1 are the same frame (very uncertain), 2 is different and fairly uncertain, 5 may hold the
    rare class 2."""
    ang = [0, 0.5, 90, 30, 60, 45]
    emb = np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ang[:n]])
    unc = np.array([0.9, 0.89, 0.6, 0.1, 0.2, 0.3][:n])
    cmax = np.array([[0.9, 0.1, 0.0]] * n)
    cmax[5] = [0.2, 0.1, 0.8]
    return pool.PoolScores(images=[f"/p/img{i}.jpg" for i in range(n)], hashes=[str(i) for i in range(n)],
                           width=np.full(n, 100), height=np.full(n, 100),
                           uncertainty={"entropy": unc, "margin": unc / 2}, class_max=cmax, embedding=emb)


def test_random_is_the_seeded_uniform_draw():
    imgs = [f"/p/img{i}.jpg" for i in range(6)]
    picks = pool.choose("random", imgs, 3, seed=7)
    assert [p["image"] for p in picks] == sampling.random_baseline(imgs, 3, 7)
    assert all(p["kind"] == "random" and "random draw (seed 7)" in p["reasons"][0] for p in picks)


def test_entropy_takes_the_most_uncertain_even_if_identical():
    s = fake_scores()
    picks = pool.choose("entropy", s.images, 2, scores=s)
    assert [p["image"] for p in picks] == ["/p/img0.jpg", "/p/img1.jpg"]
    assert picks[0]["components"] == {"uncertainty": 0.9}
    assert picks[0]["reasons"] == ["uncertainty 0.900 (mean of the top 10 pre-NMS candidates, entropy)"]
    assert [p["image"] for p in pool.choose("entropy", s.images, 1, scores=s, measure="margin", top_k=3)] == \
        ["/p/img0.jpg"]


def test_combined_spreads_prefers_rare_classes_and_reserves_hard_negatives():
    s = fake_scores()
    counts = [100, 50, 0]  # class 2 never labelled
    picks = pool.choose("combined", s.images, 3, scores=s, class_counts=counts, names=NAMES,
                        weights={"uncertainty": 0.5, "diversity": 0.3, "class_balance": 0.2})
    chosen = [p["image"] for p in picks]
    assert chosen[0] == "/p/img0.jpg" and "/p/img1.jpg" not in chosen  # not the near-duplicate frame
    assert "/p/img5.jpg" in chosen  # likely holds the never-labelled class
    rare = next(p for p in picks if p["image"] == "/p/img5.jpg")
    assert rare["components"]["class_balance"] == pytest.approx(1.0)  # the pool's likeliest 'two', never labelled
    assert any("may hold 'two' (p 0.80, 1.00 of the pool's highest for that class, x inverse labelled frequency "
               "1.00)" in r for r in rare["reasons"])
    assert set(picks[0]["components"]) == {"uncertainty", "diversity", "class_balance", "raw_uncertainty"}

    hn = {"/p/img3.jpg": [{"kind": "fp", "image": "/p/img3.jpg", "index": 0, "cls": 1, "conf": 0.7,
                           "source": "validation"}],
          "/p/img4.jpg": [{"kind": "fp", "image": "/p/img4.jpg", "index": 0, "cls": 1, "conf": 0.9,
                           "source": "validation"}]}
    picks = pool.choose("combined", s.images, 4, scores=s, class_counts=counts, names=NAMES, hard_negatives=hn,
                        hard_negative_share=0.25)  # 1 of 4
    assert picks[0]["image"] == "/p/img4.jpg" and picks[0]["kind"] == "hard_negative"
    assert sum(p["kind"] == "hard_negative" for p in picks) == 1 and len(picks) == 4
    assert len({p["image"] for p in picks}) == 4
    none = pool.choose("combined", s.images, 4, scores=s, class_counts=counts, names=NAMES, hard_negatives=hn,
                       hard_negative_share=0.0)
    assert all(p["kind"] == "uncertain" for p in none)


def test_combined_class_balance_update_is_said_in_the_reasons():
    s = fake_scores()
    counts = [100, 50, 0]
    kw = dict(scores=s, class_counts=counts, names=NAMES,
              weights={"uncertainty": 0.1, "diversity": 0.0, "class_balance": 1.0})
    fixed = pool.choose("combined", s.images, 2, **kw)
    upd = pool.choose("combined", s.images, 2, class_balance_update=True, labelled_images=50, **kw)
    assert fixed[0]["image"] == upd[0]["image"] == "/p/img5.jpg"  # the likeliest 'two', never labelled
    # after it, 'two' counts 3 x 1.0 = 3 boxes (150 boxes / 50 images, x its relative probability 1.0) and 'one'
    # 50 + 3: the rarest is now 'two' at 3, so 'one' weighs (3 + 1) / (53 + 1), where the fixed term keeps 1 / 51
    assert upd[1]["components"]["class_balance"] == pytest.approx(4 / 54)
    assert fixed[1]["components"]["class_balance"] == pytest.approx(1 / 51)
    assert any("counts updated within the batch" in r for r in upd[1]["reasons"])
    assert not any("counts updated within the batch" in r for r in fixed[1]["reasons"])
    assert SamplingConfig().combined_class_balance_update is False


def test_class_difficulty_weighs_uncertainty_by_what_the_model_still_fails_on():
    # 1 - AP50: 0.5, 0.8, and the class without an AP counts as the hardest measured (0.8); mean 0.7
    assert sampling.class_difficulty([0.5, 0.2, None]) == pytest.approx([0.5 / 0.7, 0.8 / 0.7, 0.8 / 0.7])
    assert list(sampling.class_difficulty([None, None])) == [1.0, 1.0]
    assert list(sampling.class_difficulty([1.0, 1.0])) == [1.0, 1.0]
    assert sampling.class_difficulty([]).size == 0
    # an image's weight is its class scores' mix of the difficulties; no class score: unchanged
    got = sampling.calibrate_uncertainty([0.5, 0.5, 0.4], [[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]], [0.5, 1.5])
    assert got == pytest.approx([0.25, 0.5, 0.4])
    with pytest.raises(ValueError, match="2 class probabilities per image but 3 class difficulties"):
        sampling.calibrate_uncertainty([0.5], [[1.0, 0.0]], [1.0, 1.0, 1.0])

    s = fake_scores()
    kw = dict(scores=s, class_counts=[10, 10, 10], names=NAMES,
              weights={"uncertainty": 1.0, "diversity": 0.0, "class_balance": 0.0})
    plain = pool.choose("combined", s.images, 1, **kw)
    assert plain[0]["image"] == "/p/img0.jpg"  # the most uncertain, a 'zero'
    # 'zero' is detected well, 'two' not at all: the uncertain 'zero' images give way to the one likely 'two'
    cal = pool.choose("combined", s.images, 1, class_difficulty=list(sampling.class_difficulty([0.9, 0.5, 0.0])),
                      **kw)
    assert cal[0]["image"] == "/p/img5.jpg"
    assert cal[0]["components"]["raw_uncertainty"] == pytest.approx(0.3)
    assert "x class difficulty" in cal[0]["reasons"][0] and "x class difficulty" not in plain[0]["reasons"][0]
    assert SamplingConfig().combined_difficulty_calibration is False


def test_sampling_config_keys_and_defaults(tmp_path, tiny_data):
    sc = SamplingConfig()
    assert sc.strategy == "combined" and sc.uncertainty_measure == "entropy"
    assert sc.weights() == {"class_balance_weight": 0.3, "size_diversity_weight": 0.3,
                            "spatial_diversity_weight": 0.2, "uncertainty_weight": 0.2}
    assert sc.combined_weights() == {"uncertainty": 0.5, "diversity": 0.0, "class_balance": 0.2}
    with pytest.raises(ConfigError, match="sampling_strategy.strategy"):
        load_config(make_config(tmp_path, tiny_data, sampling_strategy={"strategy": "smart"}))
    zero = {"combined_uncertainty_weight": 0, "combined_diversity_weight": 0, "combined_class_balance_weight": 0}
    # only the strategy in effect needs a weight above 0: mining the validation split uses fn_weighted unless asked
    assert load_config(make_config(tmp_path, tiny_data, sampling_strategy=zero)).sampling_strategy.strategy \
        == "fn_weighted"
    for ov in ({"sampling_strategy": {**zero, "strategy": "combined"}},
               {"sampling_strategy": zero, "dataset__mining_source": "pool"}):
        with pytest.raises(ConfigError, match="combined_\\* weights 0"):
            load_config(make_config(tmp_path, tiny_data, **ov))


def _dry_pool_loop(tmp_path, tiny_data, **overrides):
    """A dry-run loop mining the tiny data's pool: (its context, its run paths, every event it emitted)."""
    cfg = load_config(make_config(tmp_path, tiny_data, dataset__mining_source="pool", **overrides))
    bus = Listeners()
    events: list = []
    bus.subscribe(events.append)
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=bus)
    assert run(ctx) == 0
    return ctx, RunPaths(cfg.run_dir), events


def test_extract_on_a_pool_in_a_dry_run_loop(tmp_path, tiny_data):
    ctx, p, events = _dry_pool_loop(tmp_path, tiny_data)
    hard = store.read_json(p.hard_examples(0))
    assert hard["strategy"] == "combined" and hard["source"] == "pool" and hard["candidates"] == 16
    assert hard["scan"]["images"] == 16 + 24 and hard["scan"]["cached"] == 0  # pool + labelled reference
    assert len(hard["picks"]) == 4 and all(pk["reasons"] and pk["components"] for pk in hard["picks"])
    # a pool without a deployed model's detections has no hard-negative candidates: the reserved slot (0.2 x 4)
    # is said and given back to the other picks
    assert hard["hard_negative_slots"] == {"reserved": 1, "filled": 0, "given_back": 1}
    assert all(pk["kind"] == "uncertain" for pk in hard["picks"])
    assert any(isinstance(e, Message) and e.text.startswith("[EXTRACT] hard negatives: 1 slots reserved "
                                                            "(sampling_strategy.hard_negative_share 0.2), 0 "
                                                            "candidates: 1 slots given back") for e in events)
    preds = store.read_json(p.pool_predictions(0))
    assert sorted(r["image"] for r in preds["images"]) == sorted(pk["image"] for pk in hard["picks"])
    review = store.read_json(p.review(0))
    assert review["added_images"] == 4
    prog = [e for e in events if isinstance(e, Progress) and e.step == "extract"]
    assert prog and prog[-1].done == prog[-1].total == 40 and prog[-1].unit == "images"

    # re-running the step (what --resume does after an interruption) recomputes nothing
    ctx.state.iteration = 0
    assert extract.run(ctx) == "next"
    again = store.read_json(p.hard_examples(0))
    assert again["scan"]["cached"] == 40
    assert [pk["image"] for pk in again["picks"]] == [pk["image"] for pk in hard["picks"]]


def test_extract_calibrates_by_the_validation_ap_when_asked(tmp_path, tiny_data):
    _, p, events = _dry_pool_loop(tmp_path, tiny_data, sampling_strategy={"combined_difficulty_calibration": True})
    hard = store.read_json(p.hard_examples(0))
    names = dataset.read_data_yaml(tiny_data).names
    per_class = artifacts.load_validation(p, 0).per_class_ap
    ap = {n: per_class[n].ap50 if n in per_class else None for n in names}
    want = sampling.class_difficulty([ap[n] for n in names])
    assert hard["class_difficulty"] == {n: pytest.approx(round(float(w), 4)) for n, w in zip(names, want)}
    assert any(isinstance(e, Message) and e.text.startswith("[EXTRACT] class difficulty (1 - validation AP50")
               for e in events)


def test_pool_images_are_excluded_by_content_not_by_name(tmp_path, tiny_data):
    """A pool image named like a labelled image is a candidate; a byte copy of a labelled image is not."""
    pool_dir = tmp_path / "pool"
    (pool_dir / "cam2").mkdir(parents=True)
    train = sorted((tiny_data.parent / "images" / "train").glob("*.jpg"))
    other = sorted((tiny_data.parent / "pool" / "images").glob("*.jpg"))
    shutil.copy(other[0], pool_dir / "cam2" / train[0].name)  # another image under a labelled image's name
    shutil.copy(other[1], pool_dir / "cam2" / train[1].name)
    shutil.copy(train[2], pool_dir / "copy_of_a_training_image.jpg")
    cfg = load_config(make_config(tmp_path, tiny_data, dataset__mining_source="pool", dataset__pool_dir=str(pool_dir)))
    splits = dataset.read_data_yaml(tiny_data).splits
    want = [str((pool_dir / "cam2" / f.name).resolve()) for f in train[:2]]
    assert extract._pool_images(step_context(cfg), splits) == want


@pytest.mark.parametrize("strategy", ["random", "entropy", "fn_weighted"])
def test_other_strategies_run_in_the_loop(tmp_path, tiny_data, strategy):
    cfg = load_config(make_config(tmp_path, tiny_data, dataset__mining_source="pool",
                                  active_learning__max_iterations=1, sampling_strategy={"strategy": strategy}))
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners())
    assert run(ctx) == 0
    ctx.state.iteration = 0
    extract.run(ctx)  # max_iterations 1 stops before extract; run the step on its own
    hard = store.read_json(RunPaths(cfg.run_dir).hard_examples(0))
    assert hard["strategy"] == strategy
    if strategy != "fn_weighted":  # an untrained model predicts no boxes, so fn_weighted has no candidates
        assert len(hard["picks"]) == 4
        assert store.read_json(RunPaths(cfg.run_dir).pool_predictions(0))["images"]
