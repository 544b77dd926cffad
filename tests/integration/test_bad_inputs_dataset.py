"""Dataset inputs the loop used to take silently: each is refused at start-up (naming the files and the fix) or
repaired with a one-line warning on the console and in the iteration report; the user's files stay byte-identical."""

from __future__ import annotations

import hashlib
import shutil
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from al.app.session import open_run
from al.cli import main
from al.core import store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.events import Message
from al.core.paths import RunPaths
from al.data import check, dataset
from tests.conftest import make_config

NC = 5  # the demo's classes


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the tiny demo set (the tests change its files); returns its folder."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_data.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    spec = yaml.safe_load((dst / "data.yaml").read_text())
    (dst / "data.yaml").write_text(yaml.safe_dump({**spec, "path": str(dst)}, sort_keys=False))
    return dst


def _digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links too) -> SHA-1 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def _start(tmp_path: Path, data: Path, **overrides) -> tuple[RunPaths, list[str]]:
    """Open a fresh dry run on `data`; its run paths and the [DATASET] warnings it printed."""
    cfg = load_config(make_config(tmp_path, data / "data.yaml", **overrides))
    events: list = []
    open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners(events.append))
    return RunPaths(cfg.run_dir), [e.text for e in events if isinstance(e, Message) and e.level == "warning"
                                   and e.text.startswith("[DATASET]")]


def _label(image: Path) -> Path:
    return dataset.yolo_label_path(image)


# ------------------------------------------------------------------------------- names in two Unicode normal forms

@pytest.mark.parametrize("image_form,label_form", [("NFC", "NFD"), ("NFD", "NFC")])
def test_label_named_in_another_normal_form_is_found_and_trained_on(tmp_path, data, image_form, label_form):
    train = sorted((data / "images" / "train").iterdir())
    name, other = (unicodedata.normalize(f, "café_01") for f in (image_form, label_form))
    assert name != other
    image = train[1].rename(train[1].with_name(f"{name}.jpg"))
    label = _label(train[1]).rename(_label(train[1]).with_name(f"{other}.txt"))
    boxes = label.read_text()
    before = _digests(data)
    assert not _label(image).exists()  # by path string, as Ultralytics looks it up, the image has no labels

    run, warnings = _start(tmp_path, data)

    assert dataset.label_path(image) == label and dataset.read_labels(label, NC, 128, 128).shape[0] > 0
    assert warnings == [f"[DATASET] WARNING: 1 label file named in another Unicode normal form than the image (e.g. "
                        f"{label}, {label_form}, for {image.resolve()}, {image_form}): matched by NFC, and training "
                        f"reads it through a link named like the image; rename the label file to the image's spelling "
                        f"for other tools to match it too"]
    # the mirror Ultralytics trains from names the label link like the image, so its own look-up finds the boxes
    from ultralytics.data.utils import img2label_paths, verify_image_label

    (link,) = [p for p in (run.dataset_version(0) / dataset.MIRROR / "train" / "images").iterdir() if name in p.name]
    (found,) = img2label_paths([str(link)])
    assert Path(found).read_text() == boxes
    assert verify_image_label((str(link), found, "", False, NC, 0, 0, False))[6] == 1  # label found
    ver = store.read_json(run.dataset_version(0) / "version.json")
    assert ver["data_check"]["label_names_matched_by_nfc"] == {str(label): str(image.resolve())}
    assert _digests(data) == before


# ------------------------------------------------------------------------------- two images, one label file

def _png_twin(data: Path) -> tuple[Path, Path, Path]:
    """train_00000.png beside train_00000.jpg: the two share train_00000.txt."""
    jpg = sorted((data / "images" / "train").iterdir())[0]
    png = jpg.with_suffix(".png")
    cv2.imwrite(str(png), np.flipud(cv2.imread(str(jpg))))
    return jpg.resolve(), png.resolve(), _label(jpg)


def test_two_images_sharing_one_label_file_are_refused_at_start(tmp_path, data, capsys):
    jpg, png, label = _png_twin(data)
    before = _digests(data)
    cfgp = make_config(tmp_path, data / "data.yaml")

    assert main(["--config", str(cfgp), "--headless", "--dry-run"]) == 2

    err = capsys.readouterr().err
    assert "1 problem in 2 of 61 images whose label file another image shares, so nothing was trained" in err
    assert (f"{label}: the label file of 2 images, {jpg} and {png} (one name, other extensions): training would "
            f"give each of them these boxes → rename one of the images (e.g. train_00000.png to "
            f"train_00000_png.png) and give it its own label file, or none if it shows no objects") in err
    assert "or set dataset.on_bad_data: skip" in err
    run = RunPaths(load_config(cfgp).run_dir)
    assert not run.dataset_root.exists()
    assert store.read_json(run.data_check_report)["bad_images"] == sorted([str(jpg), str(png)])
    assert _digests(data) == before


