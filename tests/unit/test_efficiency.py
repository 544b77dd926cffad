"""The simulator's statistics (al.metrics.efficiency), the box budget and the reserved hard-negative share, with
answers known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from al.metrics import efficiency
from al.selection import pool
from al.steps.review import within_box_budget
from tests.integration.test_strategies import NAMES, fake_scores


def test_labels_to_reach_interpolates_between_rounds():
    labels, maps = [64, 96, 128, 160], [0.10, 0.20, 0.30, 0.40]
    assert efficiency.labels_to_reach(labels, maps, 0.25) == pytest.approx(112.0)
    assert efficiency.labels_to_reach(labels, maps, 0.40) == pytest.approx(160.0)
    assert efficiency.labels_to_reach(labels, maps, 0.05) == 64.0  # the seed set already reaches it
    assert efficiency.labels_to_reach(labels, maps, 0.41) is None
    # the first crossing counts, not a later one after a dip
    assert efficiency.labels_to_reach([0, 10, 20, 30], [0.0, 0.5, 0.1, 0.6], 0.25) == pytest.approx(5.0)


def test_auc_is_the_mean_score_over_the_label_range():
    assert efficiency.curve_auc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert efficiency.curve_auc([64, 96, 160], [0.2, 0.2, 0.2]) == pytest.approx(0.2)
    assert efficiency.curve_auc([0, 1, 3], [0.0, 1.0, 1.0]) == pytest.approx((0.5 + 2.0) / 3)
    assert efficiency.curve_auc([64], [0.3]) == 0.3
    with pytest.raises(ValueError, match="differ in length"):
        efficiency.curve_auc([1, 2], [0.1])


def test_saving_of_the_reference_labels():
    assert efficiency.saving(96.0, 160.0) == pytest.approx(0.4)
    assert efficiency.saving(None, 160.0) is None


def test_bootstrap_interval_of_a_known_paired_difference():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, size=40)
    exact = efficiency.paired_differences(dict(enumerate(base + 0.1)), dict(enumerate(base)))
    b = efficiency.bootstrap_interval(list(exact.values()), stat=np.mean)
    assert b["value"] == pytest.approx(0.1) and b["low"] == pytest.approx(0.1) and b["high"] == pytest.approx(0.1)
    noisy = 0.2 + rng.normal(0, 0.05, size=50)  # mean 0.2, standard error 0.05 / sqrt(50) = 0.007
    b = efficiency.bootstrap_interval(list(noisy), stat=np.mean, resamples=4000)
    assert b["low"] < 0.2 < b["high"] and b["low"] > 0.17 and b["high"] < 0.23
    assert 0.015 < b["high"] - b["low"] < 0.04  # about 2 x 1.96 standard errors
    assert b["n"] == 50
    assert efficiency.bootstrap_interval([None, None])["value"] is None
    # the same seed gives the same interval
    assert efficiency.bootstrap_interval(list(noisy), seed=3) == efficiency.bootstrap_interval(list(noisy), seed=3)


def test_paired_differences_keep_only_seeds_both_arms_have():
    assert efficiency.paired_differences({0: 0.5, 1: 0.4, 2: None}, {0: 0.3, 2: 0.1, 3: 0.9}) == \
        {0: pytest.approx(0.2)}


def test_annotation_cost_add_delete_fix_per_class():
    gt = np.array([[0, 0, 0, 10, 10],       # found exactly: keep
                   [1, 20, 0, 30, 10],      # predicted as class 0 on the right box: fix (class)
                   [2, 40, 0, 50, 10],      # predicted shifted (IoU 1/3): fix (box)
                   [2, 60, 60, 70, 70]])    # missed: add
    pred = np.array([[0, 0.9, 0, 0, 10, 10],
                     [0, 0.8, 20, 0, 30, 10],
                     [2, 0.7, 45, 0, 55, 10],
                     [1, 0.6, 80, 0, 90, 10]])  # nothing there: delete
    c = efficiency.annotation_cost(gt, pred, 3)
    assert c["keep"].tolist() == [1, 0, 0]
    assert c["fix"].tolist() == [0, 1, 1]
    assert c["add"].tolist() == [0, 0, 1]
    assert c["delete"].tolist() == [0, 1, 0]
    none = efficiency.annotation_cost(gt, np.zeros((0, 6)), 3)
    assert none["add"].tolist() == [1, 1, 2] and none["fix"].sum() == 0
    assert efficiency.annotation_cost(np.zeros((0, 5)), pred, 3)["delete"].tolist() == [2, 1, 1]


def test_box_budget_takes_picks_in_rank_order():
    assert within_box_budget([3, 4, 5], 7) == 2
    assert within_box_budget([3, 4, 5], 6) == 1
    assert within_box_budget([10, 1], 5) == 1  # at least one pick
    assert within_box_budget([0, 0, 3, 9], 3) == 3
    assert within_box_budget([1, 1], 10) == 2


def test_reserved_hard_negative_slots_are_given_back():
    assert pool.reserved_share(0.5, 4, 1) == {"reserved": 2, "filled": 1, "given_back": 1}
    assert pool.reserved_share(0.2, 32, 10) == {"reserved": 6, "filled": 6, "given_back": 0}
    assert pool.reserved_share(0.2, 32, 0) == {"reserved": 6, "filled": 0, "given_back": 6}
    s = fake_scores()
    hn = {"/p/img3.jpg": [{"kind": "fp", "image": "/p/img3.jpg", "index": 0, "cls": 1, "conf": 0.7,
                           "source": "validation"}]}
    picks = pool.choose("combined", s.images, 4, scores=s, class_counts=[100, 50, 0], names=NAMES,
                        hard_negatives=hn, hard_negative_share=0.5)  # 2 slots reserved, 1 candidate
    assert len(picks) == 4 and sum(p["kind"] == "hard_negative" for p in picks) == 1
