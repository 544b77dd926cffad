"""The one import path (al.review.imports): zip limits and member names, class names by name, Roboflow-style exports
in returned/ and in dataset.combined_dir, labels keyed by unique names, and a package build that never loses
returned/."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from al.core import store
from al.data import dataset
from al.data.dataset import DatasetError
from al.review import ReviewError, imports, read_norm_labels
from al.review import package as pkg
from al.steps import review
from tests.integration.test_review_support import resume, run_at_review

NAMES = ["zero", "one", "two", "three", "four"]


@pytest.fixture
def paused(tmp_path, tiny_data):
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=4)
    assert review.run(ctx) == "pause"
    return ctx, rec


def _picks(ctx) -> list[str]:
    return [p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]


def _truth(pick: str, order: list[str]) -> str:
    """The pick's ground-truth label file, its class ids written in `order`."""
    lines = dataset.label_path(pick).read_text().splitlines()
    return "".join(f"{order.index(NAMES[int(ln.split()[0])])} {ln.split(' ', 1)[1]}\n" for ln in lines)


def _nothing_left(ctx) -> None:
    """A refused import leaves no extracted files behind and writes no review."""
    rp = ctx.env.paths
    assert not rp.unpacked(0).exists()
    assert not [p for p in rp.iteration(0).iterdir() if p.name.startswith(".review_returned_unpacked")]
    assert not rp.review(0).exists()


def _labels_zip(ctx, path: Path, order: list[str], extra: dict[str, str] | None = None, sep: str = "/") -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in _picks(ctx):
            zf.writestr(f"labels{sep}{Path(p).stem}.txt", _truth(p, order))
        for name, text in (extra or {}).items():
            zf.writestr(name, text)


def _merged_labels_equal_truth(ctx, source: str) -> None:
    picks = _picks(ctx)
    man = store.read_json(ctx.env.paths.manifest(1))
    added = {e["origin"]: p for p, e in man["images"].items() if e["iteration_added"] == 0 and e["origin"] in picks}
    assert set(added) == set(picks)
    for pick, path in added.items():
        assert man["images"][path]["source"] == source
        np.testing.assert_allclose(read_norm_labels(dataset.label_path(path), 5),
                                   read_norm_labels(dataset.label_path(pick), 5), atol=1e-5)


# -------------------------------------------------------------------------------------------------------------- zips

def test_a_zip_bomb_is_refused_quickly_before_anything_is_written(paused):
    ctx, _ = paused
    rp = ctx.env.paths
    z = rp.returned(0) / "labels.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:  # 64 KiB that inflate to 64 MiB
        zf.writestr("labels/bomb.txt", bytes(64 << 20))
    assert z.stat().st_size < 100_000
    t0 = time.monotonic()
    with pytest.raises(ReviewError, match=r"refused, nothing extracted: .*expands .* to 64\.0 MiB .*zip bomb.*"
                                          r"review\.local\.max_zip_ratio"):
        resume(ctx)
    assert time.monotonic() - t0 < 5
    written = sum(f.stat().st_size for f in rp.root.rglob("*") if f.is_file() and f != z)
    assert written < 4 << 20
    _nothing_left(ctx)


@pytest.mark.parametrize("limit,needle", [("max_zip_bytes", "more than review.local.max_zip_bytes = 1.0 MiB"),
                                          ("max_zip_members", "5 members, more than review.local.max_zip_members")])
def test_size_and_member_limits_refuse_before_extracting(paused, limit, needle):
    ctx, _ = paused
    rp = ctx.env.paths
    setattr(ctx.env.cfg.review.local, limit, 1 << 20 if limit == "max_zip_bytes" else 4)
    noise = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()  # incompressible
    _labels_zip(ctx, rp.returned(0) / "labels.zip", NAMES, {"notes.bin": noise})
    with pytest.raises(ReviewError, match=needle):
        resume(ctx)
    _nothing_left(ctx)


