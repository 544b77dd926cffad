"""The versioned manifest and the guarded merge: dedupe by hash, frozen test split, moves out of validation,
near-duplicates across splits, and pseudo-labels scored when human labels replace them."""

from __future__ import annotations

import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import yaml

from al.app.session import init_dataset
from al.core import store
from al.core.config import load_config
from al.core.context import Listeners, Options
from al.core.paths import RunPaths
from al.data import dataset, manifest
from al.review import Labelled, read_norm_labels, write_norm_labels
from al.steps import review
from tests.conftest import make_config
from tests.integration.test_review_support import Recorder, run_at_review

BOX = np.array([[0, 0.1, 0.1, 0.4, 0.4]])


def _img(path, seed, *, like=None, shift=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    if like is not None:
        img = np.clip(cv2.imread(str(like)).astype(int) + shift, 0, 255).astype(np.uint8)
    else:
        img = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (9, 9), 3)
    cv2.imwrite(str(path), img)
    write_norm_labels(dataset.label_path(path), BOX)
    return str(path.resolve())


@pytest.fixture
def world(tmp_path):
    d = tmp_path / "ds"
    splits = {"train": [_img(d / "images/train/a.png", 1), _img(d / "images/train/b.png", 2)],
              "val": [_img(d / "images/val/c.png", 3), _img(d / "images/val/d.png", 4),
                      _img(d / "images/val/e.png", 5)],
              "test": [_img(d / "images/test/t.png", 6)]}
    man = manifest.build_initial(splits, "data.yaml", with_phash=True)
    return tmp_path, splits, man


def _merge(tmp_path, man, splits, cands, near=5):
    run = tmp_path / "run" / "added"
    return manifest.merge(man, splits, cands, iteration=3, img_dir=run / "images", lbl_dir=run / "labels", nc=5,
                          iou=0.5, near_distance=near)


def test_merge_dedupes_guards_test_moves_val_and_records_provenance(world):
    tmp_path, splits, man = world
    x = tmp_path / "incoming"
    new = _img(x / "n.png", 7)
    dup_train = shutil.copy(splits["train"][0], x / "a_again.png")
    dup_test = shutil.copy(splits["test"][0], x / "t_again.png")
    near_test = _img(x / "t_bright.png", 0, like=splits["test"][0], shift=3)
    boxes2 = np.array([[2, 0.2, 0.2, 0.5, 0.6], [1, 0.6, 0.1, 0.9, 0.3]])
    cands = [Labelled(splits["val"][0], boxes2, "local-package", "human", pick=splits["val"][0]),
             Labelled(new, BOX, "combined", "human"),
             Labelled(new, BOX, "combined", "human", name="n_copy.png"),
             Labelled(str(dup_train), BOX, "combined", "human"),
             Labelled(str(dup_test), BOX, "combined", "human"),
             Labelled(near_test, np.zeros((0, 5)), "combined", "human")]
    res = _merge(tmp_path, man, splits, cands)

    assert res.refused_test == [str(dup_test)]
    assert [d["image"] for d in res.dropped_duplicates] == [new, str(dup_train)]
    assert res.dropped_duplicates[1]["duplicate_of"] == splits["train"][0]
    assert res.moved_from_val == [splits["val"][0]]
    assert res.splits["val"] == splits["val"][1:] and res.splits["test"] == splits["test"]
    assert res.splits["train"][:2] == splits["train"] and len(res.splits["train"]) == 5
    assert res.added_boxes == 3
    # nothing identical to the test image is in training
    test_hash = dataset.file_hash(splits["test"][0])
    assert test_hash not in {dataset.file_hash(p) for p in res.splits["train"]}
    # the near-duplicate of the test image went in, with a warning naming both
    assert [(n["image"].rsplit("/", 1)[1], n["split"]) for n in res.near_duplicates] == [("t_bright.png", "test")]
    e = res.manifest.images[res.added[0]]
    assert (e["source"], e["label_origin"], e["iteration_added"], e["moved_from"], e["origin"]) == \
        ("local-package", "human", 3, "val", splits["val"][0])
    np.testing.assert_allclose(read_norm_labels(dataset.label_path(res.added[0]), 5), boxes2, atol=1e-5)
    assert splits["val"][0] not in res.manifest.images and res.manifest.version == 1
    assert res.manifest.images[res.added[-1]]["boxes"] == 0  # a negative keeps its place, with no boxes
    assert res.manifest.counts()["train"] == {"dataset": 2, "human": 3}


