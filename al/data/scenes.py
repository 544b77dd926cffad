"""What the scene generators (al.data.demo: digits, al.data.synthetic: shapes and symbols) share: the record of a
painted object, clipping a patch to the image, boxes, luma, photo crops, YOLO label text, and the dataset folder
(checked, built beside the target, renamed into place).

Each generator's images and labels are pinned byte for byte by the tests (benchmarks regenerate their data from
them): a change here that moves one pixel, one random draw or one float rounding changes every dataset.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import yaml

from al.core.errors import UserError

log = logging.getLogger("al")

Box = tuple[int, int, int, int]
Slices = tuple[slice, slice]
MANIFEST_KEY = ("schema", "generator", "generator_version", "seed", "size", "min_size", "counts", "names")


@dataclass(frozen=True)
class PaintedObject:
    """One painted object: class id, the pixel box [x1, y1, x2, y2) of its visible paint (x2/y2 exclusive), and
    whether it was painted in low contrast."""

    cls: int
    box: Box
    low_contrast: bool


Obj = TypeVar("Obj", bound=PaintedObject)


# ---------------------------------------------------------------------------------------------- painting scenes


def drop_faint(alpha: np.ndarray, cut: float) -> np.ndarray:
    """`alpha` as float32 with opacities below `cut` set to 0, so every painted pixel lies inside the object's box."""
    alpha = alpha.astype(np.float32)
    alpha[alpha < cut] = 0.0
    return alpha


def overlap(x0: int, y0: int, patch: tuple[int, ...], image: tuple[int, ...]) -> tuple[Slices, Slices] | None:
    """(image slices, patch slices) of the part of a patch of shape (h, w), its top-left at (x0, y0) and possibly
    off-image, that lies inside an image of shape (h, w); None when no part does."""
    ph, pw = patch[:2]
    h, w = image[:2]
    ix1, iy1, ix2, iy2 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return (slice(iy1, iy2), slice(ix1, ix2)), (slice(iy1 - y0, iy2 - y0), slice(ix1 - x0, ix2 - x0))


def mask_box(mask: np.ndarray, isl: Slices) -> Box | None:
    """The image pixel box [x1, y1, x2, y2) of the set pixels of `mask`, which lies at the image slices `isl`;
    None when no pixel is set."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    x1, y1 = int(isl[1].start), int(isl[0].start)
    return x1 + int(cols[0]), y1 + int(rows[0]), x1 + int(cols[-1]) + 1, y1 + int(rows[-1]) + 1


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes [x1, y1, x2, y2)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def luma(bgr) -> float:
    """Mean luma (BT.601) of one BGR colour or of an array of BGR pixels, computed in float32."""
    b, g, r = np.asarray(bgr, np.float32)[..., :3].reshape(-1, 3).mean(axis=0)
    return float(0.114 * b + 0.587 * g + 0.299 * r)


def random_crop(rng: np.random.Generator, photos: Sequence[np.ndarray], min_side: int, min_share: float
                ) -> np.ndarray:
    """A square crop of a random photo at a random place, its side a random share (min_share..1) of the photo's
    short side but at least min_side pixels."""
    photo = photos[int(rng.integers(len(photos)))]
    H, W = photo.shape[:2]
    side = max(min_side, int(min(H, W) * rng.uniform(min_share, 1.0)))
    y, x = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    return photo[y:y + side, x:x + side]


def resize_square(crop: np.ndarray, size: int) -> np.ndarray:
    """A square crop resized to size x size (area-averaged when shrinking) as float32."""
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp).astype(np.float32)


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (no torch for Ultralytics); None if absent."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# -------------------------------------------------------------------------------------------- writing datasets


def yolo_lines(objects: Iterable[PaintedObject], width: int, height: int) -> str:
    """Objects -> YOLO label text 'cls xc yc w h', normalised, 6 decimals (empty for a negative image)."""
    return "".join(f"{o.cls} {(o.box[0] + o.box[2]) / 2 / width:.6f} {(o.box[1] + o.box[3]) / 2 / height:.6f} "
                   f"{(o.box[2] - o.box[0]) / width:.6f} {(o.box[3] - o.box[1]) / height:.6f}\n" for o in objects)


def class_counts(per_image: Iterable[Sequence[PaintedObject]], n_classes: int) -> list[int]:
    """Objects per class over a split's images."""
    counts = [0] * n_classes
    for objects in per_image:
        for o in objects:
            counts[o.cls] += 1
    return counts


def split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    """(images, labels) folders of a split; the pool's labels are hidden from training."""
    if split == "pool":
        return root / "pool" / "images", root / "pool" / "labels_hidden"
    return root / "images" / split, root / "labels" / split