def test_backslash_member_names_are_folders(paused):
    ctx, _ = paused
    rp = ctx.env.paths
    _labels_zip(ctx, rp.returned(0) / "labels.zip", NAMES, sep="\\")  # as some Windows tools write them
    assert resume(ctx) == "next"
    assert store.read_json(rp.review(0))["returned_labelled"] == 4
    files = sorted(f.relative_to(rp.unpacked(0)).as_posix() for f in rp.unpacked(0).rglob("*") if f.is_file())
    assert files == sorted(f"labels/{Path(p).stem}.txt" for p in _picks(ctx))
    _merged_labels_equal_truth(ctx, "local-package")


def test_unreadable_members_leave_nothing_behind(paused):
    ctx, _ = paused
    rp = ctx.env.paths
    _labels_zip(ctx, rp.returned(0) / "labels.zip", NAMES, {"labels/../../x.txt": "0 0.5 0.5 0.1 0.1\n"})
    rp.unpacked(0).mkdir(parents=True)
    (rp.unpacked(0) / "stale.txt").write_text("from an earlier import")
    with pytest.raises(ReviewError, match="refused, nothing extracted"):
        resume(ctx)
    _nothing_left(ctx)


# ----------------------------------------------------------------------------------------------------- class names

def test_reordered_data_yaml_classes_are_refused_with_the_fix_then_remapped_by_class_mapping(paused):
    ctx, _ = paused
    rp = ctx.env.paths
    order = sorted(NAMES)  # what a tool that sorts class names exports
    _labels_zip(ctx, rp.returned(0) / "labels.zip", order, {"data.yaml": yaml.safe_dump({"names": order})})
    with pytest.raises(ReviewError, match=r"labels\.zip: data\.yaml: class names \['four', 'one', 'three', 'two', "
                                          r"'zero'\] differ from the model's .*same names in another order.*"
                                          r"review\.local\.class_mapping: \{four: four, one: one"):
        resume(ctx)
    _nothing_left(ctx)
    ctx.env.cfg.review.local.class_mapping = {n: n for n in order}
    assert resume(ctx) == "next"
    _merged_labels_equal_truth(ctx, "local-package")


def test_an_extra_class_is_refused_and_classes_files_must_agree(paused):
    ctx, _ = paused
    rp = ctx.env.paths
    z = rp.returned(0) / "labels.zip"
    _labels_zip(ctx, z, NAMES, {"data.yaml": yaml.safe_dump({"names": [*NAMES, "five"]})})
    with pytest.raises(ReviewError, match=r"export-only \['five'\].*five: <a project class, or null to drop it>"):
        resume(ctx)
    _nothing_left(ctx)
    _labels_zip(ctx, z, NAMES, {"data.yaml": yaml.safe_dump({"names": NAMES}), "classes.txt": "\n".join(NAMES[::-1])})
    with pytest.raises(ReviewError, match=r"class names .* differ from .* Hand back one list of classes"):
        resume(ctx)
    _nothing_left(ctx)


def test_coco_categories_go_through_the_class_mapping(paused, tmp_path):
    ctx, _ = paused
    rp = ctx.env.paths
    coco = json.loads((rp.package(0) / "annotations_coco.json").read_text())
    coco["categories"][0]["name"] = "nought"
    for im in coco["images"]:
        im["file_name"] = "images\\" + im["file_name"]  # a Windows tool's path
    f = tmp_path / "c.json"
    f.write_text(json.dumps(coco))
    rules = imports.Rules(NAMES)
    with pytest.raises(ReviewError, match=r"categories \['nought'\] are not project classes.*class_mapping"):
        pkg.import_returned(f, rp.package(0), NAMES, rp.unpacked(0), rules=rules)
    rules = imports.Rules(NAMES, {"nought": "zero"})
    cands, summary = pkg.import_returned(f, rp.package(0), NAMES, rp.unpacked(0), rules=rules)
    assert summary["returned_labelled"] == 4 and summary["unedited_pre_annotations"] == 4
    rules = imports.Rules(NAMES, {"nought": None})
    cands, _ = pkg.import_returned(f, rp.package(0), NAMES, rp.unpacked(0), rules=rules)
    assert all(0 not in c.boxes[:, 0] for c in cands)


# ------------------------------------------------------------------------------------------- Roboflow-style exports

