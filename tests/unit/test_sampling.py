"""Seed 004's weighted hard-example score: components, total, ranking and selection, with hand-computed values."""

import random

import pytest

from al.selection import sampling
from al.selection.sampling import (
    class_balance,
    conf_uncertainty,
    describe,
    format_console,
    random_baseline,
    score_errors,
    select_images,
    size_diversity,
    size_rarity,
    spatial_diversity,
    uncertainty,
    validate_weights,
)

W = {"class_balance_weight": 0.3, "size_diversity_weight": 0.3, "spatial_diversity_weight": 0.2,
     "uncertainty_weight": 0.2}
NAMES = ["zero", "one", "two", "three", "four"]


def err(image, cls=0, size="medium", position="center", difficulty=0.0, kind="fn", index=0, **kw):
    return {"kind": kind, "image": image, "index": index, "cls": cls, "box": [0, 0, 10, 10], "area": 100,
            "size": size, "position": position, "grid": [1, 1], "contrast": 0.5, "aspect": 1.0,
            "difficulty": difficulty, "crop": None, **kw}


# --- components ---------------------------------------------------------------------------------------------

def test_class_balance_is_one_minus_count_over_max():
    counts = {0: 100, 1: 25, 2: 0}
    assert class_balance(0, counts) == 0.0
    assert class_balance(1, counts) == 0.75
    assert class_balance(2, counts) == 1.0
    assert class_balance(7, counts) == 1.0  # a class with no training boxes at all
    assert class_balance(1, [100, 25]) == 0.75  # list indexed by class id
    assert class_balance(1, {"0": 100, "1": 25}) == 0.75  # JSON-style string keys
    assert class_balance(0, {}) == 1.0 and class_balance(0, None) == 1.0 and class_balance(0, [0, 0]) == 1.0


def test_size_rarity_rescaled_so_rarest_bucket_is_one():
    counts = {"small": 20, "medium": 50, "large": 30}  # rarity .8 .5 .7, divided by .8
    assert size_rarity("small", counts) == pytest.approx(1.0)
    assert size_rarity("medium", counts) == pytest.approx(0.625)
    assert size_rarity("large", counts) == pytest.approx(0.875)
    only_medium = {"medium": 10}
    assert size_rarity("medium", only_medium) == 0.0
    assert size_rarity("small", only_medium) == 1.0 and size_rarity("large", only_medium) == 1.0
    assert size_rarity("medium", {}) == 1.0


def test_size_diversity_boosts_extreme_sizes():
    counts = {"small": 20, "medium": 50, "large": 30}
    assert size_diversity("small", counts) == pytest.approx(0.75 * 1.0 + 0.25)
    assert size_diversity("medium", counts) == pytest.approx(0.75 * 0.625)
    assert size_diversity("large", counts) == pytest.approx(0.75 * 0.875 + 0.25)
    # Equal buckets: only the extreme-size bonus separates them.
    even = {"small": 1, "medium": 1, "large": 1}
    assert size_diversity("medium", even) == pytest.approx(0.75)
    assert size_diversity("small", even) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="huge"):
        size_diversity("huge", counts)


def test_spatial_diversity_constants():
    assert spatial_diversity("corner") == 1.0
    assert spatial_diversity("edge") == 0.6
    assert spatial_diversity("center") == 0.2
    with pytest.raises(ValueError, match="middle"):
        spatial_diversity("middle")


