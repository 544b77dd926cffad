"""Pool scoring maths (pure numpy): uncertainty before NMS, class balance, k-center greedy, the combined batch, the
most_boxes and diversity baselines."""

import math
import time
import tracemalloc

import numpy as np
import pytest

from al.selection.sampling import (
    binary_entropy,
    candidate_uncertainty,
    class_confusion,
    combined_select,
    image_uncertainty,
    inverse_frequency,
    k_center_greedy,
    most_boxes_order,
    rare_class_score,
    relative_class_probs,
    top_uncertain,
    validate_combined_weights,
)

H25 = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # 0.8112781...
W = {"uncertainty": 0.5, "diversity": 0.3, "class_balance": 0.2}


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_binary_entropy_in_bits():
    assert binary_entropy([0.5, 0.25, 0.75, 0.0, 1.0]) == pytest.approx([1.0, H25, H25, 0.0, 0.0])


def test_class_confusion_entropy_and_margin():
    probs = [[0.2, 0.2], [0.6, 0.2], [0.0, 0.0], [0.9, 0.0]]
    # q = p / sum(p): [.5 .5], [.75 .25], undefined (0), [1 0]
    assert class_confusion(probs, "entropy") == pytest.approx([1.0, H25, 0.0, 0.0])
    assert class_confusion(probs, "margin") == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert class_confusion([[0.3, 0.3, 0.3]], "entropy") == pytest.approx([1.0])
    assert class_confusion([[0.7]], "entropy") == pytest.approx([0.0])  # one class: nothing to confuse
    assert class_confusion(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="measure 'bald'"):
        class_confusion(probs, "bald")


def test_candidate_uncertainty_is_object_or_class_doubt():
    # [0.5, 0]: "object?" is a coin flip -> 1.0. [0.9, 0.9]: sure it is an object (H 0.469) but which class?
    # p_max * confusion = 0.9 * 1.0. [0.05, 0.05]: faint background, its flat class scores barely count.
    u = candidate_uncertainty([[0.5, 0.0], [0.9, 0.9], [0.05, 0.05]])
    assert u == pytest.approx([1.0, 0.9, float(binary_entropy(0.05))])
    assert candidate_uncertainty(np.zeros((0, 2))).shape == (0,)


def test_image_uncertainty_is_zero_padded_top_k_mean():
    probs = [[0.5, 0.0], [0.9, 0.9], [0.99, 0.0]]  # 1.0, 0.9, H(0.99)=0.0808
    assert image_uncertainty(probs, 2) == pytest.approx((1.0 + 0.9) / 2)
    assert image_uncertainty(probs, 4) == pytest.approx((1.0 + 0.9 + float(binary_entropy(0.99))) / 4)
    assert image_uncertainty(np.zeros((0, 2)), 5) == 0.0
    # margin only changes the class part: [0.9, 0.3] -> q [.75 .25], margin doubt 0.5 -> max(0.469, 0.45)
    assert image_uncertainty([[0.9, 0.3]], 1, "margin") == pytest.approx(float(binary_entropy(0.9)))
    with pytest.raises(ValueError):
        image_uncertainty(probs, 0)


def test_class_balance_term_prefers_likely_rare_classes():
    assert inverse_frequency([9, 4, 0]) == pytest.approx([0.1, 0.2, 1.0])
    assert inverse_frequency([3, 3]) == pytest.approx([1.0, 1.0])
    # P(class) x weight: .09, .10, .30 -> the rare class wins although it is the least likely
    assert rare_class_score([0.9, 0.5, 0.3], [9, 4, 0]) == (pytest.approx(0.3), 2)
    assert rare_class_score([0.9, 0.5, 0.0], [9, 4, 0]) == (pytest.approx(0.1), 1)
    with pytest.raises(ValueError, match="3 class probabilities but 2"):
        rare_class_score([0.1, 0.2, 0.3], [1, 2])


