"""Pool scoring with a real (untrained, imgsz 64) YOLO: raw pre-NMS scores and embeddings, the on-disk cache,
hard negatives from validation FPs and from a deployed model's detections."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from al.selection import pool
from al.yolo import detector

SETTINGS = pool.ScanSettings(imgsz=64, conf=0.0001, iou=0.7, batch=4, device="cpu", cand_conf=1e-6, top_k=5,
                             max_candidates=20)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_data):
    tmp = tmp_path_factory.mktemp("w")
    detector.prepare_offline(tmp / "yolo_config")
    return detector.build_untrained("yolov8n.yaml", ["zero", "one", "two", "three", "four"], tmp / "untrained.pt")


@pytest.fixture(scope="module")
def pool_images(tiny_data):
    return sorted(str(p) for p in (tiny_data.parent / "pool" / "images").glob("*.jpg"))[:6]


def test_predict_raw_matches_predict_and_carries_raw_scores(weights, pool_images):
    model = detector.load_model(weights)
    kw = dict(imgsz=64, conf=0.0001, iou=0.7, batch=4, device="cpu")
    plain = list(detector.predict(weights, pool_images, model=model, **kw))
    seen = []
    raw = list(detector.predict_raw(weights, pool_images, model=model, cand_conf=1e-6, max_candidates=20,
                                    on_progress=lambda d, t: seen.append((d, t)), **kw))
    assert [r.pred.path for r in raw] == [p.path for p in plain]
    assert seen[-1] == (6, 6)
    for r, p in zip(raw, plain):
        # the same pass: identical post-NMS output
        assert np.allclose(r.pred.conf, p.conf) and np.allclose(r.pred.boxes, p.boxes)
        assert r.class_max.shape == (5,) and r.embedding.shape == (256,)  # yolov8n's SPPF has 256 channels
        assert 0 < len(r.candidates) <= 20 and r.candidates.shape[1] == 5
        assert np.all(r.candidates.max(axis=1)[:-1] >= r.candidates.max(axis=1)[1:])  # most confident first
        assert np.all(r.candidates <= r.class_max[None, :] + 1e-6)
        # the best anchor always survives NMS: the top post-NMS confidence is the best raw probability
        assert r.pred.conf.max() == pytest.approx(float(r.class_max.max()), rel=1e-4)
    # hooks are removed afterwards: a later plain predict is unaffected and the embeddings differ per image
    assert len(list(detector.predict(weights, pool_images[:2], model=model, **kw))) == 2
    assert not np.array_equal(raw[0].embedding, raw[1].embedding)
    head, backbone = detector._hook_points(model.predictor.model)
    assert not head._forward_hooks and not backbone._forward_hooks


def test_scan_caches_per_model_and_image_content(weights, pool_images, tmp_path, monkeypatch):
    images = [str(shutil.copy(p, tmp_path / Path(p).name)) for p in pool_images]
    cache = tmp_path / "cache"
    progress = []
    first = pool.scan(weights, images, SETTINGS, cache, on_progress=lambda d, t: progress.append((d, t)))
    assert first.cached == 0 and progress[0] == (0, 6) and progress[-1] == (6, 6)
    assert first.embedding.shape == (6, 256) and first.class_max.shape == (6, 5)
    assert np.all((first.uncertainty["entropy"] >= 0) & (first.uncertainty["entropy"] <= 1))
    assert len(list(cache.glob("*/*.npz"))) == 1
    boxes = first.predictions(2)
    assert boxes.shape[1] == 6 and len(boxes) > 0

    calls = []
    real = detector.predict_raw

    def counting(w, imgs, **kw):
        calls.append(list(imgs))
        return real(w, imgs, **kw)

    monkeypatch.setattr(detector, "predict_raw", counting)
    again = pool.scan(weights, images, SETTINGS, cache)  # --resume: a hit for every image
    assert again.cached == 6 and calls == []
    assert np.array_equal(again.embedding, first.embedding)
    assert np.array_equal(again.uncertainty["margin"], first.uncertainty["margin"])
    assert np.array_equal(again.predictions(2), boxes)

    # one image's bytes change: only it is scored again
    Path(images[0]).write_bytes(Path(pool_images[1]).read_bytes() + b"\0")
    third = pool.scan(weights, images, SETTINGS, cache)
    assert third.cached == 5 and calls == [[images[0]]]

    # other scoring settings (like another model file) are another cache folder: a miss
    calls.clear()
    pool.scan(weights, images, pool.ScanSettings(**{**SETTINGS.__dict__, "top_k": 3}), cache)
    assert calls == [images]
    assert len(list(cache.iterdir())) == 2


def test_scan_survives_a_corrupt_cache_file(weights, pool_images, tmp_path):
    cache = tmp_path / "cache"
    pool.scan(weights, pool_images[:2], SETTINGS, cache)
    f = next(cache.glob("*/*.npz"))
    f.write_bytes(b"not a zip")
    again = pool.scan(weights, pool_images[:2], SETTINGS, cache)
    assert again.cached == 0 and len(again.images) == 2


def test_subset_of_a_scan_without_cache_keeps_its_predictions(weights, pool_images, tmp_path):
    cached = pool.scan(weights, pool_images[:4], SETTINGS, tmp_path / "cache")
    mem = pool.scan(weights, pool_images[:4], SETTINGS, None)  # no cache folder: the boxes stay in memory
    part = mem.subset([3, 1])
    assert part.images == [pool_images[3], pool_images[1]]
    for j, i in enumerate([3, 1]):
        assert len(part.predictions(j)) > 0
        assert np.allclose(part.predictions(j), mem.predictions(i))
        assert np.allclose(part.predictions(j), cached.predictions(i), atol=1e-3)  # the cache stores float32


def test_read_detections_and_unconfirmed(tmp_path, caplog):
    f = tmp_path / "a.txt"
    f.write_text("1 0.5 0.5 0.2 0.4 0.9\n2 0.1 0.1 0.1 0.1\nx 1 2 3 4 5\n0 0.25 0.25 0.5 0.5 0.3\n")
    dets = pool.read_detections(f, 100, 200)
    assert dets.tolist() == [[1, 0.9, 40, 60, 60, 140], [0, 0.3, 0, 0, 50, 100]]
    assert "a.txt:2" in caplog.text and "a.txt:3" in caplog.text
    # the class-1 box is matched by a class-1 reference box: confirmed; shift it and it is unconfirmed
    assert pool.unconfirmed(dets, [[1, 40, 60, 60, 140]], 0.5, 0.5) == []
    assert pool.unconfirmed(dets, [[2, 40, 60, 60, 140]], 0.5, 0.5) == [0]  # wrong class
    assert pool.unconfirmed(dets, [], 0.5, 0.5) == [0]
    assert pool.unconfirmed(dets, [], 0.2, 0.5) == [0, 1]


def test_hard_negatives_from_validation_use_the_fp_confidence():
    errors = [{"kind": "fp", "image": "a.jpg", "index": 0, "cls": 1},
              {"kind": "fp", "image": "a.jpg", "index": 1, "cls": 2},
              {"kind": "fn", "image": "a.jpg", "index": 0, "cls": 0},
              {"kind": "fp", "image": "train.jpg", "index": 0, "cls": 0}]
    records = {"a.jpg": {"pred": [[1, 0.8, 0, 0, 9, 9], [2, 0.3, 0, 0, 9, 9]]},
               "train.jpg": {"pred": [[0, 0.99, 0, 0, 9, 9]]}}
    out = pool.hard_negatives_from_validation(errors, records, 0.5, {"a.jpg"})
    assert list(out) == ["a.jpg"] and [(e["cls"], e["conf"]) for e in out["a.jpg"]] == [(1, 0.8)]
    pick = pool.hard_negative_pick("a.jpg", out["a.jpg"], ["zero", "one", "two"])
    assert pick["kind"] == "hard_negative" and pick["score"] == 0.8
    assert pick["reasons"] == ["hard negative: confident false positive 'one' (conf 0.80) on a labelled validation "
                               "image"]


def test_hard_negatives_from_deployed_detections(tmp_path):
    det = tmp_path / "deployed"
    det.mkdir()
    (det / "p1.txt").write_text("0 0.5 0.5 0.5 0.5 0.95\n")  # the current model agrees: not a hard negative
    (det / "p2.txt").write_text("3 0.5 0.5 0.5 0.5 0.91\n1 0.2 0.2 0.1 0.1 0.2\n")  # nobody agrees, confident
    (det / "unknown.txt").write_text("0 0.5 0.5 0.5 0.5 0.99\n")  # not a candidate image: ignored
    sizes = {"/x/p1.jpg": (100, 100), "/x/p2.jpg": (100, 100)}
    ref = {"/x/p1.jpg": np.array([[0, 25, 25, 75, 75]]), "/x/p2.jpg": np.zeros((0, 5))}
    out = pool.hard_negatives_from_deployed(det, sizes, ref.__getitem__, labelled=False, min_conf=0.5, iou=0.5)
    assert list(out) == ["/x/p2.jpg"]
    assert [(e["cls"], e["conf"], e["source"]) for e in out["/x/p2.jpg"]] == [(3, 0.91, "deployed")]
    assert "does not confirm it" in pool.hard_negative_pick("/x/p2.jpg", out["/x/p2.jpg"], list("abcd"))["reasons"][0]
    with pytest.raises(pool.PoolError, match="folder not found"):
        pool.deployed_files(tmp_path / "missing")