def test_near_duplicate_check_can_be_disabled(world):
    tmp_path, splits, man = world
    near_val = _img(tmp_path / "x" / "c2.png", 0, like=splits["val"][1], shift=2)
    assert _merge(tmp_path, man, splits, [Labelled(near_val, BOX, "combined", "human")]).near_duplicates
    res = _merge(tmp_path, man, splits, [Labelled(near_val, BOX, "combined", "human")], near=None)
    assert res.near_duplicates == [] and res.added


def test_human_labels_replace_pseudo_labels_and_score_them(world):
    tmp_path, splits, man = world
    pseudo_img = splits["train"][1]
    man.images[pseudo_img]["label_origin"] = "pseudo"
    correct, spurious, missed = [1, .1, .1, .3, .3], [2, .6, .6, .9, .9], [3, .5, .1, .7, .3]
    write_norm_labels(dataset.label_path(pseudo_img), np.array([correct, spurious]))
    human = np.array([[1, .11, .1, .3, .31], missed])
    back = tmp_path / "returned" / "b.png"
    back.parent.mkdir()
    shutil.copy(pseudo_img, back)  # the same bytes: the human's export of the pseudo-labelled image
    res = _merge(tmp_path, man, splits, [Labelled(str(back), human, "combined", "human")])
    assert res.relabelled == [{"image": res.added[0], "replaces": pseudo_img, "was": "pseudo", "matched_by": "content"}]
    assert pseudo_img not in res.splits["train"] and res.added[0] in res.splits["train"]
    pc = res.pseudo_check
    assert (pc["tp"], pc["fp"], pc["fn"], pc["precision"], pc["recall"]) == (1, 1, 1, 0.5, 0.5)
    assert pc["per_class"][2] == {"tp": 0, "fp": 1, "fn": 0, "precision": 0.0, "recall": 0.0}
    assert res.manifest.images[res.added[0]]["relabelled_from"] == pseudo_img
    # the same image again, labelled by the model: an exact duplicate, dropped
    res2 = _merge(tmp_path, res.manifest, res.splits, [Labelled(str(back), human, "pseudo", "pseudo")])
    assert res2.added == [] and len(res2.dropped_duplicates) == 1


def test_auto_marks_pseudo_labels_with_per_class_thresholds(tmp_path, tiny_data):
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=3,
                             active_learning={"pseudo_label_conf": 0.5, "max_samples_per_iteration": 3,
                                              "pseudo_label_conf_per_class": {"zero": 0.95}})
    ctx.env = replace(ctx.env, opts=Options(auto=True))
    assert review.run(ctx) == "next"
    out = store.read_json(ctx.env.paths.review(0))
    assert out["mode"] == "pseudo" and out["pseudo_thresholds"]["zero"] == 0.95
    man = store.read_json(ctx.env.paths.manifest(1))
    added = [e for e in man["images"].values() if e["iteration_added"] == 0]
    assert len(added) == 3 and {e["label_origin"] for e in added} == {"pseudo"}
    # class 'zero' (conf 0.9 < 0.95) was held back; the others (0.9 >= 0.5) became pseudo-labels
    preds = [r["pred"] for r in store.read_json(ctx.env.paths.validation(0))["images"][:3]]
    want = sum(1 for pr in preds for r in pr if r[0] != 0 and r[1] >= 0.5)
    assert any(r[0] == 0 and r[1] >= 0.5 for pr in preds for r in pr)  # there was something to hold back
    got = np.concatenate([read_norm_labels(dataset.label_path(p), 5) for p, e in man["images"].items()
                          if e["iteration_added"] == 0])
    assert len(got) == want == out["added_boxes"] and 0 not in got[:, 0]