def test_uncertainty_difficulty_for_fn_and_conf_closeness_otherwise():
    assert uncertainty(err("a", difficulty=0.71)) == 0.71
    assert uncertainty(err("a", difficulty=1.3)) == 1.0  # clipped
    assert uncertainty(err("a", difficulty=0.71, conf=0.5)) == 0.71  # FNs keep their visual difficulty
    assert uncertainty(err("a", kind="fp", difficulty=0.1, conf=0.5)) == 1.0
    assert uncertainty(err("a", kind="fp", difficulty=0.1, conf=0.25)) == 0.5
    assert uncertainty(err("a", kind="fp", difficulty=0.1, conf=0.9)) == pytest.approx(0.2)
    assert uncertainty(err("a", kind="fp", difficulty=0.3)) == 0.3  # no conf: its difficulty
    assert uncertainty({"kind": "fn"}) == 0.0
    assert conf_uncertainty(0.0) == 0.0 and conf_uncertainty(1.0) == 0.0
    assert conf_uncertainty(0.25, threshold=0.25) == 1.0
    assert conf_uncertainty(1.0, threshold=0.25) == 0.0  # |1 - .25| / max(.25, .75)


# --- weighted total -----------------------------------------------------------------------------------------

def test_weighted_total_hand_example():
    e = err("a.jpg", cls=1, size="small", position="edge", difficulty=0.5)
    [s] = score_errors([e], {0: 100, 1: 25}, W, {"small": 20, "medium": 50, "large": 30})
    assert s["components"] == pytest.approx(
        {"class_balance": 0.75, "size_diversity": 1.0, "spatial_diversity": 0.6, "uncertainty": 0.5})
    # .3*.75 + .3*1.0 + .2*.6 + .2*.5
    assert s["score"] == pytest.approx(0.225 + 0.3 + 0.12 + 0.1)
    assert "score" not in e  # input untouched
    assert {k: s[k] for k in e} == e


def test_fp_records_are_not_scored_by_fn_weighted_and_size_counts_come_from_candidates():
    errors = [err("a", size="small", index=i) for i in range(3)] + [err("b", size="large"),
                                                                    err("c", kind="fp", size="large")]
    scored = score_errors(errors, None, W)
    assert [s["kind"] for s in scored] == ["fn"] * 4
    # FN buckets: small 3, large 1 -> rarity .25, 1 (medium), .75 -> max 1
    assert scored[0]["components"]["size_diversity"] == pytest.approx(0.75 * 0.25 + 0.25)
    assert scored[3]["components"]["size_diversity"] == pytest.approx(0.75 * 0.75 + 0.25)
    both = score_errors(errors, None, W, kinds=("fn", "fp"))
    assert len(both) == 5


def test_weights_validation_names_the_key():
    assert validate_weights(W) == W
    with pytest.raises(ValueError, match="uncertainty_weight"):
        score_errors([], None, {k: v for k, v in W.items() if k != "uncertainty_weight"})
    with pytest.raises(ValueError, match="size_weight"):
        score_errors([], None, {**W, "size_weight": 0.1})
    with pytest.raises(ValueError, match="spatial_diversity_weight"):
        score_errors([], None, {**W, "spatial_diversity_weight": -0.1})
    with pytest.raises(ValueError, match="class_balance_weight"):
        score_errors([], None, {**W, "class_balance_weight": float("nan")})
    with pytest.raises(ValueError, match="class_balance_weight"):
        score_errors([], None, {**W, "class_balance_weight": "lots"})
    with pytest.raises(ValueError, match="all sampling weights"):
        score_errors([], None, dict.fromkeys(W, 0))
    # One weight alone is fine: the score is that component.
    [s] = score_errors([err("a", position="corner")], None, {**dict.fromkeys(W, 0), "spatial_diversity_weight": 1})
    assert s["score"] == 1.0


# --- ranking and selection ----------------------------------------------------------------------------------

def crafted():
    counts = {0: 100, 1: 50, 2: 0}
    return score_errors([
        err("/d/center_common.jpg", cls=0, size="medium", position="center", difficulty=0.0),
        err("/d/corner_rare.jpg", cls=2, size="small", position="corner", difficulty=0.9),
        err("/d/edge_mid.jpg", cls=1, size="large", position="edge", difficulty=0.4),
        err("/d/edge_mid.jpg", cls=0, size="medium", position="center", difficulty=0.1, index=1),
    ], counts, W, {"small": 10, "medium": 80, "large": 10})


