"""The promotion gate's statistics (al.metrics.gate): AP equal to Ultralytics' ap_per_class, the paired bootstrap,
class alarms and the verdict, on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from al.metrics import gate


def _image(rng, nc: int, *, quality: float, n_tgt: int | None = None, ties: bool = False) -> tuple[dict, dict]:
    """One image's stats and record: targets, predictions of which a share `quality` are true positives (never more
    TPs of a class at a threshold than it has targets, as a real matcher guarantees)."""
    t = int(rng.integers(0, 5)) if n_tgt is None else n_tgt
    tgt = rng.integers(0, nc, t)
    p = int(rng.integers(0, 8))
    cls = rng.integers(0, nc, p)
    conf = np.round(rng.random(p), 1) if ties else rng.random(p)
    tp = np.zeros((p, 10), bool)
    left = np.array([[np.sum(tgt == c)] * 10 for c in range(nc)])
    for i in range(p):
        for j in range(10):
            if left[cls[i], j] > 0 and rng.random() < quality * (1 - j / 20):
                tp[i, j] = True
                left[cls[i], j] -= 1
    hits = int(tp[:, 0].sum())
    rec = {"tp": [[0, 0, 0.9]] * hits, "fp": list(range(p - hits)), "fn": list(range(max(0, t - hits)))}
    return {"tp": tp, "conf": conf, "pred_cls": cls, "target_cls": tgt}, rec


def _arrays(seed: int, n: int, nc: int, *, quality: float = 0.5, ties: bool = False) -> gate.DecisionArrays:
    rng = np.random.default_rng(seed)
    stats, recs = zip(*[_image(rng, nc, quality=quality, ties=ties) for _ in range(n)])
    return gate.DecisionArrays.build([f"img{i}.jpg" for i in range(n)], recs, stats)


@pytest.mark.parametrize("ties", [False, True])
def test_class_ap_equals_ultralytics_ap_per_class(ties):
    from ultralytics.utils.metrics import ap_per_class

    checked = 0
    for seed in range(60):
        nc = 1 + seed % 3
        a = _arrays(seed, 1 + seed % 11, nc, ties=ties)
        if not len(a.tgt_cls):
            continue
        ap, present = gate.class_ap(a, np.ones((1, len(a.images))), nc)
        res = ap_per_class(a.pred_tp, a.pred_conf, a.pred_cls, a.tgt_cls, plot=False)
        np.testing.assert_allclose(ap[0][res[6]], res[5], atol=1e-12)
        assert present[0].tolist() == [c in res[6] for c in range(nc)]
        checked += 1
    assert checked > 40


def test_weights_count_an_image_as_often_as_it_is_drawn():
    """A weight k is the image repeated k times (what a bootstrap resample is), checked against ap_per_class on
    the repeated images (distinct confidences: how ap_per_class's unstable sort orders ties of repeated images is
    its own arbitrary choice)."""
    from ultralytics.utils.metrics import ap_per_class

    rng = np.random.default_rng(7)
    for seed in range(20):
        nc = 2
        a = _arrays(100 + seed, 8, nc)
        w = rng.integers(0, 3, len(a.images))
        rep = np.repeat(np.arange(len(a.images)), w)
        keep = np.isin(a.pred_img, np.nonzero(w)[0])
        tp = np.concatenate([a.pred_tp[a.pred_img == i] for i in rep] or [np.zeros((0, 10), bool)])
        conf = np.concatenate([a.pred_conf[a.pred_img == i] for i in rep] or [np.zeros(0)])
        pcls = np.concatenate([a.pred_cls[a.pred_img == i] for i in rep] or [np.zeros(0, int)])
        tcls = np.concatenate([a.tgt_cls[a.tgt_img == i] for i in rep] or [np.zeros(0, int)])
        if not len(tcls) or not keep.any():
            continue
        ap, _ = gate.class_ap(a, w[None], nc)
        res = ap_per_class(tp, conf, pcls, tcls, plot=False)
        np.testing.assert_allclose(ap[0][res[6]], res[5], atol=1e-12)


def test_resample_weights_draw_n_images_per_row_and_are_seeded():
    w = gate.resample_weights(30, 200, seed=(0, 3))
    assert w.shape == (200, 30) and (w.sum(1) == 30).all()
    assert np.array_equal(w, gate.resample_weights(30, 200, seed=(0, 3)))
    assert not np.array_equal(w, gate.resample_weights(30, 200, seed=(0, 4)))


def test_f1_values_are_the_pooled_f1_of_the_drawn_images():
    a = _arrays(1, 10, 2)
    one = gate.f1_values(a, np.ones((1, 10)))[0]
    tp, fp, fn = a.img_tp.sum(), a.img_fp.sum(), a.img_fn.sum()
    assert one == pytest.approx(2 * tp / (2 * tp + fp + fn))
    w = np.zeros((1, 10))
    w[0, 3] = 2
    d = 2 * a.img_tp[3] + a.img_fp[3] + a.img_fn[3]
    assert gate.f1_values(a, w)[0] == pytest.approx(2 * a.img_tp[3] / d if d else 0.0)


KW = dict(margin=0.0, require_significant=False, confidence=0.95, resamples=500, seed=(0, 1), max_class_drop=0.10,
          min_class_instances=1)


@pytest.mark.parametrize("metric", gate.METRICS)
def test_identical_models_differ_by_zero_and_are_not_promoted(metric):
    a = _arrays(3, 40, 2)
    r = gate.compare(a, a, ["zero", "one"], metric=metric, **{**KW, "margin": 0.01})
    assert r.delta == 0.0 and r.ci_low <= 0.0 <= r.ci_high
    assert not r.promoted and "not above the margin" in r.reason
    assert r.alarms == [] and set(r.per_class_delta.values()) == {0.0}


@pytest.mark.parametrize("metric", gate.METRICS)
def test_a_clearly_better_challenger_is_promoted_with_an_interval_above_zero(metric):
    rng = np.random.default_rng(5)
    imgs = [_image(rng, 2, quality=0.1, n_tgt=4) for _ in range(60)]
    champ = gate.DecisionArrays.build([f"i{i}" for i in range(60)], [r for _, r in imgs], [s for s, _ in imgs])
    better = []
    for s, _ in imgs:  # the same images, every target found with a confident box
        t = s["target_cls"]
        better.append(({"tp": np.ones((len(t), 10), bool), "conf": np.full(len(t), 0.9), "pred_cls": t,
                        "target_cls": t}, {"tp": [[0, 0, 1.0]] * len(t), "fp": [], "fn": []}))
    chall = gate.DecisionArrays.build(champ.images, [r for _, r in better], [s for s, _ in better])
    r = gate.compare(champ, chall, ["zero", "one"], metric=metric, **{**KW, "require_significant": True})
    assert r.challenger_value > 0.99  # a perfect AP is 0.995 in Ultralytics (its last sentinel has precision 0)
    assert r.delta > 0.3 and r.ci_low > 0 and r.ci_low <= r.delta <= r.ci_high
    assert r.promoted and r.alarms == []


def test_a_class_regression_raises_the_alarm_and_blocks_promotion():
    """The challenger is far better on class 'zero' but loses class 'one': overall it wins, the alarm blocks it."""
    n = 40
    names = ["zero", "one"]
    tgt = np.array([0, 0, 0, 1])

    def model(find: list[int]) -> gate.DecisionArrays:
        s = {"tp": np.ones((len(find), 10), bool), "conf": np.full(len(find), 0.9),
             "pred_cls": tgt[find], "target_cls": tgt}
        rec = {"tp": [[0, 0, 1.0]] * len(find), "fp": [], "fn": list(range(4 - len(find)))}
        return gate.DecisionArrays.build([f"i{i}" for i in range(n)], [rec] * n, [s] * n)

    champ, chall = model([0, 3]), model([0, 1, 2])
    r = gate.compare(champ, chall, names, metric="f1", **KW)
    assert r.delta > 0 and r.alarms == ["one"] and not r.promoted
    assert r.per_class_delta["one"] == pytest.approx(-0.995) and "'one' -0.9950" in r.reason
    quiet = gate.compare(champ, chall, names, metric="f1", **{**KW, "min_class_instances": n + 1})
    assert quiet.alarms == [] and quiet.promoted  # 'one' has n boxes: too few to raise an alarm


def test_the_verdict_is_deterministic_and_depends_on_the_seed():
    a, b = _arrays(11, 30, 2, quality=0.4), _arrays(11, 30, 2, quality=0.6)
    b.images = a.images
    r1 = gate.compare(a, b, ["zero", "one"], metric="map50_95", **KW)
    r2 = gate.compare(a, b, ["zero", "one"], metric="map50_95", **KW)
    assert r1 == r2
    r3 = gate.compare(a, b, ["zero", "one"], metric="map50_95", **{**KW, "seed": (0, 2)})
    assert r3.delta == r1.delta and (r3.ci_low, r3.ci_high) != (r1.ci_low, r1.ci_high)


def test_models_on_different_images_are_refused():
    a, b = _arrays(1, 5, 2), _arrays(2, 6, 2)
    with pytest.raises(ValueError, match="different decision images"):
        gate.compare(a, b, ["zero", "one"], metric="f1", **KW)


def test_arrays_survive_the_npz_round_trip():
    import io

    a = _arrays(4, 9, 3)
    buf = io.BytesIO()
    np.savez(buf, **a.as_dict())
    buf.seek(0)
    b = gate.DecisionArrays.from_dict(np.load(buf))
    assert b.images == a.images
    for key, v in a.as_dict().items():
        assert np.array_equal(v, b.as_dict()[key]), key