def test_relative_class_probs_rank_images_within_the_pool():
    rel = relative_class_probs([[0.1, 0.6, 0.0], [0.05, 0.3, 0.0], [0.2, 0.9, 0.0]])
    assert rel == pytest.approx(np.array([[0.5, 2 / 3, 0.0], [0.25, 1 / 3, 0.0], [1.0, 1.0, 0.0]]))
    # a weak model's best 'class 0' guess (p 0.2) now counts fully; with counts [0, 9, 9] class 0 is the rare one
    assert rare_class_score(rel[2], [0, 9, 9]) == (pytest.approx(1.0), 0)
    assert relative_class_probs(np.zeros((0, 3))).shape == (0, 3)


def test_combined_select_spreads_the_batch():
    # two near-identical frames (0, 1) are the most uncertain; a plain top-k would take both
    emb = [unit(0), unit(1), unit(90), unit(45)]
    unc = [1.0, 0.98, 0.5, 0.2]
    rare = [0.0, 0.0, 0.0, 1.0]
    assert top_uncertain(unc, 2) == [0, 1]
    sel = combined_select(unc, rare, emb, 3, {"uncertainty": 1.0, "diversity": 1.0, "class_balance": 0.0})
    assert [s["index"] for s in sel] == [0, 2, 3]
    # step 1: nothing labelled, diversity 1 for all: 1.0 + 1 wins. step 2: distances to 0 are .00015, 1, .293;
    # scores .98 + .00015, .5 + 1, .2 + .293
    d1 = 1 - math.cos(math.radians(1))
    assert sel[0]["score"] == pytest.approx(2.0)
    assert sel[1]["components"] == pytest.approx({"uncertainty": 0.5, "diversity": 1.0, "class_balance": 0.0})
    assert sel[2]["components"]["diversity"] == pytest.approx(1.0)  # 45 is now the farthest remaining
    assert sel[2]["score"] == pytest.approx(0.2 + 1.0)
    assert d1 < 1e-3
    # class balance pulls the rare-class image forward
    sel = combined_select(unc, rare, emb, 1, {"uncertainty": 0.5, "diversity": 0.0, "class_balance": 1.0})
    assert sel[0]["index"] == 3 and sel[0]["score"] == pytest.approx(0.5 * 0.2 + 1.0)


