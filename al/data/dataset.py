"""YOLO datasets: read data.yaml, list split images, read labels, and write the run's versioned snapshots."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from al.core import store
from al.core.errors import UserError

log = logging.getLogger("al")

IMG_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class DatasetError(UserError):
    """A dataset file or folder is missing or malformed; the message names it and the fix."""


@dataclass
class DataSpec:
    """The splits and class names of one data.yaml, with every image as an absolute path."""

    yaml_path: Path
    names: list[str]
    splits: dict[str, list[str]] = field(default_factory=dict)


def _names(raw, where: Path) -> list[str]:
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: 'names' keys must be class ids 0..n-1, got {list(raw)[:5]}") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{where}: 'names' ids must be 0..{len(keys) - 1} without gaps, got {keys}")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise DatasetError(f"{where}: 'names' is missing or empty; list the class names, e.g. names: {{0: person}}")


def list_images(entry, root: Path, where: Path, key: str) -> list[str]:
    """Images of one split entry: a folder (recursive), a .txt list of paths, an image file, or a list of those."""
    if entry is None:
        return []
    if isinstance(entry, list):
        out: list[str] = []
        for e in entry:
            out += list_images(e, root, where, key)
        return out
    p = Path(str(entry))
    p = p if p.is_absolute() else root / p
    if p.is_dir():
        return sorted(str(f.resolve()) for f in p.rglob("*") if f.suffix.lower() in IMG_SUFFIXES)
    if p.suffix == ".txt" and p.is_file():
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        return [str((Path(ln) if Path(ln).is_absolute() else p.parent / ln).resolve()) for ln in lines]
    if p.suffix.lower() in IMG_SUFFIXES and p.is_file():
        return [str(p.resolve())]
    raise DatasetError(f"{where}: key '{key}' = {entry!r}: {p} not found. Fix the path (relative to "
                       f"'path:' {root}).")


def read_data_yaml(path: Path) -> DataSpec:
    """Parse an Ultralytics data.yaml. A relative `path:` resolves against the yaml's own folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset file not found. Point dataset.data_yaml at your data.yaml.") from None
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected keys path/train/val/names.")
    root = Path(str(raw.get("path") or "."))
    root = root if root.is_absolute() else (path.parent / root).resolve()
    names = _names(raw.get("names"), path)
    spec = DataSpec(yaml_path=path.resolve(), names=names)
    for key in ("train", "val"):
        if not raw.get(key):
            raise DatasetError(f"{path}: key '{key}' is required (a folder or .txt list of images).")
    for key in ("train", "val", "test"):
        spec.splits[key] = list_images(raw.get(key), root, path, key)
        if key != "test" and not spec.splits[key]:
            raise DatasetError(f"{path}: split '{key}' has no images. Check the folder or list it points to.")
    return spec


def label_path(image: str | Path) -> Path:
    """Ultralytics' convention: .../images/x.jpg -> .../labels/x.txt (last 'images' folder)."""
    p = Path(image)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return p.with_suffix(".txt")


def read_labels(path: Path, nc: int, width: int, height: int) -> np.ndarray:
    """YOLO label file -> (N,5) [cls, x1, y1, x2, y2] in pixels. Polygon lines become their bounding box.
    Bad lines are skipped with a warning naming file:line; a missing file means no objects (a negative)."""
    out = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return np.zeros((0, 5))
    for ln_no, line in enumerate(text.splitlines(), 1):
        vals = line.split()
        if not vals:
            continue
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            log.warning("%s:%d: not numbers, line skipped: %r", path, ln_no, line[:60])
            continue
        c = int(nums[0])
        if c != nums[0] or not 0 <= c < nc:
            log.warning("%s:%d: class %s outside 0..%d, line skipped", path, ln_no, vals[0], nc - 1)
            continue
        if len(nums) == 5:
            xc, yc, w, h = nums[1:]
            x1, y1, x2, y2 = xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
        elif len(nums) >= 7 and len(nums) % 2 == 1:
            xs, ys = nums[1::2], nums[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            log.warning("%s:%d: expected 'cls xc yc w h' (or a polygon), line skipped", path, ln_no)
            continue
        box = np.clip([x1 * width, y1 * height, x2 * width, y2 * height], 0, [width, height, width, height])
        if box[2] <= box[0] or box[3] <= box[1]:
            log.warning("%s:%d: empty box, line skipped", path, ln_no)
            continue
        out.append([c, *box])
    return np.asarray(out, dtype=np.float64).reshape(-1, 5)


def write_labels(path: Path, boxes: np.ndarray | list, width: int, height: int) -> None:
    """(N,5) pixel [cls,x1,y1,x2,y2] -> YOLO label file, atomically."""
    lines = []
    for c, x1, y1, x2, y2 in np.asarray(boxes, dtype=float).reshape(-1, 5):
        lines.append(f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    store.write_text_atomic(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def file_hash(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot_id(splits: dict[str, list[str]]) -> str:
    """Content id of a dataset version: each split's image names and sizes and its label files' bytes.
    Independent of where the run lives, cheap enough for large sets (no image decoding or hashing)."""
    h = hashlib.sha1()
    for key in sorted(splits):
        h.update(key.encode())
        for img in sorted(splits[key], key=lambda p: Path(p).name):
            h.update(f"{Path(img).name}:{Path(img).stat().st_size if Path(img).exists() else -1}".encode())
            lp = label_path(img)
            h.update(lp.read_bytes() if lp.is_file() else b"-")
    return h.hexdigest()[:10]


def write_snapshot(dir_: Path, names: list[str], splits: dict[str, list[str]], info: dict) -> dict:
    """Write dataset version folder: train/val/test .txt lists, a data.yaml Ultralytics can train on, version.json.
    The version.json is written last: its presence marks a complete snapshot."""
    dir_.mkdir(parents=True, exist_ok=True)
    data = {"path": str(dir_.resolve()), "names": dict(enumerate(names)), "nc": len(names)}
    for key, imgs in splits.items():
        if key == "test" and not imgs:
            continue
        store.write_text_atomic(dir_ / f"{key}.txt", "\n".join(imgs) + "\n")
        data[key] = f"{key}.txt"
    store.write_yaml(dir_ / "data.yaml", data)
    ver = {**info, "id": snapshot_id(splits), "counts": {k: len(v) for k, v in splits.items()}}
    store.write_json(dir_ / "version.json", ver)
    return ver


def read_snapshot(dir_: Path) -> tuple[dict, dict[str, list[str]]]:
    """Version info and split lists of a snapshot written by write_snapshot."""
    ver = store.read_json(dir_ / "version.json", required=("id", "counts"))
    splits = {}
    for key in ("train", "val", "test"):
        f = dir_ / f"{key}.txt"
        splits[key] = [ln for ln in f.read_text().splitlines() if ln] if f.is_file() else []
    return ver, splits


def class_counts(images: list[str], nc: int) -> list[int]:
    """Boxes per class over the label files of `images` (no image decoding needed)."""
    counts = [0] * nc
    for img in images:
        lp = label_path(img)
        if not lp.is_file():
            continue
        for line in lp.read_text().splitlines():
            vals = line.split()
            if vals:
                try:
                    c = int(float(vals[0]))
                except ValueError:
                    continue
                if 0 <= c < nc:
                    counts[c] += 1
    return counts
