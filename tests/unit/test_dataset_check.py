"""The one dataset check (al.data.check): the rules Ultralytics' training applies, refused or skipped up front and on
every merge, cached per file, and a training run that never writes into the user's dataset folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from al.app.session import open_run
from al.cli import main
from al.core import store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.events import Message
from al.core.paths import RunPaths
from al.data import check, dataset, manifest
from al.data.labels import BadLabelsError, Labelled, read_norm_labels
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
NC = 5  # the demo's classes


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the tiny demo set (the tests break its files); returns its data.yaml."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_data.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    spec = yaml.safe_load((dst / "data.yaml").read_text())
    spec["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dst / "data.yaml"


def _split(data_yaml: Path, split: str = "train") -> list[str]:
    return dataset.read_data_yaml(data_yaml).splits[split]


def _all(data_yaml: Path) -> list[str]:
    spec = dataset.read_data_yaml(data_yaml)
    return [p for v in spec.splits.values() for p in v]


def _append(image: str, line: str) -> tuple[Path, int]:
    """Append a line to the image's label file; (label file, its line number)."""
    lp = dataset.label_path(image)
    text = lp.read_text() if lp.is_file() else ""
    lp.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")
    return lp, len(lp.read_text().splitlines())


def _ultralytics_refuses(image: str, nc: int = NC) -> bool:
    """Whether Ultralytics' own training scan (verify_image_label) drops this image as corrupt."""
    from ultralytics.data.utils import verify_image_label

    res = verify_image_label((image, str(dataset.label_path(image)), "", False, nc, 0, 0, False))
    return res[8] == 1


# ------------------------------------------------------------------------------------------------ label rules