def test_class_balance_updated_within_the_batch_spreads_over_the_rare_classes():
    # labelled boxes per class [40, 4, 6]: class 1 is the rarest, class 2 next. Images 0-2 likely hold class 1
    # (decreasingly), image 3 class 2, image 4 class 0; embeddings all far apart, uncertainty flat
    probs = np.array([[0.0, 1.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    emb = [unit(a) for a in (0, 90, 180, 270, 45)]
    unc, counts, w = [0.5] * 5, [40, 4, 6], {"uncertainty": 0.1, "diversity": 0.0, "class_balance": 1.0}
    static = [rare_class_score(p, counts)[0] for p in probs]
    # the fixed term: all three class-1 images come before the class-2 one
    assert [s["index"] for s in combined_select(unc, static, emb, 3, w)] == [0, 1, 2]
    sel = combined_select(unc, static, emb, 3, w, class_probs=probs, class_counts=counts, boxes_per_image=3.0)
    # inverse frequency (min + 1) / (count + 1). After image 0 (+3 boxes of class 1: counts [40, 7, 6]) class 2 is
    # the rarest: image 3 (7/7 x 1.0) beats image 1 (7/8 x 0.9); then counts [40, 7, 9]: class 1 is the rarest
    # again and image 1 (8/8 x 0.9) beats image 2 (0.8)
    assert [s["index"] for s in sel] == [0, 3, 1]
    assert sel[0]["rare_class"] == 1 and sel[1]["rare_class"] == 2 and sel[2]["rare_class"] == 1
    assert sel[1]["components"]["class_balance"] == pytest.approx(1.0)
    assert sel[2]["components"]["class_balance"] == pytest.approx(0.9)
    # no update without class counts; the counts must match the classes
    assert "rare_class" not in combined_select(unc, static, emb, 1, w)[0]
    with pytest.raises(ValueError, match="3 class probabilities per image but 2 class counts"):
        combined_select(unc, static, emb, 1, w, class_probs=probs, class_counts=[1, 2])


def test_combined_diversity_penalises_redundancy_without_chasing_outliers():
    # labelled at 0 degrees; candidates at 30 (u 1.0), 40 (u 0.9) and an outlier at 170 (u 0.8)
    emb, unc, rare, lab = [unit(30), unit(40), unit(170)], [1.0, 0.9, 0.8], [0, 0, 0], [unit(0)]
    w = {"uncertainty": 0.5, "diversity": 0.3, "class_balance": 0.0}
    d = [1 - math.cos(math.radians(a)) for a in (30, 40, 170)]  # .134, .234, 1.985; median .234
    sel = combined_select(unc, rare, emb, 1, w, labelled_emb=lab)
    assert sel[0]["index"] == 1  # .45 + .3 beats .5 + .3 * .134 / .234 and .4 + .3 (saturated, not 1.985 / .234)
    assert sel[0]["components"]["diversity"] == pytest.approx(1.0)
    pure = combined_select(unc, rare, emb, 1, w, labelled_emb=lab, saturate=False)
    assert pure[0]["index"] == 2  # pure k-center: the outlier's d / max d = 1 wins
    assert pure[0]["score"] == pytest.approx(0.4 + 0.3)
    # after 40 is picked, 30 is 10 degrees from a pick: redundant (d / tau = .0152 / .234); the outlier is next
    both = combined_select(unc, rare, emb, 3, w, labelled_emb=lab)
    assert [s["index"] for s in both] == [1, 2, 0]
    d30 = 1 - math.cos(math.radians(10))
    assert both[2]["components"]["diversity"] == pytest.approx(d30 / d[1])
    assert both[2]["score"] == pytest.approx(0.5 + 0.3 * d30 / d[1])


def test_combined_select_starts_from_the_labelled_set():
    emb = [unit(0), unit(90)]
    sel = combined_select([1.0, 1.0], [0, 0], emb, 1, {"uncertainty": 0.0, "diversity": 1.0, "class_balance": 0.0},
                          labelled_emb=[unit(5)])
    assert sel[0]["index"] == 1 and sel[0]["components"]["diversity"] == pytest.approx(1.0)
    assert combined_select([], [], np.zeros((0, 2)), 3, W) == []
    with pytest.raises(ValueError, match="differ in length"):
        combined_select([1.0], [0, 0], [unit(0)], 1, W)


def test_combined_weights_are_checked():
    assert validate_combined_weights(W) == W
    with pytest.raises(ValueError, match="'diversity' is missing"):
        validate_combined_weights({"uncertainty": 1, "class_balance": 0})
    with pytest.raises(ValueError, match="all combined weights are 0"):
        validate_combined_weights({"uncertainty": 0, "diversity": 0, "class_balance": 0})
    with pytest.raises(ValueError, match="'uncertainty' = -1"):
        validate_combined_weights({**W, "uncertainty": -1})
    with pytest.raises(ValueError, match="unknown combined weight 'novelty'"):
        validate_combined_weights({**W, "novelty": 1})


def test_top_uncertain_ties_go_to_lower_index():
    assert top_uncertain([0.2, 0.5, 0.5, 0.9], 3) == [3, 1, 2]
    assert top_uncertain([0.1], 0) == []


def test_most_boxes_ranks_by_box_count_then_uncertainty_then_a_seeded_order():
    boxes = [2, 5, 5, 0, 5, 2]
    unc = [0.1, 0.3, 0.7, 0.9, 0.3, 0.1]
    # 5 boxes: 2 (most uncertain) first, then 1 and 4 (tied at 0.3) in the seed's order; 2 boxes: 0 and 5 (tied at
    # 0.1) likewise; 3 last whatever its uncertainty
    assert most_boxes_order(boxes, unc, 6, seed=0) == [2, 4, 1, 5, 0, 3]
    assert most_boxes_order(boxes, unc, 6, seed=4) == [2, 1, 4, 0, 5, 3]
    assert most_boxes_order(boxes, unc, 6, seed=0) == most_boxes_order(boxes, unc, 6, seed=0)
    for seed in range(20):  # the seed only orders the ties
        order = most_boxes_order(boxes, unc, 6, seed)
        assert order[0] == 2 and set(order[1:3]) == {1, 4} and set(order[3:5]) == {0, 5} and order[5] == 3
    assert most_boxes_order(boxes, unc, 2, seed=0) == [2, 4]
    assert most_boxes_order([], [], 3, seed=0) == [] and most_boxes_order([1], [0.5], 0, seed=0) == []
    with pytest.raises(ValueError, match="differ in length"):
        most_boxes_order([1, 2], [0.5], 1, seed=0)


def test_k_center_greedy_goes_farthest_first_from_the_labelled_set():
    # labelled: 0 deg. Pool: 0: 10 deg, 1: 90, 2: 180, 3: 165, 4: 90 (a duplicate of 1), 5: 45
    emb = [unit(a) for a in (10, 90, 180, 165, 90, 45)]
    sel = k_center_greedy(emb, 6, labelled_emb=[unit(0)])
    # 2 is farthest from the labelled image; 3 is next farthest from it but close to 2, so the second pick is the
    # farthest from labelled + {2}: 1 and its duplicate 4 tie at distance 1, the lower index wins; 4 then sits at
    # distance 0 and comes last
    assert [i for i, _ in sel] == [2, 1, 5, 3, 0, 4]
    cos = [math.cos(math.radians(a)) for a in (180, 90, 45, 15, 10)]
    assert [d for _, d in sel] == pytest.approx([1 - c for c in cos] + [0.0], abs=1e-12)
    assert k_center_greedy(emb, 2, labelled_emb=[unit(0)]) == sel[:2]
    # another labelled set changes the start: with 180 deg labelled, 0 (10 deg) is the farthest
    assert k_center_greedy(emb, 1, labelled_emb=[unit(180)])[0][0] == 0


def test_k_center_greedy_without_labelled_images_starts_farthest_from_the_mean():
    # the mean direction is about 22 deg: 90 deg is the least typical; then -5 deg is farthest from it, then 5 deg
    sel = k_center_greedy([unit(a) for a in (0, 5, -5, 90)], 4)
    assert [i for i, _ in sel] == [3, 2, 1, 0]
    assert sel[1][1] == pytest.approx(1 - math.cos(math.radians(95)))
    assert k_center_greedy(np.zeros((0, 2)), 3) == [] and k_center_greedy([unit(0)], 0) == []
    assert k_center_greedy([unit(0), unit(90)], 5, labelled_emb=np.zeros((0, 2))) == k_center_greedy(
        [unit(0), unit(90)], 5)


def test_k_center_greedy_memory_grows_with_the_pool_not_its_square():
    rng = np.random.default_rng(0)
    n, dim = 50_000, 64
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    labelled = rng.standard_normal((256, dim)).astype(np.float32)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        sel = k_center_greedy(emb, 20, labelled_emb=labelled)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a few float64 copies of the embeddings at most: an n x n matrix would be 20 GB, even n x 256 labelled 100 MB
    assert peak < 4 * n * dim * 8
    assert took < 10
    assert len({i for i, _ in sel}) == 20
    dists = [d for _, d in sel]
    assert dists == sorted(dists, reverse=True)  # farthest first: each pick is no farther than the one before