def test_ranking_order_on_crafted_list():
    picks = select_images(crafted(), 10)
    assert [p["image"] for p in picks] == ["/d/corner_rare.jpg", "/d/edge_mid.jpg", "/d/center_common.jpg"]
    scores = [p["score"] for p in picks]
    assert scores == sorted(scores, reverse=True)
    # corner_rare: .3*1 + .3*(.75*1 + .25) + .2*1 + .2*.9
    assert picks[0]["score"] == pytest.approx(0.3 + 0.3 + 0.2 + 0.18)
    assert picks[-1]["score"] == pytest.approx(0.3 * 0.0 + 0.3 * 0.75 * (0.2 / 0.9) + 0.2 * 0.2 + 0.0)


def test_grouping_per_image_uses_best_error():
    picks = {p["image"]: p for p in select_images(crafted(), 10)}
    mid = picks["/d/edge_mid.jpg"]
    assert len(mid["errors"]) == 2 and len(mid["reasons"]) == 2
    assert mid["score"] == max(e["score"] for e in mid["errors"]) == mid["errors"][0]["score"]
    assert mid["components"] == mid["errors"][0]["components"]
    assert set(mid) == {"image", "score", "components", "reasons", "errors"}
    assert set(mid["components"]) == set(sampling.COMPONENT_KEYS)


def test_ties_break_on_error_count_then_path():
    scored = score_errors([err("/b.jpg"), err("/a.jpg"), err("/c.jpg"), err("/c.jpg", index=1)], None, W)
    assert [p["image"] for p in select_images(scored, 3)] == ["/c.jpg", "/a.jpg", "/b.jpg"]


def test_exclude_and_max_images_honoured():
    picks = select_images(crafted(), 10, exclude={"/d/corner_rare.jpg"})
    assert "/d/corner_rare.jpg" not in [p["image"] for p in picks] and len(picks) == 2
    assert [p["image"] for p in select_images(crafted(), 1)] == ["/d/corner_rare.jpg"]
    assert select_images(crafted(), 0) == []
    with pytest.raises(ValueError):
        select_images(crafted(), -1)


def test_selection_is_deterministic_whatever_the_input_order():
    base = select_images(crafted(), 10)
    for seed in range(5):
        shuffled = crafted()
        random.Random(seed).shuffle(shuffled)
        assert select_images(shuffled, 10) == base


def test_reasons_are_human_readable():
    e = err("a", cls=4, size="small", position="corner", difficulty=0.71, contrast=0.05)
    assert describe(e, NAMES) == "fn small 'four' at corner, low contrast (difficulty 0.71)"
    assert describe(err("a", cls=9, aspect=4.0), NAMES) == \
        "fn medium 'class 9' at center, unusual aspect (difficulty 0.00)"
    assert describe(err("a", kind="fp", conf=0.48), None) == "fp medium 'class 0' at center (conf 0.48)"
    [pick] = select_images(score_errors([e], None, W), 5, names=NAMES)
    assert pick["reasons"] == ["fn small 'four' at corner, low contrast (difficulty 0.71)"]


def test_random_baseline_is_deterministic():
    imgs = [f"/p/{i}.jpg" for i in range(20)]
    a = random_baseline(imgs, 5, seed=3)
    assert len(a) == 5 == len(set(a)) and set(a) <= set(imgs)
    assert random_baseline(list(reversed(imgs)), 5, seed=3) == a
    assert sorted(random_baseline(imgs[:3], 10, seed=0)) == imgs[:3]
    assert not set(random_baseline(imgs, 20, seed=1, exclude=set(imgs[:10]))) & set(imgs[:10])
    assert random_baseline(imgs, 0, seed=1) == []


def test_console_line():
    assert format_console(20, 45) == "[SAMPLING] Selected 20 hard examples from 45 FNs"
