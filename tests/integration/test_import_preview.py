"""The review screen's import preview (al.app.api.preview_import): the review step's own import run dry. It writes
nothing, and the real import of the same returned labels reports the same counts."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import zipfile
from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml

from al.app.api import ImportPreview, preview_import
from al.core import store
from al.core.context import Options
from al.core.errors import ReviewError
from al.data import dataset
from al.steps import review
from tests.integration.test_review_support import resume, run_at_review

NAMES = ["zero", "one", "two", "three", "four"]
COUNTS = [f.name for f in fields(ImportPreview) if f.type == "int"]


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under roots with its size and mtime: any write shows up as a difference."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")] if root.exists() else []:
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _scratch() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "al-import-preview-*")))


def _dry(ctx, *also: Path) -> ImportPreview:
    """preview_import, checked to leave the run tree, the label sources and the temp folder as they were."""
    roots = (ctx.env.paths.root, *also)
    before, scratch = _tree(*roots), _scratch()
    pv = preview_import(ctx)
    assert _tree(*roots) == before, "the preview wrote something"
    assert _scratch() <= scratch, "the preview left its scratch folder behind"
    assert not ctx.env.paths.unpacked(ctx.iteration).exists()
    return pv


def _agrees(pv: ImportPreview, k: int, ctx) -> dict:
    out = store.read_json(ctx.env.paths.review(k))
    assert {c: getattr(pv, c) for c in COUNTS if c != "train_images"} == \
        {c: out.get(c, 0) for c in COUNTS if c != "train_images"}
    return out


@pytest.fixture
def paused(tmp_path, tiny_data):
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=4)
    assert review.run(ctx) == "pause"  # the package is written; the human has the picks
    return ctx, rec


def _export(ctx, tiny_data: Path, out: Path) -> None:
    """A YOLO export: the training split again (duplicates), two picks relabelled, a test image, two pool images."""
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(0))
    picks = [p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]
    pool = sorted((tiny_data.parent / "pool" / "images").iterdir())[:2]
    for src in [*map(Path, splits["train"] + picks[:2] + splits["test"][:1]), *pool]:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, out / "images" / src.name)
        lbl = dataset.label_path(src) if src not in pool else tiny_data.parent / "pool" / "labels_hidden" / (
            src.stem + ".txt")
        shutil.copy(lbl, out / "labels" / (src.stem + ".txt"))
    with (out / "labels" / (Path(picks[0]).stem + ".txt")).open("a") as fh:
        fh.write("3 0.5 0.5 0.2 0.2\n")  # the human's fix
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images", "names": NAMES}))


def test_preview_of_a_yolo_export_writes_nothing_and_matches_the_import(paused, tiny_data):
    ctx, rec = paused
    combined = ctx.env.cfg.dataset.combined_dir
    _export(ctx, tiny_data, combined)
    n_events = len(rec.events)
    pv = _dry(ctx, combined)
    assert len(rec.events) == n_events  # a preview says nothing on the bus (nor in al_loop.log)
    assert pv.error is None and pv.changed and pv.source.startswith("YOLO dataset")
    assert (pv.added_images, pv.removed_from_val, pv.skipped_test_duplicates) == (4, 2, 1)
    assert pv.duplicates_dropped == len(dataset.read_snapshot(ctx.env.paths.dataset_version(0))[1]["train"])
    assert pv.headline().startswith(f"+4 images, +{pv.added_boxes} boxes from YOLO dataset")
    assert resume(ctx) == "next"
    _agrees(pv, 0, ctx)


def test_preview_of_a_zipped_export_in_returned_unpacks_outside_the_run(paused):
    """A zip holding a YOLO export: the merge reads the images from the unpacked zip, so the preview's scratch
    folder lives until the merge is done, and is gone afterwards."""
    ctx, _ = paused
    rp = ctx.env.paths
    pkg = rp.package(0)
    z = rp.returned(0) / "export.zip"
    names = sorted(f.name for f in (pkg / "images").iterdir())[:3]
    with zipfile.ZipFile(z, "w") as zf:
        for n in names:
            zf.write(pkg / "images" / n, f"export/images/{n}")
            zf.write(pkg / "labels" / (Path(n).stem + ".txt"), f"export/labels/{Path(n).stem}.txt")
        zf.writestr("export/data.yaml", yaml.safe_dump({"path": ".", "train": "images", "val": "images",
                                                        "names": NAMES}))
    pv = _dry(ctx)
    assert pv.error is None and (pv.returned_labelled, pv.added_images, pv.removed_from_val) == (3, 3, 3)
    assert resume(ctx) == "next"
    _agrees(pv, 0, ctx)


def test_preview_flags_unreviewed_returned_labels_and_matches_the_import(paused):
    ctx, _ = paused
    rp = ctx.env.paths
    for f in sorted((rp.package(0) / "labels").iterdir())[:2]:
        shutil.copy(f, rp.returned(0) / f.name)  # handed back exactly as pre-annotated
    pv = _dry(ctx)
    assert pv.unreviewed and not pv.changed and pv.unedited_pre_annotations == 2 and pv.added_images == 2
    assert "(unreviewed?)" in pv.summary()
    assert resume(ctx) == "next"  # the import takes them (with a warning): the same counts
    _agrees(pv, 0, ctx)


def test_preview_error_is_the_imports_error(paused):
    ctx, _ = paused
    pv = _dry(ctx)  # nothing returned, no export in dataset.combined_dir
    assert not pv.changed and pv.error.startswith("Dataset not found")
    with pytest.raises(ReviewError) as e:
        resume(ctx)
    assert str(e.value) == pv.error


def test_preview_of_human_labels_for_pseudo_labels_counts_the_relabels(tmp_path, tiny_data):
    """--auto in iteration 0 (previewed too), then a human export of those images in iteration 1."""
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=3, active_learning={"pseudo_label_conf": 0.5,
                                                                              "require_human_review": False})
    ctx.env = replace(ctx.env, opts=Options(auto=True))
    pv = _dry(ctx)
    assert pv.source == "pseudo-labels" and pv.added_images == 3
    assert review.run(ctx) == "next"
    _agrees(pv, 0, ctx)
    man = store.read_json(ctx.env.paths.manifest(1))
    pseudo = [p for p, e in man["images"].items() if e["label_origin"] == "pseudo"]
    ctx.env = replace(ctx.env, opts=Options(auto=False))
    ctx.state.iteration = 1
    store.write_json(ctx.env.paths.validation(1), {"iteration": 1, "images": []})
    store.write_json(ctx.env.paths.hard_examples(1), {"iteration": 1, "picks": []})
    combined = ctx.env.cfg.dataset.combined_dir
    (combined / "images").mkdir(parents=True)
    (combined / "labels").mkdir()
    for p in pseudo:
        dst = combined / "images" / Path(p).name
        shutil.copy(p, dst)
        shutil.copy(dataset.label_path(man["images"][p]["origin"]), dataset.label_path(dst))
    (combined / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images",
                                                        "names": NAMES}))
    pv = _dry(ctx, combined)
    assert pv.relabelled == 3 and pv.added_images == 3 and pv.changed
    assert review.run(ctx) == "next"
    _agrees(pv, 1, ctx)


def test_roboflow_labels_are_unknown_until_the_download(tmp_path, tiny_data):
    ctx, _ = run_at_review(tmp_path, tiny_data, review_cfg={"backend": "roboflow", "roboflow": {"project": "p"}})
    pv = _dry(ctx)
    assert pv.unknown and not pv.changed and pv.picks == 4 and pv.error is None