def test_test_split_is_never_selected_nor_merged(tmp_path, tiny_data):
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=2, active_learning={"review_source": "simulated"})
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(0))
    hard = store.read_json(ctx.env.paths.hard_examples(0))
    hard["picks"].append({"image": splits["test"][0], "score": 0.1, "errors": []})  # a hand-edited pick
    store.write_json(ctx.env.paths.hard_examples(0), hard)
    assert review.run(ctx) == "next"
    assert any("picks are test images and were dropped" in m for m in rec.messages())
    _, new = dataset.read_snapshot(ctx.env.paths.dataset_version(1))
    assert new["test"] == splits["test"]
    test_hashes = {dataset.file_hash(p) for p in splits["test"]}
    assert not test_hashes & {dataset.file_hash(p) for p in new["train"]}
    out = store.read_json(ctx.env.paths.review(0))
    assert out["picks"] == 2 and out["added_images"] == 2 and out["removed_from_val"] == 2


def test_test_images_in_a_human_export_are_refused(tmp_path, tiny_data):
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=2, active_learning={"require_human_review": False,
                                                                              "review_source": "manual"})
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(0))
    combined = ctx.env.cfg.dataset.combined_dir
    for p in splits["test"][:3] + splits["val"][:1]:
        shutil.copy(p, (combined / "images" / "train").mkdir(parents=True, exist_ok=True) or
                    combined / "images" / "train")
        lbl = combined / "labels" / "train"
        lbl.mkdir(parents=True, exist_ok=True)
        shutil.copy(dataset.label_path(p), lbl)
    (combined / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\n"
                                        "names: [zero, one, two, three, four]\n")
    assert review.run(ctx) == "next"
    out = store.read_json(ctx.env.paths.review(0))
    assert out["skipped_test_duplicates"] == 3 and out["added_images"] == 1 and out["removed_from_val"] == 1
    assert out["returned_labelled"] == 1 and any("the test split is frozen" in m for m in rec.messages())
    meta_man = store.read_json(ctx.env.paths.manifest(1))
    assert {e["split"] for p, e in meta_man["images"].items() if p in splits["test"]} == {"test"}


def test_an_export_with_the_validation_split_moves_only_the_picks_out_of_it(tmp_path, tiny_data):
    """Seed 004's export of the whole reviewed dataset holds every validation image: only the picks leave."""
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=2, active_learning={"require_human_review": False,
                                                                              "review_source": "manual"})
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(0))
    combined = ctx.env.cfg.dataset.combined_dir
    for split in ("train", "val"):
        for p in splits[split]:
            for f, kind in ((p, "images"), (dataset.label_path(p), "labels")):
                (combined / kind / split).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, combined / kind / split)
    (combined / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                        "names: [zero, one, two, three, four]\n")
    assert review.run(ctx) == "next"
    _, new = dataset.read_snapshot(ctx.env.paths.dataset_version(1))
    assert new["val"] == splits["val"][2:]  # the two picks moved; every other validation image stayed
    out = store.read_json(ctx.env.paths.review(0))
    assert (out["removed_from_val"], out["added_images"], out["kept_in_val"]) == (2, 2, len(splits["val"]) - 2)
    diff = store.read_json(ctx.env.paths.manifest_diff(1))
    assert sorted(d["val_image"] for d in diff["kept_in_val"]) == sorted(splits["val"][2:])
    assert any("they stay in validation" in m for m in rec.messages())