def sha1(path: Path) -> str:
    """The sha1 of a file's bytes (hex)."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def sources_table(names: Sequence[str], images: Sequence[np.ndarray], files: Sequence[Path]) -> str:
    """Markdown rows 'name | WxH | sha1 prefix' of the source images a dataset is made of."""
    return "\n".join(f"| {n} | {img.shape[1]}x{img.shape[0]} | `{sha1(f)[:12]}` |"
                     for n, img, f in zip(names, images, files))


def manifest_json(m: dict) -> str:
    """One top-level key per line, values compact: readable, and the long index lists stay on one line."""
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in m.items())
    return "{\n" + body + "\n}\n"


@dataclass(frozen=True)
class Output:
    """A generator's dataset folder: what messages call it, its manifest and provenance file names, the error it
    raises and its JPEG quality. The manifest's MANIFEST_KEY entries identify a dataset."""

    what: str
    manifest: str
    readme: str
    error: type[UserError]
    jpeg_quality: int

    def check(self, out_dir: Path, manifest: dict) -> bool:
        """True when out_dir already holds this exact dataset; False when it is absent or empty; raises otherwise."""
        if not out_dir.exists():
            return False
        fix = "Delete it or choose another --out folder."
        if not out_dir.is_dir():
            raise self.error(f"{out_dir}: exists and is not a folder. {fix}")
        if not any(out_dir.iterdir()):
            return False
        mf = out_dir / self.manifest
        if not mf.is_file():
            raise self.error(f"{out_dir}: folder is not empty and is not a {self.what} (no {self.manifest}); "
                             f"nothing was written or deleted. {fix}")
        try:
            old = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise self.error(f"{mf}: unreadable manifest; nothing was written or deleted. {fix}") from None
        if not isinstance(old, dict) or any(old.get(k) != manifest.get(k) for k in MANIFEST_KEY):
            got = ({k: old[k] for k in MANIFEST_KEY if k in old and k not in ("schema", "names")}
                   if isinstance(old, dict) else old)
            raise self.error(f"{out_dir}: holds another {self.what} ({got}); nothing was written or deleted. {fix}")
        for split, n in manifest["counts"].items():
            idir, ldir = split_dirs(out_dir, split)
            n_img = len(list(idir.glob("*.jpg"))) if idir.is_dir() else 0
            n_lab = len(list(ldir.glob("*.txt"))) if ldir.is_dir() else 0
            if n_img != n or n_lab != n:
                raise self.error(f"{out_dir}: {self.what} is incomplete ({split}: {n_img} images, {n_lab} labels, "
                                 f"expected {n}). {fix}")
        if not (out_dir / "data.yaml").is_file():
            raise self.error(f"{out_dir}: {self.what} has no data.yaml. {fix}")
        return True

    def write_split(self, root: Path, split: str, renders: Iterable[tuple[np.ndarray, list[Obj]]]
                    ) -> list[list[Obj]]:
        """Write each rendered (image, objects) of a split as <split>_<i>.jpg and .txt; returns the objects per
        image."""
        idir, ldir = split_dirs(root, split)
        idir.mkdir(parents=True, exist_ok=True)
        ldir.mkdir(parents=True, exist_ok=True)
        per_image = []
        for i, (img, objects) in enumerate(renders):
            stem = f"{split}_{i:05d}"
            if not cv2.imwrite(str(idir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]):
                raise self.error(f"{idir / (stem + '.jpg')}: could not write the image. Check disk space and "
                                 f"permissions of {root.parent}.")
            (ldir / f"{stem}.txt").write_text(yolo_lines(objects, img.shape[1], img.shape[0]), encoding="utf-8")
            per_image.append(objects)
        return per_image

    def build(self, out_dir: Path, manifest: dict, names: Sequence[str], fill: Callable[[Path], str]) -> Path:
        """Write the dataset into a hidden temp folder beside out_dir and rename it into place; returns data.yaml.
        `fill(folder)` writes the splits, adds its figures to `manifest` and returns the provenance text."""
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A crash leaves only the hidden temp folder, never a half dataset.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            readme = fill(tmp)
            data = {"path": str(out_dir), "train": "images/train", "val": "images/val", "test": "images/test",
                    "names": dict(enumerate(names))}
            (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            (tmp / self.readme).write_text(readme, encoding="utf-8")
            (tmp / self.manifest).write_text(manifest_json(manifest), encoding="utf-8")
            try:
                os.rename(tmp, out_dir)  # replaces a missing or empty folder atomically
            except OSError:
                if self.check(out_dir, manifest):  # another process finished the same dataset first
                    shutil.rmtree(tmp, ignore_errors=True)
                    return out_dir / "data.yaml"
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("%s written to %s", self.what, out_dir)
        return out_dir / "data.yaml"