BAD_LINES = [  # (line, what is wrong, how to fix)
    ("7 0.5 0.5 0.2 0.2", "class 7 is outside 0..4", "add the class to names in data.yaml"),
    ("-1 0.5 0.5 0.2 0.2", "class -1 is negative", "use a class id 0..4"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not an integer", "use a class id 0..4"),
    ("0 abc 0.5 0.2 0.2", "field 2 'abc' is not a number", "write cls xc yc w h"),
    ("0 0.5 0.5 0.2", "4 fields; a box needs 5", "complete the line or delete it"),
    ("0 0.5 0.5 0.2 0.2 0.93", "6 fields; a box has 5", "drop the 6th field"),
    ("0 1.5 0.5 0.2 0.2", "coordinate 1.5 is above 1", "lies inside the image"),
    ("0 64 64 20 20", "look like pixels", "divide x and w by the image width (128) and y and h by its height (128)"),
    ("0 -0.3 0.5 0.2 0.2", "negative coordinate -0.3", "lies inside the image"),
    ("0 0.5 0.5 -0.1 0.2", "negative coordinate -0.1", "lies inside the image"),
    ("0 nan 0.5 0.2 0.2", "field 2 is 'nan' (not a finite number)", "write the real value"),
    ("0 0.5 inf 0.2 0.2", "field 3 is 'inf' (not a finite number)", "write the real value"),
    ("0 0.1 0.1 0.3 0.1 0.3 0.3 0.1", "polygon with an odd number of coordinates (7)", "give each point an x and a y"),
]
GOOD_LINES = [  # within Ultralytics' tolerances, or a polygon: trained on as they are
    "0 0.5 0.5 0.2 0.2",
    "4 1.005 0.5 0.2 0.2",
    "2 -0.005 0.5 0.2 0.2",
    "3 0.1 0.1 0.3 0.1 0.3 0.3",
]


@pytest.mark.parametrize("line,what,fix", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_label_line_is_named_by_file_line_what_and_fix(data, line, what, fix):
    img = _split(data)[3]
    lp, no = _append(img, line)
    rep = check.check_images(_all(data), NC)
    assert len(rep.problems) == 1, rep.describe()
    p = rep.problems[0]
    assert p.image == img and str(p) == f"{lp}:{no}: {p.what} → {p.fix}"
    assert what in p.what and fix in p.fix
    assert _ultralytics_refuses(img)  # the same image Ultralytics' training would drop as corrupt


@pytest.mark.parametrize("line", GOOD_LINES)
def test_lines_ultralytics_trains_on_pass(data, line):
    img = _split(data)[3]
    lp = dataset.label_path(img)
    lp.write_text(line + "\n")
    assert check.check_images([img], NC).problems == []
    assert not _ultralytics_refuses(img)


def test_box_rows_mixed_into_polygon_rows_are_refused_like_ultralytics(data):
    img = _split(data)[0]
    lp = dataset.label_path(img)
    lp.write_text("0 0.1 0.1 0.3 0.1 0.3 0.3\n1 0.5 0.5 0.2 0.2\n")
    (p,) = check.check_images([img], NC).problems
    assert p.line == 2 and "a box row in a file of polygon rows (line 1)" in p.what
    assert _ultralytics_refuses(img)


def test_non_utf8_label_file_is_refused(data):
    img = _split(data)[0]
    dataset.label_path(img).write_bytes(b"0 0.5 0.5 0.2 0.2\n\xff\xfe\x00 junk\n")
    (p,) = check.check_images([img], NC).problems
    assert "not UTF-8 text" in p.what and "save the label file as plain UTF-8" in p.fix


def test_duplicate_rows_are_counted_and_dropped_by_the_loops_reader_too(data):
    img = _split(data)[0]
    lp = dataset.label_path(img)
    lp.write_text("\ufeff0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n")  # with a byte-order mark
    rep = check.check_images([img], NC)
    assert rep.problems == [] and rep.duplicates == {str(lp): 1}
    boxes = dataset.read_labels(lp, NC, 100, 100)
    assert boxes[:, 0].tolist() == [0, 1]  # the BOM'd first line is read, the duplicate row is not


def test_nan_in_a_label_no_longer_crashes_the_reader(data):
    img = _split(data)[0]
    lp = dataset.label_path(img)
    lp.write_text("nan 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")
    assert dataset.read_labels(lp, NC, 100, 100)[:, 0].tolist() == [1]


# ------------------------------------------------------------------------------------------------ image rules

def _bad_images(folder: Path, good_jpg: str) -> dict[str, tuple[str, str]]:
    """A corpus of images training cannot use: name -> (what is wrong, how to fix)."""
    (folder / "text.jpg").write_text("hello, I am not a picture\n")
    (folder / "empty.png").write_bytes(b"")
    raw = Path(good_jpg).read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    Image.new("RGB", (5, 5)).save(folder / "tiny.png")
    Image.new("RGB", (32, 32)).save(folder / "gif_named.png", format="GIF")
    return {"text.jpg": ("not an image Pillow can read (the file starts with b'hello, I am not ", "real JPEG or PNG"),
            "empty.png": ("empty file (0 bytes)", "replace it with the real image"),
            "truncated.jpg": ("truncated JPEG (image file is truncated", "re-export or re-download"),
            "tiny.png": ("image is 5x5 px; training drops images under 10 px", "use a larger image"),
            "gif_named.png": ("GIF image data", "convert it to JPEG or PNG")}


def test_images_training_cannot_read_are_named_with_the_cause(data):
    train = _split(data)
    folder = Path(train[0]).parent
    corpus = _bad_images(folder, train[1])
    rep = check.check_images(_split(data), NC)
    got = {Path(p.file).name: p for p in rep.problems}
    assert set(got) == set(corpus), rep.describe()
    for name, (what, fix) in corpus.items():
        p = got[name]
        assert str(p) == f"{folder / name}: {p.what} → {p.fix}" and what in p.what and fix in p.fix
        assert "pi_heif" not in str(p) and "ModuleNotFoundError" not in str(p)
        assert _ultralytics_refuses(str(folder / name))


def test_jpeg_rule_decoding_decides_when_the_end_marker_is_missing(data):
    img, cut = _split(data)[:2]
    raw = Path(img).read_bytes()
    assert raw.endswith(b"\xff\xd9")
    Path(img).write_bytes(raw + b"\x00trailer")  # decodes: Ultralytics re-saves it (in the run's mirror of links)
    assert check.check_images([img], NC).problems == []
    assert not _ultralytics_refuses(img)
    Path(cut).write_bytes(Path(cut).read_bytes()[:-2])  # does not decode: Ultralytics drops it
    (p,) = check.check_images([cut], NC).problems
    assert "truncated JPEG" in p.what and _ultralytics_refuses(cut)


# ------------------------------------------------------------------------------------------------ the run

def test_dry_run_refuses_bad_data_before_anything_trains(tmp_path, data, capsys):
    train = _split(data)
    lp, no = _append(train[2], "9 0.5 0.5 0.2 0.2")
    (Path(train[0]).parent / "notes.jpg").write_text("not an image")
    before = sorted(str(p) for p in data.parent.rglob("*"))
    cfgp = make_config(tmp_path, data)
    assert main(["--config", str(cfgp), "--headless", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "2 problems in 2 of" in err and "nothing was trained" in err
    assert f"{lp}:{no}: class 9 is outside 0..4" in err and "on_bad_data: skip" in err
    assert f"{Path(train[0]).parent / 'notes.jpg'}: not an image Pillow can read" in err
    run = RunPaths(load_config(cfgp).run_dir)
    assert not run.state.exists() and not run.dataset_root.exists()
    report = store.read_json(run.data_check_report)
    assert report["action"] == "refused" and len(report["problems"]) == 2
    assert sorted(str(p) for p in data.parent.rglob("*")) == before


def test_skip_leaves_bad_images_out_with_a_warning_and_a_count(tmp_path, data, capsys):
    train, val = _split(data), _split(data, "val")
    _append(train[2], "0 64 64 20 20")
    _append(val[1], "0 nan 0.5 0.2 0.2")
    cfgp = make_config(tmp_path, data, dataset__on_bad_data="skip", active_learning__max_iterations=1)
    cfg = load_config(cfgp)
    events = []
    open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners(events.append))
    warn = [e for e in events if isinstance(e, Message) and e.level == "warning" and "[DATASET]" in e.text]
    assert len(warn) == 1 and "2 problems in 2 of" in warn[0].text and "leaves these 2 images out" in warn[0].text
    ver, splits = dataset.read_snapshot(RunPaths(cfg.run_dir).dataset_version(0))
    assert train[2] not in splits["train"] and val[1] not in splits["val"]
    assert len(splits["train"]) == len(train) - 1 and ver["data_check"]["skipped_images"] == 2
    # the whole dry run goes on, and its iteration report counts what was left out
    shutil.rmtree(cfg.run_dir)
    assert main(["--config", str(cfgp), "--headless", "--dry-run"]) == 0
    assert "leaves these 2 images out of training and validation" in capsys.readouterr().out
    report = store.read_json(RunPaths(cfg.run_dir).iteration_report(0))
    assert report["bad_data_skipped"] == {"dataset": 2, "review": 0}


def test_check_is_cached_per_file_and_resume_rechecks_only_changes(tmp_path, data):
    cache = tmp_path / "check.json"
    images = _all(data)
    first = check.check_images(images, NC, cache=cache)
    assert first.checked == len(images) and first.problems == []
    again = check.check_images(images, NC, cache=cache)
    assert again.checked == 0 and again.problems == []
    lp, no = _append(images[5], "0 0.5 0.5 0.2")
    os.utime(lp, ns=(lp.stat().st_atime_ns, lp.stat().st_mtime_ns + 10**9))
    third = check.check_images(images, NC, cache=cache)
    assert third.checked == 1 and [(p.file, p.line) for p in third.problems] == [(str(lp), no)]
    assert check.check_images(images, NC + 1, cache=cache).checked == len(images)  # other classes: all again


def test_resume_refuses_a_file_that_went_bad_even_under_skip(tmp_path, data):
    cfg = load_config(make_config(tmp_path, data, dataset__on_bad_data="skip"))
    open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=Listeners())
    lp, no = _append(_split(data, "val")[4], "12 0.5 0.5 0.2 0.2")
    with pytest.raises(check.BadDataError) as e:
        open_run(cfg, resume=True, start_iteration=None, dry_run=True, auto=False, ui=Listeners())
    assert f"{lp}:{no}: class 12 is outside 0..4" in str(e.value) and "--start-iteration" in str(e.value)


# ------------------------------------------------------------------------------------------------ merges

def _merge(tmp_path, data, cands, on_bad_data="refuse"):
    spec = dataset.read_data_yaml(data)
    splits = {k: spec.splits[k] for k in ("train", "val", "test")}
    man = manifest.build_initial(splits, "config", with_phash=False)
    run = RunPaths(tmp_path / "run")
    return manifest.merge(man, splits, cands, iteration=0, img_dir=run.added_images(0), lbl_dir=run.added_labels(0),
                          nc=NC, iou=0.5, near_distance=None, on_bad_data=on_bad_data), run


def test_merge_refuses_an_unreadable_reviewed_image_and_writes_nothing(tmp_path, data):
    fake = tmp_path / "returned.jpg"
    fake.write_text("<html>not found</html>")
    good = _split(data, "val")[0]
    box = np.array([[1, 0.2, 0.2, 0.4, 0.5]])
    cands = [Labelled(str(fake), box, "local-package", "human"),
             Labelled(good, box, "local-package", "human", pick=good)]  # a picked val image: it moves to train
    with pytest.raises(check.BadDataError) as e:
        _merge(tmp_path, data, cands)
    assert f"{fake}: not an image Pillow can read" in str(e.value) and "nothing was merged" in str(e.value)
    assert not (tmp_path / "run").exists()
    res, _ = _merge(tmp_path, data, cands, on_bad_data="skip")
    assert len(res.added) == 1 and len(res.bad_data) == 1 and str(fake) in res.bad_data[0]
    assert res.diff(0)["bad_data_skipped"] == res.bad_data


def test_merge_refuses_nan_and_out_of_range_boxes(tmp_path, data):
    img = _split(data, "val")[0]
    cands = [Labelled(img, np.array([[0, np.nan, 0.2, 0.4, 0.5], [7, 0.1, 0.1, 0.2, 0.2]]), "coco", "human")]
    with pytest.raises(check.BadDataError) as e:
        _merge(tmp_path, data, cands)
    assert "box 1: a value is NaN or infinite" in str(e.value) and "box 2: class 7 is outside 0..4" in str(e.value)


def test_returned_label_file_with_a_bad_line_is_refused_naming_the_line(tmp_path):
    f = tmp_path / "returned" / "a.txt"
    f.parent.mkdir()
    f.write_text("0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(BadLabelsError) as e:
        read_norm_labels(f, NC)
    assert f"{f}:2: class 9 is outside 0..4" in str(e.value) and "--resume" in str(e.value)
    f.write_text("0 0.5 0.5 0.2 0.2\n")
    assert read_norm_labels(f, NC).shape == (1, 5)


# ------------------------------------------------------------------------------------------------ data.yaml, mirror

def test_data_yaml_nc_must_match_names(tmp_path, data):
    spec = yaml.safe_load(data.read_text())
    bad = tmp_path / "nc.yaml"
    bad.write_text(yaml.safe_dump({**spec, "names": ["a", "b"], "nc": 3}, sort_keys=False))
    with pytest.raises(dataset.DatasetError) as e:
        dataset.read_data_yaml(bad)
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if t.startswith("nc:"))
    assert f"{bad}:{line}: key 'nc' = 3 but 'names' lists 2 classes" in str(e.value)
    bad.write_text(yaml.safe_dump({**spec, "nc": 5}, sort_keys=False))
    assert len(dataset.read_data_yaml(bad).names) == 5


def test_data_yaml_duplicate_key_is_refused(tmp_path, data):
    dup = tmp_path / "dup.yaml"
    dup.write_text(data.read_text() + "train: images/val\n")
    with pytest.raises(dataset.DatasetError, match=r"dup\.yaml:\d+: key 'train' is given twice"):
        dataset.read_data_yaml(dup)


def test_snapshot_trains_on_a_mirror_of_links_inside_the_run(tmp_path, data):
    spec = dataset.read_data_yaml(data)
    ver_dir = tmp_path / "run" / "dataset" / "v000"
    dataset.write_snapshot(ver_dir, spec.names, spec.splits, {"version": 0})
    y = yaml.safe_load((ver_dir / "data.yaml").read_text())
    assert y["train"] == "yolo/train/images" and y["val"] == "yolo/val/images"
    links = sorted((ver_dir / y["train"]).iterdir())
    assert sorted(str(p.resolve()) for p in links) == sorted(spec.splits["train"])
    for link in links:
        lbl = ver_dir / "yolo" / "train" / "labels" / f"{link.stem}.txt"
        src_lbl = dataset.label_path(str(link.resolve()))
        assert lbl.is_file() == src_lbl.is_file() and (not lbl.is_file() or lbl.resolve() == src_lbl.resolve())
    assert dataset.read_snapshot(ver_dir)[1]["train"] == spec.splits["train"]  # the loop still sees the originals


@pytest.mark.slow
def test_training_never_writes_into_the_users_dataset_folder(tmp_path, data):
    before = {str(p): p.stat().st_mtime_ns for p in data.parent.rglob("*")}
    cfgp = make_config(tmp_path, data, active_learning__max_iterations=1)
    res = subprocess.run([sys.executable, str(ROOT / "al_loop.py"), "--config", str(cfgp), "--headless"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run = RunPaths(load_config(cfgp).run_dir)
    assert run.best(0).is_file()
    assert {str(p): p.stat().st_mtime_ns for p in data.parent.rglob("*")} == before  # nothing new, nothing changed
    assert (run.dataset_version(0) / "yolo" / "train" / "labels.cache").is_file()  # Ultralytics' cache went here
    assert " 0 corrupt" in run.training_log(0).read_text()