def test_human_labels_for_earlier_pseudo_labels_are_reported_by_the_step(tmp_path, tiny_data):
    """--auto in iteration 0, then in iteration 1 a human export that holds those images with true labels."""
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=3, active_learning={"pseudo_label_conf": 0.5,
                                                                              "require_human_review": False})
    ctx.env = replace(ctx.env, opts=Options(auto=True))
    assert review.run(ctx) == "next"
    pseudo = [p for p, e in store.read_json(ctx.env.paths.manifest(1))["images"].items()
              if e["label_origin"] == "pseudo"]
    # iteration 1: no new picks; the human's export (dataset.combined_dir) has the pseudo-labelled images
    ctx.env = replace(ctx.env, opts=Options(auto=False))
    ctx.state.iteration = 1
    store.write_json(ctx.env.paths.validation(1), {"iteration": 1, "images": []})
    store.write_json(ctx.env.paths.hard_examples(1), {"iteration": 1, "picks": []})
    combined = ctx.env.cfg.dataset.combined_dir
    (combined / "images").mkdir(parents=True)
    (combined / "labels").mkdir()
    truth = {}
    for p in pseudo:
        dst = combined / "images" / p.rsplit("/", 1)[1]
        shutil.copy(p, dst)
        src = store.read_json(ctx.env.paths.manifest(1))["images"][p]["origin"]
        shutil.copy(dataset.label_path(src), dataset.label_path(dst))  # the true labels
        truth[p] = read_norm_labels(dataset.label_path(src), 5)
    with (dataset.label_path(combined / "images" / pseudo[0].rsplit("/", 1)[1])).open("a") as fh:
        fh.write("3 0.9 0.9 0.05 0.05\n")  # an object the model never saw
    (combined / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [zero, one, two, three, four]\n")
    assert review.run(ctx) == "next"
    out = store.read_json(ctx.env.paths.review(1))
    pc = out["pseudo_label_check"]
    assert out["relabelled"] == 3 and pc["images"] == 3
    # the pseudo-labels were the ground truth at conf 0.9 (all >= 0.5): perfect precision, one missed object
    n_true = sum(len(v) for v in truth.values()) + 1
    assert (pc["tp"], pc["fp"], pc["fn"]) == (n_true - 1, 0, 1) and pc["precision"] == 1.0
    assert pc["recall"] == pytest.approx((n_true - 1) / n_true) and pc["per_class"]["three"]["fn"] >= 1
    assert any("Pseudo-labels checked against human labels on 3 images" in m for m in rec.messages())
    man = store.read_json(ctx.env.paths.manifest(2))
    assert not [e for e in man["images"].values() if e["label_origin"] == "pseudo"]
    assert sum(1 for e in man["images"].values() if e.get("relabelled_from") in pseudo) == 3


def test_initial_manifest_warns_about_near_duplicates_in_the_configured_splits(tmp_path, tiny_data):
    data = tmp_path / "tiny"
    shutil.copytree(tiny_data.parent, data, ignore=shutil.ignore_patterns("*.cache"))
    spec = yaml.safe_load((data / "data.yaml").read_text())
    (data / "data.yaml").write_text(yaml.safe_dump({**spec, "path": str(data)}))
    # a training image that is a slightly brighter copy of a test image (the same frame went to both splits)
    train0, test0 = sorted((data / "images" / "train").iterdir())[0], sorted((data / "images" / "test").iterdir())[0]
    _img(train0, 0, like=test0, shift=2)
    ctx, rec = run_at_review(tmp_path, data / "data.yaml", n_picks=1, active_learning={"review_source": "simulated"})
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(0))
    assert splits["train"][0] == str(train0.resolve())
    assert review.run(ctx) == "next"
    man = store.read_json(ctx.env.paths.manifest(0))
    assert {"image": splits["train"][0], "other": splits["test"][0], "split": "test", "distance": 0} in \
        [{**n, "distance": 0} for n in man["near_duplicates"]]
    assert any("training images are near-duplicates of validation/test images" in m for m in rec.messages())


