"""The local annotation package: out (folder + zip), edit, back in (YOLO folder, zip, COCO JSON); zip-slip refusal."""

from __future__ import annotations

import json
import shutil
import stat
import zipfile

import numpy as np
import pytest

from al.core import store
from al.core.events import ReviewRequired
from al.data import dataset
from al.review import ReviewError, read_norm_labels
from al.review import package as pkg
from al.steps import review
from tests.integration.test_review_support import resume, run_at_review


@pytest.fixture
def paused(tmp_path, tiny_data):
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=4)
    assert review.run(ctx) == "pause"
    return ctx, rec


def test_package_holds_images_yolo_coco_previews_guidelines_and_zip(paused):
    ctx, rec = paused
    rp = ctx.env.paths
    d = rp.package(0)
    picks = store.read_json(ctx.env.paths.hard_examples(0))["picks"]
    names = store.read_json(ctx.env.paths.dataset_version(0) / "version.json")["names"]
    assert sorted(p.name for p in (d / "images").iterdir()) == sorted(p["image"].rsplit("/", 1)[1] for p in picks)
    coco = json.loads((d / "annotations_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == names and len(coco["images"]) == 4
    # pre-annotations are the predictions at or above validation.conf (the 0.05 stray box is left out)
    n_gt = 0
    for p in picks:
        stem = p["image"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        lines = (d / "labels" / f"{stem}.txt").read_text().splitlines()
        gt = dataset.label_path(p["image"]).read_text().splitlines()
        assert len(lines) == len(gt)
        n_gt += len(gt)
    assert len(coco["annotations"]) == n_gt and all(a["score"] == 0.9 for a in coco["annotations"])
    assert (d / "classes.txt").read_text().split() == names
    assert len(list((d / "thumbnails").glob("*.jpg"))) == 4 and (d / "contact_sheet.jpg").stat().st_size > 0
    assert "correct them, do not trust them" in (d / "GUIDELINES.md").read_text()
    with zipfile.ZipFile(rp.package_zip(0)) as zf:
        members = zf.namelist()
    assert "review_package/GUIDELINES.md" in members and "review_package/annotations_coco.json" in members
    assert sum(m.startswith("review_package/images/") for m in members) == 4
    assert rp.returned(0).is_dir() and rp.review_request(0).is_file()
    info = rec.of(ReviewRequired)[0].info
    assert info["package"]["images"] == 4 and "local annotation package" in info["backend_status"]


def test_round_trip_edit_labels_and_import_back(paused):
    ctx, rec = paused
    rp = ctx.env.paths
    d, back = rp.package(0), rp.returned(0)
    picks = [p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]
    stems = [p.rsplit("/", 1)[1].rsplit(".", 1)[0] for p in picks]
    for f in (d / "labels").iterdir():
        shutil.copy(f, back / f.name)
    # the human: fixes a class in the first image, marks the second as having no objects, does not return the
    # fourth, and adds a box to the third
    first = (back / f"{stems[0]}.txt").read_text().splitlines()
    first[0] = "4 " + first[0].split(" ", 1)[1]
    (back / f"{stems[0]}.txt").write_text("\n".join(first) + "\n")
    (back / f"{stems[1]}.txt").write_text("")
    with (back / f"{stems[2]}.txt").open("a") as fh:
        fh.write("1 0.5 0.5 0.2 0.2\n")
    (back / f"{stems[3]}.txt").unlink()
    expected = {i: read_norm_labels(back / f"{stems[i]}.txt", 5) for i in range(3)}

    assert resume(ctx) == "next"
    out = store.read_json(ctx.env.paths.review(0))
    assert out["mode"] == "manual" and out["backend"] == "local"
    assert out["returned_labelled"] == 3 and out["negatives"] == 1 and out["not_returned"] == [
        picks[3].rsplit("/", 1)[1]]
    assert out["added_images"] == 3 and out["removed_from_val"] == 3 and out["val_changed"] is True
    assert out["added_boxes"] == sum(len(v) for v in expected.values())
    ver, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(1))
    assert set(picks[:3]).isdisjoint(splits["val"]) and picks[3] in splits["val"]  # moved, not copied
    for i in range(3):
        added = ctx.env.paths.added_labels(0) / f"{stems[i]}.txt"
        np.testing.assert_allclose(read_norm_labels(added, 5), expected[i], atol=1e-5)
    man = store.read_json(rp.manifest(1))
    entries = [man["images"][p] for p in splits["train"] if p.startswith(str(ctx.env.paths.added_images(0)))]
    assert len(entries) == 3
    assert all(e["source"] == "local-package" and e["label_origin"] == "human" and e["iteration_added"] == 0
               and e["moved_from"] == "val" and e["origin"] in picks for e in entries)
    assert man["dataset_version"] == ver["id"] and man["counts"]["train"]["human"] == 3
    v0 = store.read_json(rp.manifest(0))
    assert {e["label_origin"] for e in v0["images"].values()} == {"dataset"}
    diff = store.read_json(rp.manifest_diff(1))
    assert sorted(diff["moved_from_val"]) == sorted(picks[:3]) and len(diff["added"]) == 3
    # re-running the step (a resume after a crash) gives the same version
    assert resume(ctx) == "next"
    assert dataset.read_snapshot(ctx.env.paths.dataset_version(1))[0]["id"] == ver["id"]


def test_import_from_zip_and_from_coco(paused, tmp_path):
    ctx, _ = paused
    rp = ctx.env.paths
    d = rp.package(0)
    names = store.read_json(d / "package.json")["names"]
    z = tmp_path / "labels.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted((d / "labels").iterdir())[:2]:
            zf.write(f, f"labels/{f.name}")
    cands, summary = pkg.import_returned(z, d, names, rp.unpacked(0))
    assert summary["returned_labelled"] == 2 and summary["unedited_pre_annotations"] == 2
    assert summary["source"].startswith("zip")

    coco = json.loads((d / "annotations_coco.json").read_text())
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 1]  # image 1: now a negative
    (tmp_path / "c.json").write_text(json.dumps(coco))
    cands, summary = pkg.import_returned(tmp_path / "c.json", d, names, rp.unpacked(0))
    assert summary["returned_labelled"] == 4 and summary["negatives"] >= 1
    by = {c.name: c for c in cands}
    first = coco["images"][1]
    yolo = read_norm_labels(d / "labels" / (first["file_name"].rsplit(".", 1)[0] + ".txt"), 5)
    np.testing.assert_allclose(by[first["file_name"]].boxes, yolo, atol=1e-4)  # COCO and YOLO say the same

    coco["categories"][0]["name"] = "zer0"
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(ReviewError, match=r"categories \['zer0'\] are not project classes"):
        pkg.import_returned(tmp_path / "bad.json", d, names, rp.unpacked(0))


def _zip(path, members: dict[str, bytes], link: str | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")


@pytest.mark.parametrize("evil", ["../escape.txt", "labels/../../escape.txt", "/tmp/al_zip_slip_escape.txt",
                                  "C:/escape.txt", "..\\escape.txt", "link"])
def test_zip_slip_is_refused_before_anything_is_extracted(paused, tmp_path, evil):
    ctx, _ = paused
    rp = ctx.env.paths
    z = rp.returned(0) / "labels.zip"
    good = {"labels/a.txt": b"0 0.5 0.5 0.1 0.1\n"}
    if evil == "link":
        _zip(z, good, link="labels/b.txt")
    else:
        _zip(z, {**good, evil: b"pwned"})
    with pytest.raises(ReviewError, match="refused, nothing extracted"):
        resume(ctx)
    assert not rp.unpacked(0).exists()  # not even the harmless member was written
    assert not (tmp_path / "escape.txt").exists() and not (ctx.env.paths.root / "escape.txt").exists()
    assert not (ctx.env.paths.iteration(0) / "escape.txt").exists()
    from pathlib import Path
    assert not Path("/tmp/al_zip_slip_escape.txt").exists()
    assert not ctx.env.paths.review(0).exists()


def test_returned_labels_that_match_no_image_are_refused(paused):
    ctx, _ = paused
    (ctx.env.paths.returned(0) / "renamed_by_tool.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ReviewError, match="none of the returned labels belongs to an image of the package"):
        resume(ctx)


def test_unreviewed_pre_annotations_are_flagged(paused):
    ctx, rec = paused
    rp = ctx.env.paths
    for f in (rp.package(0) / "labels").iterdir():
        shutil.copy(f, rp.returned(0) / f.name)
    assert resume(ctx) == "next"
    assert any("equals the model's pre-annotation" in m for m in rec.messages())