def _roboflow_export(root: Path, picks: list[str], order: list[str]) -> Path:
    """A YOLO export as Roboflow writes one: re-encoded files renamed <stem>_<ext>.rf.<hash>.jpg, split over train/
    and valid/, a data.yaml with ../train/images paths (and a test split it does not have), an augmented copy of the
    first pick and an image nobody picked."""
    def add(split: str, name: str, img: np.ndarray, text: str) -> None:
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        stem, ext = name.rsplit(".", 1)
        rf = f"{stem}_{ext}.rf.{hashlib.md5(data).hexdigest()}"
        for sub, suffix, blob in (("images", ".jpg", data), ("labels", ".txt", text.encode())):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            (root / split / sub / (rf + suffix)).write_bytes(blob)

    for i, p in enumerate(picks):
        add("train" if i % 2 == 0 else "valid", Path(p).name, cv2.imread(p), _truth(p, order))
    add("train", Path(picks[0]).name, cv2.imread(picks[0])[:, ::-1].copy(), "0 0.5 0.5 0.9 0.9\n")  # augmented
    add("valid", "someone_elses.jpg", np.full((48, 48, 3), 90, np.uint8), "0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "../train/images", "val": "../valid/images",
                                                    "test": "../test/images", "nc": len(order), "names": order}))
    (root / "README.roboflow.txt").write_text("exported from roboflow.com\n")
    return root


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_roboflow_export_in_returned_is_matched_back_to_the_picks(paused, tmp_path, form):
    ctx, _ = paused
    rp = ctx.env.paths
    export = _roboflow_export(tmp_path / "export", _picks(ctx), NAMES)
    if form == "zip":
        with zipfile.ZipFile(rp.returned(0) / "roboflow.zip", "w") as zf:
            for f in sorted(export.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(export).as_posix())
    else:
        shutil.copytree(export, rp.returned(0), dirs_exist_ok=True)
    assert resume(ctx) == "next"
    out = store.read_json(rp.review(0))
    assert out["returned_labelled"] == 4 and out["not_returned"] == [] and out["removed_from_val"] == 4
    assert out["ignored_not_selected"] == 1 and out["augmented_ignored"] == 1 and out["added_images"] == 4
    _merged_labels_equal_truth(ctx, "local-export")
    man = store.read_json(rp.manifest(1))
    assert all(".rf." in e["export_file"] for e in man["images"].values() if e["iteration_added"] == 0)


def test_a_roboflow_export_in_combined_dir_is_matched_back_to_the_picks(tmp_path, tiny_data):
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=4, active_learning={"require_human_review": False,
                                                                            "review_source": "manual"})
    order = sorted(NAMES)
    _roboflow_export(ctx.env.cfg.dataset.combined_dir, _picks(ctx), order)
    with pytest.raises(ReviewError, match=r"combined/data\.yaml: class names .*same names in another order"):
        review.run(ctx)
    ctx.env.cfg.review.local.class_mapping = {"zero": "zero"}  # any mapping remaps the rest by name
    assert review.run(ctx) == "next"
    out = store.read_json(ctx.env.paths.review(0))
    assert out["returned_labelled"] == 4 and out["removed_from_val"] == 4 and out["augmented_ignored"] == 1
    assert out["added_images"] == 5  # the picks and, as seed 004's export, the image nobody picked
    _merged_labels_equal_truth(ctx, "combined")


def test_ultralytics_path_rules_for_data_yaml(tmp_path):
    root = tmp_path / "export"
    (root / "train" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "images" / "a.jpg")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../train/images\nnames: [x]\n")
    spec = dataset.read_data_yaml(root / "data.yaml")
    assert spec.splits["train"] == [str((root / "train" / "images" / "a.jpg").resolve())]
    (root / "data.yaml").write_text("train: ../train/images\nval: ../nowhere/images\nnames: [x]\n")
    with pytest.raises(DatasetError, match="key 'val' = '../nowhere/images'"):
        dataset.read_data_yaml(root / "data.yaml")
    assert dataset.read_data_yaml(root / "data.yaml", require_splits=False).splits["val"] == []


# ----------------------------------------------------------------------------------------------- names and builds

def _images(folder: Path, names: list[str]) -> list[str]:
    out = []
    for i, n in enumerate(names):
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20, 3), 30 * i, np.uint8)).save(p)
        out.append(str(p))
    return out


