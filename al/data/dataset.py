"""YOLO datasets: read data.yaml, list split images, read labels, and write the run's versioned snapshots."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al.core import store
from al.core.config import ConfigError, parse_yaml
from al.core.errors import UserError
from al.data import hashing

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


def _split_entry(entry, root: Path):
    """Ultralytics' rule (check_det_dataset): a '../x' split entry that does not exist under the root is read as
    'x'. Roboflow's exports write `train: ../train/images` in a data.yaml that sits beside train/."""
    if isinstance(entry, str) and entry.startswith("../") and not Path(entry).is_absolute() \
            and not (root / entry).exists() and (root / entry[3:]).exists():
        return entry[3:]
    return entry


def read_data_yaml(path: Path, *, require_splits: bool = True) -> DataSpec:
    """Parse an Ultralytics data.yaml. A relative `path:` resolves against the yaml's own folder, split entries
    against `path:` (a '../x' entry that does not exist there is read as 'x', as Ultralytics does). With
    require_splits=False (an export handed back) a missing, absent or empty train/val split is an empty list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset file not found. Point dataset.data_yaml at your data.yaml.") from None
    try:
        raw = parse_yaml(text, path)  # a duplicated key or an alias bomb is refused, not silently read
    except ConfigError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected keys path/train/val/names.")
    root = Path(str(raw.get("path") or "."))
    root = root if root.is_absolute() else (path.parent / root).resolve()
    names = _names(raw.get("names"), path)
    nc = raw.get("nc")
    if nc is not None and (isinstance(nc, bool) or nc != len(names)):
        ln = next((i for i, t in enumerate(text.splitlines(), 1) if t.split(":")[0].strip() == "nc"), None)
        raise DatasetError(f"{path}:{ln or ''}: key 'nc' = {nc!r} but 'names' lists {len(names)} classes "
                           f"{names[:10]}. Make nc equal the number of names (or remove nc; the names decide).")
    spec = DataSpec(yaml_path=path.resolve(), names=names)
    for key in ("train", "val"):
        if not raw.get(key) and require_splits:
            raise DatasetError(f"{path}: key '{key}' is required (a folder or .txt list of images).")
    for key in ("train", "val", "test"):
        try:
            spec.splits[key] = list_images(_split_entry(raw.get(key), root), root, path, key)
        except DatasetError:
            if require_splits:
                raise
            spec.splits[key] = []
        if key != "test" and not spec.splits[key] and require_splits:
            raise DatasetError(f"{path}: split '{key}' has no images. Check the folder or list it points to.")
    return spec


def yolo_label_path(image: str | Path) -> Path:
    """Ultralytics' convention, by path string: .../images/x.jpg -> .../labels/x.txt (last 'images' folder)."""
    p = Path(image)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return p.with_suffix(".txt")


def label_path(image: str | Path) -> Path:
    """The image's label file: yolo_label_path, or the file of that folder whose name is the same in Unicode NFC
    (an image named 'café.jpg' in one normal form and its 'café.txt' in the other: macOS writes NFD, most tools
    NFC). Without either, yolo_label_path (where a label file for the image is written)."""
    p = yolo_label_path(image)
    if p.exists():
        return p
    nfc = unicodedata.normalize("NFC", p.name)
    if nfc != p.name and (p.parent / nfc).exists():
        return p.parent / nfc
    other = _non_nfc_names(p.parent).get(nfc)
    return p.parent / other if other else p


_listings: dict[Path, tuple[int, dict[str, str]]] = {}
"""Folder -> (its mtime_ns, NFC form -> name of each entry whose name is not NFC), for label_path's look-ups."""


def _non_nfc_names(folder: Path) -> dict[str, str]:
    try:
        mtime = folder.stat().st_mtime_ns
        cached = _listings.get(folder)
        if cached is None or cached[0] != mtime:
            with os.scandir(folder) as it:  # an ASCII name is always NFC: only the others can need the look-up
                names = {n: e.name for e in it
                         if not e.name.isascii() and (n := unicodedata.normalize("NFC", e.name)) != e.name}
            cached = _listings[folder] = (mtime, names)
    except OSError:  # no such folder (a negative's label folder), or not a folder
        return {}
    return cached[1]


