"""The link names of a dataset version's mirror: the same images get the same names wherever the run and the dataset
live (Ultralytics trains in the order of the names), and the names stay unique."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from al.data import dataset


def _image(folder: Path, name: str, content: bytes, label: str | None = None) -> str:
    img = folder / "images" / name
    img.parent.mkdir(parents=True, exist_ok=True)
    img.write_bytes(content)
    if label is not None:
        lbl = folder / "labels" / f"{Path(name).stem}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text(label)
    return str(img.resolve())


@pytest.fixture
def images(tmp_path) -> list[str]:
    """Five images of one folder, a negative among them."""
    src = tmp_path / "data"
    return [_image(src, f"img_{i}.jpg", f"pixels {i}".encode(), None if i == 3 else f"{i % 2} 0.5 0.5 0.2 0.2\n")
            for i in range(5)]


def _by_name(names: dict[str, str]) -> dict[str, str]:
    return {n: img for img, n in names.items()}


def _by_label(names: dict[str, str]) -> dict[str, str]:
    return {dataset.label_path(img).read_text(): n for img, n in names.items()}


def _listing(root: Path) -> tuple[list[str], list[str]]:
    return sorted(os.listdir(root / "images")), sorted(os.listdir(root / "labels"))


def test_the_same_images_in_two_folders_get_the_same_names(tmp_path, images):
    moved = tmp_path / "elsewhere" / "deeper" / "data"
    shutil.copytree(Path(images[0]).parents[1], moved)
    copies = [str(moved / "images" / Path(i).name) for i in images]
    names = dataset.mirror_names(images)
    assert list(names.values()) == list(dataset.mirror_names(copies).values())
    assert len(set(names.values())) == len(images)
    assert [dataset.mirror_name(i) for i in images] == [dataset.mirror_name(c) for c in copies]
    assert list(dataset.mirror_names(images[::-1]).values()) == list(names.values())[::-1]  # not by list order

    splits = {"train": images, "val": images[:2], "test": []}
    moved_splits = {"train": copies, "val": copies[:2], "test": []}
    a, b = tmp_path / "run_a" / "dataset" / "v000", tmp_path / "other" / "run_b" / "dataset" / "v000"
    dataset.write_snapshot(a, ["zero", "one"], splits, {"version": 0})
    dataset.write_snapshot(b, ["zero", "one"], moved_splits, {"version": 0})
    for split in ("train", "val"):
        assert _listing(a / dataset.MIRROR / split) == _listing(b / dataset.MIRROR / split)
    imgs, labels = _listing(a / dataset.MIRROR / "train")
    assert len(imgs) == 5 and len(labels) == 4  # the negative has no label link
    for link in (a / dataset.MIRROR / "train" / "images").iterdir():  # each link names its own image and label
        lbl = a / dataset.MIRROR / "train" / "labels" / f"{link.stem}.txt"
        assert lbl.is_file() == dataset.label_path(link.resolve()).is_file()
        assert not lbl.is_file() or lbl.resolve() == dataset.label_path(link.resolve())


def test_copies_of_one_image_under_one_name_get_unique_names_ordered_by_their_labels(tmp_path):
    """Byte-identical images with the same file name from different folders (a dataset listing two copies), with
    different labels: unique names, and which copy gets which name follows the labels, not the folders."""
    def three(root: Path, order: list[int]) -> list[str]:
        made = [_image(root / f"part{i}", "same.jpg", b"one image", f"{i} 0.5 0.5 0.1 0.1\n") for i in range(3)]
        return [made[i] for i in order]

    first = three(tmp_path / "a", [0, 1, 2])
    second = three(tmp_path / "b" / "x", [2, 0, 1])  # other folders, listed in another order
    n1, n2 = dataset.mirror_names(first), dataset.mirror_names(second)
    assert len(set(n1.values())) == 3
    assert _by_label(n1) == _by_label(n2)
    prefix = dataset.mirror_names([first[0]])[first[0]].split("_")[0]
    assert set(n1.values()) == {f"{prefix}_same.jpg", f"{prefix}-1_same.jpg", f"{prefix}-2_same.jpg"}

    root = tmp_path / "mirror"
    dataset.link_mirror(root, first)
    imgs, labels = _listing(root)
    assert imgs == sorted(n1.values()) and labels == sorted(Path(n).stem + ".txt" for n in n1.values())
    for link in (root / "images").iterdir():  # each label link belongs to its own copy's label file
        assert (root / "labels" / f"{link.stem}.txt").resolve() == dataset.label_path(_by_name(n1)[link.name])
    # what validate does, one image at a time: the names it expects are the links, each mapped back to its copy
    assert {dataset.mirror_name(i): i for i in first} == _by_name(n1)


def test_label_links_stay_unique_when_only_the_suffix_or_the_case_differs(tmp_path):
    imgs = [_image(tmp_path / "p", "a.jpg", b"bytes", "0 0.5 0.5 0.1 0.1\n"),
            _image(tmp_path / "q", "a.png", b"bytes", "1 0.5 0.5 0.1 0.1\n"),
            _image(tmp_path / "r", "A.jpg", b"bytes", "2 0.5 0.5 0.1 0.1\n")]
    root = tmp_path / "mirror"
    dataset.link_mirror(root, imgs)
    images, labels = _listing(root)
    assert len(images) == 3 and len({n.lower() for n in labels}) == 3


def test_an_unreadable_image_is_still_linked(tmp_path, images):
    gone = str(tmp_path / "data" / "images" / "gone.jpg")
    names = dataset.mirror_names([*images, gone])
    assert names[gone] == "unreadable_gone.jpg" and len(set(names.values())) == 6
    dataset.link_mirror(tmp_path / "mirror", [*images, gone])
    assert "unreadable_gone.jpg" in os.listdir(tmp_path / "mirror" / "images")


def test_validate_maps_each_copy_back_in_a_process_that_did_not_write_the_mirror(tmp_path, monkeypatch):
    """validate names one image at a time (mirror_name): in a fresh process it re-links a split whose copies share a
    plain name, and then maps every validated link back to its own copy."""
    import numpy as np

    from al.steps import validate
    from al.yolo.detector import Prediction
    from al.yolo.validator import ImageEval, SplitEval

    copies = [_image(tmp_path / f"part{i}", "same.jpg", b"one image", f"{i} 0.5 0.5 0.1 0.1\n") for i in range(2)]
    val = [*copies, _image(tmp_path / "part0", "other.jpg", b"another image", "1 0.5 0.5 0.1 0.1\n")]
    root = tmp_path / "v000" / dataset.MIRROR / "val"
    dataset.link_mirror(root, val)
    written = _listing(root)
    monkeypatch.setattr(dataset, "_given", {})  # what a resumed run's new process knows
    validate._ensure_mirror(root, val)
    assert _listing(root) == written
    empty = np.zeros((0, 4))
    links = sorted((root / "images").iterdir())
    res = SplitEval(images=[ImageEval(Prediction(str(link), 8, 8, empty, empty[:, 0], empty[:, 0]), {})
                            for link in links], map50=0.0, map50_95=0.0)
    keyed = validate._keyed(res, val, tmp_path / "val.txt")
    assert sorted(keyed) == sorted(val)
    assert [e.pred.path for e in res.images] == [str(link.resolve()) for link in links]  # each link's own copy
