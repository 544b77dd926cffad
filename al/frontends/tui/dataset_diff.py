"""What continuing the review would import (run on a worker thread, never on the UI thread).

Mirrors where the review step (al/states/review.py, local backend) takes the human's labels from, in its order:
review.local.import_from, else the package's returned/ folder, else the YOLO export in dataset.combined_dir. For a
YOLO dataset it counts the images whose content is neither in the current training set nor in the frozen test split;
for returned label files, the picks that came back and whether they differ from the pre-annotations. Roboflow labels
are only known after the download, which the review step itself does.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from al.core.store import StoreError
from al.data import dataset

_hashes: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _hash(path: str) -> str:
    """Content hash, cached by (path, size, mtime) so re-checking a large export is cheap."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    with _lock:
        h = _hashes.get(key)
    if h is None:
        h = dataset.file_hash(path)
        with _lock:
            _hashes[key] = h
    return h


@dataclass(frozen=True)
class DatasetDiff:
    combined_dir: str | None
    """The source checked: the YOLO export or the folder/zip/JSON of returned labels."""
    version: str = ""
    """Id of the run's current dataset version."""
    train_images: int = 0
    train_boxes: int = 0
    combined_images: int = 0
    combined_boxes: int = 0
    new_images: int = 0
    new_boxes: int = 0
    test_duplicates: int = 0
    picks_returned: int = 0
    picks: int = 0
    error: str | None = None
    kind: str = "export"
    """export (a YOLO dataset), returned (label files for the package's picks), missing (nothing to import yet) or
    roboflow (unknown until the download)."""
    unedited: int = 0
    """Returned label files identical to the model's pre-annotations."""
    negatives: int = 0

    @property
    def unknown(self) -> bool:
        """Nothing can be checked before continuing (Roboflow: the review step downloads the labels)."""
        return self.kind == "roboflow"

    @property
    def changed(self) -> bool:
        """True when continuing would bring reviewed labels into training."""
        if self.error is not None:
            return False
        if self.kind == "returned":
            return self.picks_returned > self.unedited
        return self.new_images > 0

    def headline(self) -> str:
        """One line for the log when the human continues."""
        if self.error:
            return f"with nothing to import ({self.error.split('. ')[0]})"
        if self.kind == "roboflow":
            return "(labels are downloaded from Roboflow)"
        if self.kind == "returned":
            return (f"{self.picks_returned}/{self.picks} picks came back ({self.new_boxes} boxes) from "
                    f"{self.combined_dir}")
        return f"+{self.new_images} images, +{self.new_boxes} boxes from {self.combined_dir}"

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.kind == "roboflow":
            return ("Roboflow: the reviewed labels are downloaded when you continue; the import then reports what "
                    "came back.")
        if self.kind == "returned":
            lines = [f"Returned labels {self.combined_dir}:",
                     f"{self.picks_returned}/{self.picks} picks came back, {self.new_boxes} boxes, "
                     f"{self.negatives} without objects",
                     f"Training set now (dataset version {self.version}): {self.train_images} images, "
                     f"{self.train_boxes} boxes"]
            if self.unedited:
                lines.append(f"{self.unedited} returned label files equal the model's pre-annotations (unreviewed?)")
            return "\n".join(lines)
        lines = [f"Export {self.combined_dir}: {self.combined_images} images, {self.combined_boxes} boxes",
                 f"Training set now (dataset version {self.version}): {self.train_images} images, "
                 f"{self.train_boxes} boxes",
                 f"New for training: +{self.new_images} images, +{self.new_boxes} boxes "
                 f"({self.picks_returned}/{self.picks} picked images are in the export)"]
        if self.test_duplicates:
            lines.append(f"{self.test_duplicates} exported images equal test images and will be skipped")
        return "\n".join(lines)


