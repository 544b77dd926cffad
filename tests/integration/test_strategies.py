"""Strategies by config: random / entropy / most_boxes / diversity / combined picks with their reasons, and extract
on a pool in a dry run."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

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
from al.steps.review import within_box_budget
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


def with_boxes(s: pool.PoolScores, confs: list[list[float]]) -> pool.PoolScores:
    """`s` with in-memory post-NMS boxes: image i gets one box per confidence in confs[i]."""
    for h, cs in zip(s.hashes, confs):
        s.in_memory[h] = np.array([[0, c, 10, 10, 20, 20] for c in cs], dtype=np.float32).reshape(-1, 6)
    return s


BOX_CONFS = [[0.9, 0.2], [0.3, 0.3, 0.26], [0.25, 0.6, 0.1], [], [0.5, 0.5, 0.5], [0.24]]
"""At validation.conf 0.25 (a box at exactly 0.25 counts): 1, 3, 2, 0, 3, 0 boxes."""


def test_most_boxes_takes_the_busiest_images_ties_by_uncertainty():
    s = with_boxes(fake_scores(), BOX_CONFS)  # uncertainty 0.9, 0.89, 0.6, 0.1, 0.2, 0.3
    assert list(s.box_counts(0.25)) == [1, 3, 2, 0, 3, 0]
    picks = pool.choose("most_boxes", s.images, 6, scores=s, box_conf=0.25, seed=3)
    # 1 and 4 have 3 boxes each, 1 is the more uncertain; 5 and 3 have none, 5 is the more uncertain
    assert [p["image"] for p in picks] == [f"/p/img{i}.jpg" for i in (1, 4, 2, 0, 5, 3)]
    assert picks[0]["kind"] == "most_boxes" and picks[0]["score"] == 3.0
    assert picks[0]["components"] == {"boxes": 3.0, "uncertainty": pytest.approx(0.89)}
    assert picks[0]["reasons"] == [
        "3 boxes predicted by the current model at conf >= 0.25 (validation.conf)",
        "uncertainty 0.890 (mean of the top 10 pre-NMS candidates, entropy): the tie-break among images with as "
        "many boxes (then a seeded random order)"]
    assert picks[3]["reasons"][0] == "1 box predicted by the current model at conf >= 0.25 (validation.conf)"
    assert picks[0]["errors"] == []
    # the budget, and the threshold: at 0.5 only 4 (3 boxes), then 0 and 2 (1 each, 0 the more uncertain)
    top = pool.choose("most_boxes", s.images, 3, scores=s, box_conf=0.5)
    assert [p["image"] for p in top] == [f"/p/img{i}.jpg" for i in (4, 0, 2)]
    assert "at conf >= 0.5 (validation.conf)" in top[0]["reasons"][0]


def test_box_counts_read_each_cache_file_once_and_match_the_stored_predictions(tmp_path):
    rows = [{"hash": f"h{i}", "width": 100, "height": 100, "entropy": 0.1, "margin": 0.1,
             "class_max": np.zeros(3), "embedding": np.ones(2),
             "pred": np.array([[0, c, 1, 1, 5, 5] for c in cs]).reshape(-1, 6)} for i, cs in enumerate(BOX_CONFS)]
    f = tmp_path / "chunk.npz"
    f.write_bytes(pool.chunk_bytes(rows))
    s = fake_scores()
    s.hashes = [r["hash"] for r in rows]
    s.where = {r["hash"]: (f, i) for i, r in enumerate(rows)}
    want = [int((s.predictions(i)[:, 1] >= 0.25).sum()) for i in range(6)]
    assert list(s.box_counts(0.25)) == want == [1, 3, 2, 0, 3, 0]
    s.where["h0"] = (None, 0)
    with pytest.raises(KeyError, match="neither cached nor in memory"):
        s.box_counts(0.25)


def test_diversity_covers_the_embeddings_from_the_labelled_set():
    s = fake_scores()  # embeddings at 0, 0.5, 90, 30, 60, 45 degrees; img0 and img1 are the same frame
    labelled = np.array([[1.0, 0.0]])  # 0 degrees
    picks = pool.choose("diversity", s.images, 3, scores=s, labelled_emb=labelled)
    # farthest from 0 deg: 90 (img2); then from {0, 90}: 45 (img5); uncertainty plays no part (img0 is the most
    # uncertain and a labelled image's twin)
    assert [p["image"] for p in picks[:2]] == ["/p/img2.jpg", "/p/img5.jpg"]
    assert len({p["image"] for p in picks}) == 3 and "/p/img0.jpg" not in {p["image"] for p in picks}
    assert picks[0]["kind"] == "diversity" and picks[0]["score"] == pytest.approx(1.0)
    assert picks[0]["components"] == {"diversity": pytest.approx(1.0)}
    assert picks[1]["reasons"] == [
        f"cosine distance {1 - math.cos(math.radians(45)):.3f} of its backbone embedding to the nearest labelled or "
        f"already-picked image (k-center greedy: the farthest image still uncovered; 0 = a duplicate)"]
    alone = pool.choose("diversity", s.images, 2, scores=s)  # nothing labelled: the start is the least typical
    assert "to the pool's mean embedding (nothing labelled" in alone[0]["reasons"][0]
    assert "nearest labelled or already-picked" in alone[1]["reasons"][0]
    with pytest.raises(ValueError, match="not one of random, entropy, most_boxes, diversity, combined"):
        pool.choose("smart", s.images, 2, scores=s)


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


@pytest.mark.parametrize("strategy", ["most_boxes", "diversity"])
def test_baselines_mine_the_pool_in_a_dry_run_loop_within_a_box_budget(tmp_path, tiny_data, strategy):
    ctx, p, _ = _dry_pool_loop(tmp_path, tiny_data, sampling_strategy={"strategy": strategy},
                               active_learning__max_boxes_per_iteration=4)
    hard = store.read_json(p.hard_examples(0))
    assert hard["strategy"] == strategy and hard["source"] == "pool" and hard["candidates"] == 16
    assert hard["scan"]["images"] == 16 + (24 if strategy == "diversity" else 0)  # diversity: + labelled reference
    assert hard["hard_negative_candidates"] == 0 and "hard_negative_slots" not in hard
    picks = hard["picks"]
    assert [pk["rank"] for pk in picks] == [1, 2, 3, 4] and len({pk["image"] for pk in picks}) == 4
    assert all(pk["kind"] == strategy and pk["reasons"] and pk["components"] for pk in picks)
    preds = {r["image"]: r["pred"] for r in store.read_json(p.pool_predictions(0))["images"]}
    assert set(preds) == {pk["image"] for pk in picks}
    if strategy == "most_boxes":
        conf = load_config(tmp_path / "al_config.yaml").validation.conf
        for pk in picks:  # the boxes counted are the stored predictions at validation.conf
            n = sum(1 for r in preds[pk["image"]] if r[1] >= conf)
            assert pk["components"]["boxes"] == n and pk["reasons"][0].startswith(f"{n} box")
        keys = [(pk["components"]["boxes"], pk["components"]["uncertainty"]) for pk in picks]
        assert keys == sorted(keys, reverse=True)
        # the whole pool ranked from the scan's cache, with the iteration's seed (training.seed * 1000 + k)
        cands = extract._pool_images(ctx, dataset.read_snapshot(p.dataset_version(0))[1])
        scores = pool.scan(p.best(0), cands, extract.scan_settings(ctx), p.pool_score_cache)
        assert scores.cached == 16
        want = pool.choose("most_boxes", cands, 4, scores=scores, box_conf=conf, seed=0)
        assert [pk["image"] for pk in picks] == [w["image"] for w in want]
    else:
        dist = [pk["score"] for pk in picks]
        assert dist == sorted(dist, reverse=True) and dist[0] > 0
        assert all("nearest labelled or already-picked image" in pk["reasons"][0] for pk in picks)
    # the simulated review takes the picks in rank order until the box budget is spent
    hidden = tiny_data.parent / "pool" / "labels_hidden"
    gt = [sum(1 for ln in (hidden / f"{Path(pk['image']).stem}.txt").read_text().splitlines() if ln.strip())
          for pk in picks]
    review = store.read_json(p.review(0))
    assert review["box_budget"] == 4 and review["picks"] == within_box_budget(gt, 4)
    assert review["added_boxes"] == sum(gt[:review["picks"]])


@pytest.mark.parametrize("strategy", ["most_boxes", "diversity"])
def test_baselines_mine_the_validation_split_when_asked(tmp_path, tiny_data, strategy):
    """Like entropy and combined, they rank the validation split's images with mining_source val."""
    cfg = load_config(make_config(tmp_path, tiny_data, sampling_strategy={"strategy": strategy}))
    assert cfg.dataset.mining_source == "val" and cfg.sampling_strategy.strategy == strategy
    ctx = open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners())
    assert run(ctx) == 0
    hard = store.read_json(RunPaths(cfg.run_dir).hard_examples(0))
    val = set(dataset.read_data_yaml(tiny_data).splits["val"])
    assert hard["strategy"] == strategy and hard["source"] == "val" and len(hard["picks"]) == 4
    assert {pk["image"] for pk in hard["picks"]} <= val


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
