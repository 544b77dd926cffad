"""The simulator's statistics (al.metrics.efficiency), the box budget and the reserved hard-negative share, with
answers known by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

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
    assert within_box_budget([3, 4, 5], 6) == 2  # the second pick crosses the budget: known only once labelled
    assert within_box_budget([3, 4, 5], 3) == 1
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


def test_bootstrap_interval_refuses_the_median_of_few_values():
    few = [0.1, 0.3, 0.2, 0.5, 0.4]
    with pytest.raises(ValueError, match="median of 5 values"):
        efficiency.bootstrap_interval(few)
    with pytest.raises(ValueError, match="median of 9 values"):
        efficiency.bootstrap_interval(few + [0.6, 0.7, 0.8, 0.9], stat=statistics.median)
    assert efficiency.bootstrap_interval(few + [0.6, 0.7, 0.8, 0.9, 1.0])["n"] == 10
    assert efficiency.bootstrap_interval(few, stat=np.mean)["n"] == 5  # a mean is not refused


def test_paired_t_interval_by_hand():
    # mean 0.02; squared deviations 0.0001 + 0.0001 + 0.0009 + 0.0009 + 0 = 0.002, sd = sqrt(0.002 / 4);
    # standard error sd / sqrt 5 = 0.01; t(0.975, 4 df) = 2.7764451051977987
    t = efficiency.paired_t_interval([0.01, 0.03, -0.01, 0.05, 0.02])
    assert scipy_stats.t.ppf(0.975, 4) == pytest.approx(2.7764451051977987, abs=1e-12)
    assert t["mean"] == pytest.approx(0.02) and t["sd"] == pytest.approx(math.sqrt(0.0005))
    assert t["low"] == pytest.approx(0.02 - 0.027764451051977987)
    assert t["high"] == pytest.approx(0.02 + 0.027764451051977987)
    assert t["n"] == 5 and t["method"] == "paired t"
    t90 = efficiency.paired_t_interval([0.01, 0.03, -0.01, 0.05, 0.02], confidence=0.9)
    assert t90["high"] == pytest.approx(0.02 + scipy_stats.t.ppf(0.95, 4) * 0.01)
    one = efficiency.paired_t_interval([0.3])
    assert one["mean"] == 0.3 and one["low"] is None and one["high"] is None and one["sd"] is None
    assert efficiency.paired_t_interval([])["mean"] is None
    same = efficiency.paired_t_interval([0.1] * 7)
    assert same["low"] == same["high"] == same["mean"] == 0.1 and same["sd"] == 0.0
    with pytest.raises(ValueError, match="difference 1 is missing"):
        efficiency.paired_t_interval([0.1, None, 0.2])  # type: ignore[list-item]


def test_sign_test_exact_binomial():
    s = efficiency.sign_test([0.02] * 7 + [-0.01])
    assert s == {"wins": 7, "losses": 1, "ties": 0, "n": 8, "p": 0.0703125}  # 2 * (1 + 8) / 256
    assert s["p"] == pytest.approx(scipy_stats.binomtest(7, 8).pvalue)
    s = efficiency.sign_test([0.02] * 7 + [-0.01, 0.0, 0.0005], tol=0.001)
    assert (s["wins"], s["losses"], s["ties"], s["n"], s["p"]) == (7, 1, 2, 10, 0.0703125)
    assert efficiency.sign_test([0.0, 0.0])["p"] == 1.0
    assert efficiency.sign_test([])["p"] == 1.0
    assert efficiency.sign_test([1.0, -1.0])["p"] == 1.0
    assert efficiency.sign_test([1.0] * 10)["p"] == pytest.approx(2 / 1024)


def test_bca_corrects_a_skewed_sample_beyond_the_percentile_interval():
    x = list(np.random.default_rng(7).lognormal(0, 1, 15))
    bca = efficiency.bca_interval(x, resamples=20000)
    pct = efficiency.bootstrap_interval(x, stat=np.mean, resamples=20000)  # the same resamples (same seed)
    assert bca["value"] == pytest.approx(np.mean(x)) and bca["n"] == 15 and bca["method"] == "BCa"
    # a right-skewed mean: the bias and acceleration move both ends up, the upper one most
    assert bca["low"] > pct["low"] and bca["high"] > pct["high"]
    assert bca["high"] - pct["high"] > bca["low"] - pct["low"]
    ref = scipy_stats.bootstrap((np.array(x),), np.mean, n_resamples=20000, method="BCa",
                                rng=np.random.default_rng(1)).confidence_interval
    assert bca["low"] == pytest.approx(ref.low, rel=0.03) and bca["high"] == pytest.approx(ref.high, rel=0.03)
    assert efficiency.bca_interval(x, seed=4) == efficiency.bca_interval(x, seed=4)
    same = efficiency.bca_interval([0.2] * 6)
    assert same["low"] == same["high"] == same["value"] == 0.2
    two = efficiency.bca_interval([0.1, 0.3])
    assert two["value"] == pytest.approx(0.2) and two["low"] is None and two["high"] is None
    assert efficiency.bca_interval([])["value"] is None
    med = efficiency.bca_interval(x, stat=np.median)  # ties among resampled medians give finite ends
    assert math.isfinite(med["low"]) and med["low"] <= med["value"] <= med["high"]


def test_labels_needed_hits_brackets_and_censoring():
    labels, maps = [64, 96, 128, 160], [0.10, 0.20, 0.30, 0.40]
    assert efficiency.labels_needed(labels, maps, 0.30) == \
        {"labels": pytest.approx(128.0), "censored": False, "bound": pytest.approx(128.0), "at_start": False}
    assert efficiency.labels_needed(labels, maps, 0.25)["labels"] == pytest.approx(112.0)
    assert efficiency.labels_needed(labels, maps, 0.05) == \
        {"labels": 64.0, "censored": False, "bound": 64.0, "at_start": True}
    assert efficiency.labels_needed(labels, maps, 0.41) == \
        {"labels": None, "censored": True, "bound": 160.0, "at_start": False}
    # the first crossing counts, not a later one after a dip
    assert efficiency.labels_needed([0, 10, 20, 30], [0.0, 0.5, 0.1, 0.6], 0.25)["labels"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="score 2 is missing"):
        efficiency.labels_needed(labels, [0.1, 0.2, None, 0.4], 0.35)
    with pytest.raises(ValueError, match="increasing order"):
        efficiency.labels_needed([64, 32], [0.1, 0.2], 0.15)
    with pytest.raises(ValueError, match="differ in length"):
        efficiency.labels_needed([64, 96], [0.1], 0.15)
    reach = efficiency.reach_targets(labels, maps, [0.25, 0.41])
    assert reach[0]["labels"] == pytest.approx(112.0) and reach[1]["censored"]


def _need(labels: float | None, bound: float | None = None, at_start: bool = False) -> dict:
    if labels is None:
        return {"labels": None, "censored": True, "bound": bound, "at_start": False}
    return {"labels": labels, "censored": False, "bound": labels, "at_start": at_start}


def test_paired_label_ratio_keeps_unreached_seeds_out_of_the_numbers():
    arm = {0: _need(80), 1: _need(240), 2: _need(100), 3: _need(None, 160), 4: _need(None, 160),
           5: _need(64, at_start=True), 6: _need(70)}
    ref = {0: _need(160), 1: _need(80), 2: _need(None, 200), 3: _need(100), 4: _need(None, 160),
           5: _need(64, at_start=True)}
    r = efficiency.paired_label_ratio(arm, ref)
    ps = r["per_seed"]
    assert ps[0] == {"saving": pytest.approx(0.5), "log_ratio": pytest.approx(-math.log(2)), "kind": "exact"}
    assert ps[1]["saving"] == pytest.approx(-2.0) and ps[1]["kind"] == "exact"  # as it is: three times the labels
    assert ps[2] == {"saving": pytest.approx(0.5), "log_ratio": pytest.approx(-math.log(2)), "kind": "lower_bound"}
    assert ps[3] == {"saving": None, "log_ratio": None, "kind": "arm_not_reached"}
    assert ps[4]["kind"] == "neither_reached" and ps[5]["kind"] == "reference_at_start"
    assert r["seeds"] == {"exact": [0, 1], "lower_bound": [2], "arm_not_reached": [3], "neither_reached": [4],
                          "reference_at_start": [5]}
    assert r["unpaired"] == [6]
    mean_log = (math.log(3) - 2 * math.log(2)) / 3
    assert r["t"]["n"] == 3 and r["t"]["mean"] == pytest.approx(mean_log)
    assert r["saving"]["mean"] == pytest.approx(1 - 0.75 ** (1 / 3))
    assert r["saving"]["low"] == pytest.approx(1 - math.exp(r["t"]["high"]))
    assert r["saving"]["high"] == pytest.approx(1 - math.exp(r["t"]["low"]))
    # wins: seed 0, seed 2 (at least 50 %); losses: seed 1, seed 3 (160 labels without reaching what ref did at 100)
    assert (r["sign"]["wins"], r["sign"]["losses"], r["sign"]["p"]) == (2, 2, 1.0)
    # an arm already at the target at its first point saves at least 1 - first labels / reference's
    early = efficiency.paired_label_ratio({0: _need(64, at_start=True)}, {0: _need(128)})
    assert early["per_seed"][0] == {"saving": pytest.approx(0.5), "log_ratio": pytest.approx(-math.log(2)),
                                    "kind": "lower_bound"}


def test_auc_common_range_by_hand():
    curves = {"a": ([0, 10, 20], [0.0, 1.0, 1.0]), "b": ([5, 15, 30], [0.5, 0.5, 1.0])}
    # common range [5, 20]. a: 5..10 rises 0.5 -> 1 (3.75), 10..20 at 1 (10): 13.75 / 15.
    # b: 5..15 at 0.5 (5), 15..20 rises 0.5 -> 2/3 (35/12): (95/12) / 15
    auc = efficiency.auc_common_range(curves)
    assert auc == {"a": pytest.approx(13.75 / 15), "b": pytest.approx(95 / 12 / 15)}
    assert efficiency.auc_common_range(curves, lo=10, hi=15) == {"a": pytest.approx(1.0), "b": pytest.approx(0.5)}
    assert efficiency.auc_common_range(curves, lo=10, hi=10) == {"a": 1.0, "b": 0.5}
    assert efficiency.auc_common_range({"a": curves["a"]})["a"] == pytest.approx(efficiency.curve_auc(*curves["a"]))
    with pytest.raises(ValueError, match="outside curve 'a'"):
        efficiency.auc_common_range(curves, lo=5, hi=25)
    with pytest.raises(ValueError, match="do not overlap"):
        efficiency.auc_common_range({"a": ([0, 10], [0.1, 0.2]), "b": ([20, 30], [0.1, 0.2])})
    with pytest.raises(ValueError, match="score 1 is missing"):
        efficiency.auc_common_range({"a": ([0, 10], [0.1, None])})


def test_verdict_from_interval_and_checks():
    up = {"low": 0.01, "high": 0.05, "n": 8}
    assert efficiency.verdict(up, higher_is_better=True)["verdict"] == "better"
    assert efficiency.verdict(up, higher_is_better=False)["verdict"] == "worse"
    down = {"low": -0.05, "high": -0.01, "n": 8}
    assert efficiency.verdict(down, higher_is_better=True)["verdict"] == "worse"
    assert efficiency.verdict({"low": -0.01, "high": 0.02, "n": 8}, higher_is_better=True)["verdict"] == \
        "no difference"
    few = efficiency.verdict({"low": 0.01, "high": 0.05, "n": 2}, higher_is_better=True)
    assert few["verdict"] == "inconclusive" and "2 seeds" in few["reason"]
    v = efficiency.verdict(up, higher_is_better=True, compute_ok=False)
    assert v["verdict"] == "inconclusive" and "compute-limited" in v["reason"]
    v = efficiency.verdict(up, higher_is_better=True, floor_ok=False, reference_rises=False)
    assert "did not learn" in v["reason"] and "flat" in v["reason"]
    assert efficiency.verdict({"low": None, "high": None, "n": 5}, higher_is_better=True)["verdict"] == \
        "inconclusive"
    for v in (efficiency.verdict(up, higher_is_better=True), few):
        assert v["verdict"] in efficiency.VERDICTS


def test_null_identical_arms_show_no_difference():
    rng = np.random.default_rng(3)
    curves = {s: ([64, 96, 128, 160], sorted(rng.uniform(0.1, 0.4, 4))) for s in range(12)}
    a = {s: efficiency.curve_auc(*c) for s, c in curves.items()}
    b = {s: efficiency.curve_auc(*c) for s, c in curves.items()}
    diffs = list(efficiency.paired_differences(a, b).values())
    assert diffs == [0.0] * 12
    t = efficiency.paired_t_interval(diffs)
    assert t["low"] == t["high"] == t["mean"] == 0.0
    assert efficiency.verdict(t, higher_is_better=True)["verdict"] == "no difference"
    assert efficiency.sign_test(diffs) == {"wins": 0, "losses": 0, "ties": 12, "n": 12, "p": 1.0}
    need = {s: efficiency.labels_needed(*c, c[1][-1]) for s, c in curves.items()}
    r = efficiency.paired_label_ratio(need, need)
    assert all(d["saving"] == 0.0 for d in r["per_seed"].values())
    assert r["saving"]["low"] == r["saving"]["high"] == 0.0


def test_null_arms_from_one_distribution_cover_zero_at_the_stated_rate():
    rng = np.random.default_rng(11)
    covered, verdicts = 0, []
    for _ in range(200):
        seed_effect = rng.uniform(0.2, 0.4, 12)  # the seed set and pool: shared by both arms
        a = seed_effect + rng.normal(0, 0.01, 12)
        b = seed_effect + rng.normal(0, 0.01, 12)
        t = efficiency.paired_t_interval(list(a - b))
        covered += t["low"] <= 0 <= t["high"]
        verdicts.append(efficiency.verdict(t, higher_is_better=True)["verdict"])
    assert 0.9 <= covered / 200 <= 0.99
    assert verdicts.count("no difference") == covered


def test_null_an_arm_that_learned_nothing_is_inconclusive():
    flat = [0.01] * 5
    assert not efficiency.learned(flat, 0.4)
    assert efficiency.learned([0.05, 0.12], 0.4)
    assert not efficiency.learned([0.15], 1.0)  # over the floor but under a fifth of the upper bound
    t = efficiency.paired_t_interval([0.001, 0.002, 0.0015, 0.002, 0.001, 0.0012])  # excludes 0
    assert t["low"] > 0
    v = efficiency.verdict(t, higher_is_better=True, floor_ok=efficiency.learned(flat, 0.4))
    assert v["verdict"] == "inconclusive" and "did not learn" in v["reason"]


def test_null_a_flat_reference_is_inconclusive():
    noise = efficiency.retrain_noise([(0.30, 0.32), (0.25, 0.24), (0.40, 0.38)])
    assert not efficiency.rises([0.30, 0.33, 0.32], noise["threshold"])
    assert efficiency.rises([0.20, 0.25, 0.30], noise["threshold"])
    assert not efficiency.rises([0.3], 0.0)
    t = {"low": 0.01, "high": 0.03, "n": 8}
    v = efficiency.verdict(t, higher_is_better=True,
                           reference_rises=efficiency.rises([0.30, 0.33, 0.32], noise["threshold"]))
    assert v["verdict"] == "inconclusive" and "flat" in v["reason"]


def test_retrain_noise_and_compute_check():
    # differences -0.02, 0.01, 0.02: RMS sqrt(0.0009 / 3); one training's SD is that / sqrt 2
    noise = efficiency.retrain_noise([(0.30, 0.32), (0.25, 0.24), (0.40, 0.38)])
    assert noise["sd"] == pytest.approx(math.sqrt(0.0003) / math.sqrt(2))
    assert noise["threshold"] == pytest.approx(2 * math.sqrt(0.0003)) and noise["n"] == 3
    with pytest.raises(ValueError, match="at least one pair"):
        efficiency.retrain_noise([])
    c = efficiency.compute_check([0.30, 0.31, 0.29], [0.36, 0.35, 0.30], noise)
    assert c["gains"] == pytest.approx([0.06, 0.04, 0.01]) and c["median_gain"] == pytest.approx(0.04)
    assert c["threshold"] == pytest.approx(noise["threshold"]) and c["limited"] and "above" in c["reason"]
    c = efficiency.compute_check([0.30, 0.31, 0.29], [0.31, 0.30, 0.40], noise)  # one outlier: median 0.01
    assert not c["limited"] and "within" in c["reason"]
    with pytest.raises(ValueError, match="same, non-zero number"):
        efficiency.compute_check([0.3], [0.3, 0.4], noise)