def test_copies_of_test_images_leave_train_and_val_at_start_and_near_duplicates_are_warned(tmp_path, tiny_data):
    """The test split never reaches training, not even as a byte copy under another name."""
    data = tmp_path / "tiny"
    shutil.copytree(tiny_data.parent, data, ignore=shutil.ignore_patterns("*.cache"))
    spec = yaml.safe_load((data / "data.yaml").read_text())
    (data / "data.yaml").write_text(yaml.safe_dump({**spec, "path": str(data)}))
    train, test = (sorted((data / "images" / s).iterdir()) for s in ("train", "test"))
    copies = {}
    for split, src in (("train", test[0]), ("val", test[1])):
        dst = data / "images" / split / f"renamed_{src.name}"
        shutil.copy(src, dst)
        shutil.copy(dataset.label_path(src), dataset.label_path(dst))
        copies[str(dst.resolve())] = str(src.resolve())
    _img(train[0], 0, like=test[2], shift=2)  # the same frame, slightly brighter, in train and test
    cfg = load_config(make_config(tmp_path, data / "data.yaml"))
    bus = Listeners()
    rec = Recorder(bus)
    ver = init_dataset(cfg, RunPaths(cfg.run_dir), bus)
    _, splits = dataset.read_snapshot(RunPaths(cfg.run_dir).dataset_version(0))
    assert not set(copies) & set(splits["train"] + splits["val"]) and splits["test"] == [str(p) for p in test]
    assert ver["test_copies_removed"] == copies
    removed = [m for m in rec.messages() if "identical to test images and were removed from train/val" in m]
    assert len(removed) == 1 and all(f"{a} = test {b}" in removed[0] for a, b in copies.items())
    near = [m for m in rec.messages() if "near-duplicates of test images" in m]
    assert len(near) == 1 and f"{train[0].resolve()} ~ test {test[2].resolve()}" in near[0]
    assert {(d["image"], d["other"]) for d in ver["test_near_duplicates"]} == {(str(train[0].resolve()),
                                                                               str(test[2].resolve()))}


def _pseudo_world(world):
    tmp_path, splits, man = world
    pseudo_img = splits["train"][1]
    man.images[pseudo_img]["label_origin"] = "pseudo"
    write_norm_labels(dataset.label_path(pseudo_img), np.array([[1, .1, .1, .3, .3], [2, .6, .6, .9, .9]]))
    return tmp_path, splits, man, pseudo_img


def _reencoded(src, dst, scale):
    """`src` as an annotation tool hands it back: resized and re-encoded as a lossy JPEG (other bytes)."""
    img = cv2.imread(str(src))
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return dst


def test_a_reencoded_human_relabel_replaces_its_pseudo_labelled_image(world):
    tmp_path, splits, man, pseudo_img = _pseudo_world(world)
    back = _reencoded(pseudo_img, tmp_path / "returned" / "b_export.jpg", 1.5)
    assert dataset.file_hash(back) != dataset.file_hash(pseudo_img)
    human = np.array([[1, .11, .1, .3, .31]])
    res = _merge(tmp_path, man, splits, [Labelled(str(back), human, "roboflow", "human")])
    (rel,) = res.relabelled
    assert (rel["replaces"], rel["was"], rel["matched_by"]) == (pseudo_img, "pseudo", "phash")
    assert rel["distance"] <= 4
    assert pseudo_img not in res.splits["train"] and len(res.splits["train"]) == 2  # replaced, not duplicated
    pc = res.pseudo_check
    assert (pc["tp"], pc["fp"], pc["fn"]) == (1, 1, 0)


def test_a_different_image_is_not_taken_for_a_relabel(world):
    tmp_path, splits, man, pseudo_img = _pseudo_world(world)
    other = _reencoded(splits["val"][2], tmp_path / "returned" / "e_export.jpg", 1.0)
    res = _merge(tmp_path, man, splits, [Labelled(str(other), BOX, "roboflow", "human")])
    assert res.relabelled == [] and res.pseudo_check is None and pseudo_img in res.splits["train"]
    # and with the phash match off, even the re-encoded copy of the pseudo image only adds a second image
    back = _reencoded(pseudo_img, tmp_path / "returned" / "b_export.jpg", 1.5)
    run = tmp_path / "run2" / "added"
    res = manifest.merge(man, splits, [Labelled(str(back), BOX, "roboflow", "human")], iteration=3,
                         img_dir=run / "images", lbl_dir=run / "labels", nc=5, iou=0.5, near_distance=5,
                         relabel_distance=None)
    assert res.relabelled == [] and pseudo_img in res.splits["train"] and len(res.splits["train"]) == 3