def test_skip_leaves_both_images_that_share_a_label_file_out(tmp_path, data):
    jpg, png, label = _png_twin(data)
    before = _digests(data)

    run, warnings = _start(tmp_path, data, dataset__on_bad_data="skip")

    (warn,) = warnings
    assert warn.startswith("[DATASET] WARNING: 1 problem in 2 of 61 images whose label file another image shares; "
                           "dataset.on_bad_data: skip leaves these 2 images out of training and validation:")
    assert f"{label}: the label file of 2 images, {jpg} and {png}" in warn
    _, splits = dataset.read_snapshot(run.dataset_version(0))
    assert not {str(jpg), str(png)} & set(splits["train"])
    assert _digests(data) == before


# ------------------------------------------------------------------------------- repairs the user now hears of

def _clip(data: Path) -> tuple[str, str]:
    lp = _label(sorted((data / "images" / "train").iterdir())[2])
    n = len(lp.read_text().splitlines())
    with lp.open("a") as fh:
        fh.write("3 0.95 0.5 0.2 0.2\n")  # x from 0.85 to 1.05: past the right edge
    return (f"[DATASET] WARNING: 1 box in 1 label file past the image edge (e.g. {lp}:{n + 1}), clipped to the image "
            f"by the loop's validation as by training's augmentation: check the line if the box belongs elsewhere",
            "boxes_clipped")


def _zero_width(data: Path) -> tuple[str, str]:
    lp = _label(sorted((data / "images" / "val").iterdir())[1])
    n = len(lp.read_text().splitlines())
    with lp.open("a") as fh:
        fh.write("1 0.5 0.5 0 0.1\n")
    return (f"[DATASET] WARNING: 1 box of zero width or height in 1 label file (e.g. {lp}:{n + 1}): the loop's "
            f"validation ignores it, Ultralytics keeps it (its validation during training counts an object no model "
            f"can find): give the box its size, or delete the line", "boxes_empty")


def _orphan(data: Path) -> tuple[str, str]:
    lp = data / "labels" / "train" / "train_00099.txt"
    lp.write_text("1 0.5 0.5 0.2 0.2\n")
    (data / "labels" / "train" / "classes.txt").write_text("zero\none\n")  # a class list is not a label file
    run = RunPaths(data.parent / "run")
    return (f"[DATASET] WARNING: 1 label file of {data / 'data.yaml'} without an image, so nothing trains on its "
            f"boxes: add the image, or delete the label file if it is left over: {lp} (no train_00099.* in "
            f"{(data / 'images' / 'train').resolve()}) (all listed in {run.dataset_version(0) / 'version.json'})",
            "orphan_labels")


def _near_val(data: Path) -> tuple[str, str]:
    val = sorted((data / "images" / "val").iterdir())[3].resolve()
    train = sorted((data / "images" / "train").iterdir())[4].resolve()
    cv2.imwrite(str(train), np.clip(cv2.imread(str(val)).astype(int) + 2, 0, 255).astype(np.uint8))
    run = RunPaths(data.parent / "run")
    return (f"[DATASET] WARNING: 1 training images of {data / 'data.yaml'} are near-duplicates of validation images "
            f"(perceptual hash within review.near_duplicate_distance 5), so validation figures are optimistic, and "
            f"so are the convergence and promotion decisions made on them: {train} ~ val {val} (distance 0) (all "
            f"listed in {run.dataset_version(0) / 'version.json'})", "val_near_duplicates")


@pytest.mark.parametrize("make", [_clip, _zero_width, _orphan, _near_val], ids=lambda f: f.__name__.strip("_"))
def test_silent_repair_is_warned_in_one_line_and_recorded(tmp_path, data, make):
    text, key = make(data)
    before = _digests(data)

    run, warnings = _start(tmp_path, data)

    assert warnings == [text] and "\n" not in text
    ver = store.read_json(run.dataset_version(0) / "version.json")
    assert ver["warnings"] == [text] and (key in ver or key in ver["data_check"])
    assert _digests(data) == before


def test_zero_width_box_is_what_ultralytics_keeps_and_the_loop_drops(data):
    img = sorted((data / "images" / "val").iterdir())[1]
    lp = _label(img)
    kept = dataset.read_labels(lp, NC, 128, 128).shape[0]
    with lp.open("a") as fh:
        fh.write("1 0.5 0.5 0 0.1\n")
    from ultralytics.data.utils import verify_image_label

    assert len(verify_image_label((str(img), str(lp), "", False, NC, 0, 0, False))[1]) == kept + 1
    assert dataset.read_labels(lp, NC, 128, 128).shape[0] == kept
    assert check.check_images([str(img)], NC).empty == {str(lp): [kept + 1]}


def test_the_iteration_report_carries_the_start_up_warnings(tmp_path, data, capsys):
    clipped, _ = _clip(data)
    orphan, _ = _orphan(data)
    before = _digests(data)
    cfgp = make_config(tmp_path, data / "data.yaml", active_learning__max_iterations=1)

    assert main(["--config", str(cfgp), "--headless", "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert clipped in out and orphan in out
    report = store.read_json(RunPaths(load_config(cfgp).run_dir).iteration_report(0))
    assert report["dataset_warnings"] == [orphan, clipped]
    assert _digests(data) == before