@pytest.mark.parametrize("files", [["d/a.jpg", "d/a.png"], ["x/a.jpg", "y/a.jpg"], ["d/A.jpg", "d/a.png"]])
def test_picks_with_one_stem_get_their_own_label_files(tmp_path, files):
    imgs = _images(tmp_path, files)
    records = {p: {"width": 20, "height": 20, "pred": [[i, 0.9, 2.0, 2.0, 10.0 + i, 10.0]]} for i, p in
               enumerate(imgs)}
    res = pkg.build(tmp_path / "pkg", None, [{"image": p} for p in imgs], records, ["a", "b"], iteration=0, conf=0.5,
                    thumbnails=False)
    names = [e["name"] for e in store.read_json(tmp_path / "pkg" / "package.json")["images"]]
    stems = [Path(n).stem.lower() for n in names]
    assert len(set(stems)) == 2 and res["images"] == 2
    assert sorted(f.stem.lower() for f in (tmp_path / "pkg" / "labels").iterdir()) == sorted(stems)
    ret = Path(res["returned_dir"])
    (ret / f"{Path(names[0]).stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (ret / f"{Path(names[1]).stem}.txt").write_text("1 0.3 0.3 0.2 0.2\n1 0.7 0.7 0.2 0.2\n")
    cands, summary = pkg.import_returned(ret, tmp_path / "pkg", ["a", "b"], tmp_path / "unpacked")
    by = {c.pick: c for c in cands}
    assert summary["returned_labelled"] == 2 and len(by[imgs[0]].boxes) == 1 and len(by[imgs[1]].boxes) == 2
    assert len({Path(c.name).stem.lower() for c in cands}) == 2  # and so in the merged dataset


def test_a_name_two_items_share_matches_neither():
    m = imports.Matcher([{"name": "a.jpg", "hash": "1"}, {"name": "a.png", "hash": "2"}])
    assert m.find("a.txt") is None and m.find("a.png")["hash"] == "2"
    assert m.find("a_png.rf.0123abcd.txt")["hash"] == "2" and m.find("sub\\a.jpg")["hash"] == "1"


_FS_OPS = [(shutil, "rmtree"), (shutil, "copyfile"), (shutil, "move"), (os, "replace"), (os, "rename"),
           (os, "unlink"), (Path, "replace"), (Path, "rename"), (Path, "unlink")]


def test_a_kill_anywhere_in_package_build_leaves_returned_intact(tmp_path, monkeypatch):
    imgs = _images(tmp_path / "d", ["a.jpg", "b.jpg"])
    records = {p: {"width": 20, "height": 20, "pred": [[0, 0.9, 2.0, 2.0, 10.0, 10.0]]} for p in imgs}
    out = tmp_path / "pkg"

    def build():
        return pkg.build(out, tmp_path / "pkg.zip", [{"image": p} for p in imgs], records, ["a"], iteration=0,
                         conf=0.5, thumbnails=False)

    build()
    (out / "returned" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # the human's work
    (out / "returned" / "sub").mkdir()
    (out / "returned" / "sub" / "b.txt").write_text("")

    calls = {"n": 0, "kill_at": 0}

    def killing(fn):
        def wrapped(*a, **kw):
            calls["n"] += 1
            if calls["n"] == calls["kill_at"]:
                raise KeyboardInterrupt("killed")
            return fn(*a, **kw)
        return wrapped

    for mod, name in _FS_OPS:
        monkeypatch.setattr(mod, name, killing(getattr(mod, name)))
    kills = 0
    for kill_at in range(1, 500):
        calls.update(n=0, kill_at=kill_at)
        try:
            build()
        except KeyboardInterrupt:
            kills += 1
            assert (out / "returned" / "a.txt").read_text() == "0 0.5 0.5 0.2 0.2\n", f"kill {kill_at}"
            assert (out / "returned" / "sub" / "b.txt").is_file(), f"kill {kill_at}"
            continue
        break
    assert kills > 5  # many points of the build were tried
    calls["kill_at"] = 0
    build()  # a clean rebuild after the last kill
    assert (out / "returned" / "a.txt").read_text() == "0 0.5 0.5 0.2 0.2\n"
    assert store.read_json(out / "package.json")["images"][0]["name"] == "a.jpg"
    assert not (tmp_path / ".pkg.tmp").exists()