def read_labels(path: Path, nc: int, width: int, height: int) -> np.ndarray:
    """YOLO label file -> (N,5) [cls, x1, y1, x2, y2] in pixels. Polygon lines become their bounding box.
    Read as Ultralytics reads it (UTF-8 with or without a byte-order mark; exact duplicate rows dropped). Bad lines
    are skipped with a warning naming file:line (al.data.check refuses or skips such files before a run uses them);
    a missing file means no objects (a negative)."""
    out = []
    try:
        text = Path(path).read_bytes().decode("utf-8-sig", errors="replace")
    except FileNotFoundError:
        return np.zeros((0, 5))
    seen: set[tuple[float, ...]] = set()
    for ln_no, line in enumerate(text.splitlines(), 1):
        vals = line.split()
        if not vals:
            continue
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            log.warning("%s:%d: not numbers, line skipped: %r", path, ln_no, line[:60])
            continue
        if not all(math.isfinite(v) for v in nums):
            log.warning("%s:%d: NaN or infinite value, line skipped", path, ln_no)
            continue
        if tuple(nums) in seen:  # Ultralytics' training drops exact duplicates too
            continue
        seen.add(tuple(nums))
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
    """SHA-1 of the file's content, through the run's one hash cache (al.data.hashing)."""
    return hashing.file_hash(path)


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
    """Write dataset version folder: train/val/test .txt lists, a data.yaml Ultralytics can train on (pointing at
    a mirror of links, see link_mirror), version.json. The version.json is written last: its presence marks a
    complete snapshot."""
    dir_.mkdir(parents=True, exist_ok=True)
    data = {"path": str(dir_.resolve()), "names": dict(enumerate(names)), "nc": len(names)}
    for key, imgs in splits.items():
        if key == "test" and not imgs:
            continue
        store.write_text_atomic(dir_ / f"{key}.txt", "\n".join(imgs) + "\n")
        data[key] = str(link_mirror(dir_ / MIRROR / key, imgs).relative_to(dir_))
    store.write_yaml(dir_ / "data.yaml", data)
    ver = {**info, "id": snapshot_id(splits), "counts": {k: len(v) for k, v in splits.items()}}
    store.write_json(dir_ / "version.json", ver)
    return ver


MIRROR = "yolo"
"""Folder of a dataset version holding the links Ultralytics trains on (yolo/<split>/{images,labels})."""


def link_mirror(root: Path, images: list[str]) -> Path:
    """root/images and root/labels: a link to each image and to its label file, named by mirror_names (the label
    link after the image, so that Ultralytics, which maps image to label paths by string, finds a label file that
    label_path matched in another Unicode normal form). Ultralytics writes its labels cache (labels.cache), any
    *.npy image cache and a re-saved corrupt JPEG beside the files it is given: given these links, it writes into
    the run directory and never into the user's dataset. Returns root/images."""
    shutil.rmtree(root, ignore_errors=True)  # a rewritten version: stale links (and caches) go
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    names = mirror_names(images)
    for img, name in names.items():
        if name == _plain_name(img):
            _given.pop(img, None)
        else:
            _given[img] = name
        _link(Path(img), root / "images" / name)
        lp = label_path(img)
        if lp.is_file():
            _link(lp, root / "labels" / f"{Path(name).stem}.txt")
    return root / "images"


_given: dict[str, str] = {}
"""The names link_mirror gave in this process to images whose plain name another image of the same list shares,
so that mirror_name, which sees one image at a time, agrees with the mirror last written for it."""

_UNREAD = "unreadable"
"""The prefix of an image that cannot be read (no content to hash): not hex, so never a content prefix."""


def mirror_names(images: list[str]) -> dict[str, str]:
    """Each image's link name: 8 hex digits of its content hash, '_', its file name.
    Ultralytics trains in the order of these names, so the same labelled set trains in the same order wherever the
    run and the dataset live. Images whose names (or label links: stems equal but for case) would clash are ordered
    by content hash, name, label bytes, then path, and all but the first get '-1', '-2', ... after the digits; the
    path only orders copies that are the same sample (same bytes, name and labels)."""
    imgs = list(dict.fromkeys(images))
    plain = {img: _plain_name(img) for img in imgs}
    groups: dict[str, list[str]] = {}
    for img in imgs:
        groups.setdefault(Path(plain[img]).stem.lower(), []).append(img)
    out = dict(plain)
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: (_content_hash(m) or "", Path(m).name, _label_digest(m), m))
        for i, img in enumerate(members[1:], 1):
            prefix, _, name = plain[img].partition("_")
            out[img] = f"{prefix}-{i}_{name}"
    return out


def mirror_name(image: str) -> str:
    """The name of an image's link in a mirror (mirror_names; an image whose plain name another image of its list
    shares gets the name the last link_mirror of this process gave it)."""
    return _given.get(image) or _plain_name(image)


def _plain_name(image: str) -> str:
    h = _content_hash(image)
    return f"{h[:8] if h else _UNREAD}_{Path(image).name}"


def _content_hash(image: str) -> str | None:
    """The image's content hash (the run's cache), None when it cannot be read: a link to it is still made and
    the validator reports it, as for any unreadable image."""
    try:
        return hashing.file_hash(image)
    except OSError:
        return None


def _label_digest(image: str) -> str:
    """SHA-1 of the image's label file ('' without one): it orders same-named copies of one image."""
    lp = label_path(image)
    return hashlib.sha1(lp.read_bytes()).hexdigest() if lp.is_file() else ""


def _link(src: Path, dst: Path) -> None:
    """A symlink; a hard link or a copy where symlinks are not allowed (some Windows accounts)."""
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


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