def compute(combined_dir: str | Path | None, version_dir: Path, picks: list[dict]) -> DatasetDiff:
    """Compare the export in `combined_dir` with the dataset version in `version_dir`."""
    n_picks = len(picks)
    if not combined_dir:
        return DatasetDiff(None, picks=n_picks, kind="missing",
                           error="dataset.combined_dir is not set in the config: there is no export to import. "
                                 "Continuing will fail the review step (the run stays resumable).")
    cdir = Path(combined_dir)
    yml = cdir / "data.yaml"
    if not yml.is_file():
        return DatasetDiff(str(cdir), picks=n_picks, kind="missing",
                           error=f"No export yet: {yml} not found. Export the reviewed dataset in YOLO format there. "
                                 f"Continuing now will fail the review step (the run stays resumable).")
    try:
        ver, splits = dataset.read_snapshot(version_dir)
        spec = dataset.read_data_yaml(yml)
    except (dataset.DatasetError, StoreError, OSError) as e:
        return DatasetDiff(str(cdir), picks=n_picks, error=str(e))
    names = list(ver.get("names") or spec.names)
    if spec.names != names:
        return DatasetDiff(str(cdir), picks=n_picks, error=f"{yml}: class names {spec.names} differ from the "
                           f"run's {names}; export with the same classes in the same order.")
    nc = len(names)
    exported = list(dict.fromkeys(spec.splits["train"] + spec.splits["val"]))
    try:
        train_hashes = {_hash(p) for p in splits["train"]}
        test_hashes = {_hash(p) for p in splits["test"]}
        new, dup_test, seen = [], 0, set()
        for p in exported:
            h = _hash(p)
            if h in test_hashes:
                dup_test += 1
            elif h not in train_hashes and h not in seen:
                seen.add(h)
                new.append(p)
    except OSError as e:
        return DatasetDiff(str(cdir), picks=n_picks, error=f"Cannot read {e.filename}: {e.strerror}")
    exported_names = {Path(p).name for p in exported}
    return DatasetDiff(
        str(cdir), version=str(ver.get("id", "")), train_images=len(splits["train"]),
        train_boxes=sum(dataset.class_counts(splits["train"], nc)), combined_images=len(exported),
        combined_boxes=sum(dataset.class_counts(exported, nc)), new_images=len(new),
        new_boxes=sum(dataset.class_counts(new, nc)), test_duplicates=dup_test,
        picks_returned=sum(Path(p.get("image", "")).name in exported_names for p in picks), picks=n_picks)


def _returned(src: Path, info: dict, version_dir: Path, picks: list[dict]) -> DatasetDiff:
    """Label files returned for the annotation package: how many picks came back, and edited or not."""
    import numpy as np

    from al.review import ReviewError, read_norm_labels
    from al.review import package as pkg_mod

    n_picks = len(picks)
    pkg_dir = Path(info.get("package_dir") or "")
    try:
        ver, splits = dataset.read_snapshot(version_dir)
        pkg = pkg_mod.load_package(pkg_dir)
        names = list(pkg["names"])
        with tempfile.TemporaryDirectory() as unpack:  # a returned zip is read, not unpacked into the run
            labels, what = pkg_mod.read_returned(src, pkg, names, Path(unpack))
    except (ReviewError, StoreError, dataset.DatasetError, OSError, ValueError, KeyError) as e:
        return DatasetDiff(str(src), picks=n_picks, kind="returned", error=f"Cannot read the returned labels: {e}")
    by_image = {e["image"]: e for e in pkg["images"]}
    unedited = 0
    for img, boxes in labels.items():
        pre = read_norm_labels(pkg_dir / "labels" / (Path(by_image[img]["name"]).stem + ".txt"), len(names))
        if len(pre) and pre.shape == boxes.shape and np.allclose(pre, boxes, atol=1e-4):
            unedited += 1
    return DatasetDiff(
        what, version=str(ver.get("id", "")), train_images=len(splits["train"]),
        train_boxes=sum(dataset.class_counts(splits["train"], len(names))), new_boxes=sum(len(b) for b in
                                                                                          labels.values()),
        picks_returned=len(labels), picks=n_picks, kind="returned", unedited=unedited,
        negatives=sum(1 for b in labels.values() if not len(b)))


def preview(info: dict, version_dir: Path) -> DatasetDiff:
    """What continuing would import, from the ReviewRequired info (same source order as the review step)."""
    picks = list(info.get("picks") or [])
    if info.get("backend") == "roboflow":
        return DatasetDiff(None, picks=len(picks), kind="roboflow")
    returned = info.get("returned_dir")
    src = None
    if returned:
        from al.review.local import label_source

        configured = info.get("configured_import_from")
        kind, where = label_source(Path(configured) if configured else None, Path(returned), None)
        src = where if kind != "combined" else None
    if src is not None and not (src.is_dir() and (src / "data.yaml").is_file()):
        return _returned(src, info, version_dir, picks)
    diff = compute(src or info.get("combined_dir"), version_dir, picks)
    if src is None and returned and diff.kind == "missing":
        where = f" or export the reviewed dataset (with data.yaml) to {diff.combined_dir}" if diff.combined_dir else ""
        return DatasetDiff(diff.combined_dir, picks=len(picks), kind="missing",
                           error=f"No reviewed labels yet: put the corrected labels in {returned}{where}. Continuing "
                                 f"now will fail the review step (the run stays resumable).")
    return diff
