"""Generate the bundled demo dataset: real handwritten digits (scikit-learn) pasted on real photos that installed
packages ship (scikit-learn, Ultralytics). Nothing is downloaded; the output is a function of `seed` and the counts.

Run: python -m al.data.demo --out demo_data [--seed 0] [--n-train 160] ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from al.core.errors import UserError

log = logging.getLogger("al")

GENERATOR_VERSION = 1
NAMES = ["zero", "one", "two", "three", "four"]
CLASS_PROBS = np.array([0.32, 0.28, 0.20, 0.12, 0.08])  # imbalance: rare classes are what active learning should find
SPLITS = ("train", "val", "test", "pool")
SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}  # part of each image's seed: a split's images ignore other counts
TEST_DIGIT_FRACTION = 0.25
NEGATIVE_RATE = 0.08
LOW_CONTRAST_RATE = 0.15
MAX_OBJECTS = 6
MIN_VISIBLE = 0.6  # share of an object's ink that must fall inside the image
MAX_IOU = 0.2
ALPHA_CUT = 0.2  # ink below this opacity is dropped, so every painted pixel lies inside the labelled box
JPEG_QUALITY = 90


class DemoDataError(UserError):
    """The demo output folder cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class DemoObject:
    """One pasted digit: class id, visible pixel box [x1, y1, x2, y2) and its sample index in load_digits()."""

    cls: int
    box: tuple[int, int, int, int]
    digit_index: int
    low_contrast: bool


@dataclass
class Sources:
    """The real pixels the demo is made of: 8x8 digits (classes 0..4 only) and BGR background photos."""

    digits: np.ndarray  # (N, 8, 8) float32 in 0..16
    targets: np.ndarray  # (N,) int
    indices: np.ndarray  # (N,) index of each digit in sklearn's load_digits()
    photos: list[np.ndarray]
    photo_names: list[str]
    photo_files: list[Path]


def load_sources() -> Sources:
    """Load the digits and photos from the installed scikit-learn and Ultralytics packages (no network)."""
    from sklearn.datasets import load_digits, load_sample_images

    d = load_digits()
    keep = np.flatnonzero(d.target < len(NAMES))
    photos, names, files = [], [], []
    samples = load_sample_images()
    for fname, rgb in zip(samples.filenames, samples.images):
        photos.append(np.ascontiguousarray(rgb[:, :, ::-1]))
        names.append(f"scikit-learn: sklearn/datasets/images/{Path(fname).name}")
        files.append(Path(fname))
    for f in _ultralytics_assets():
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise DemoDataError(f"{f}: cannot be read as an image. Reinstall ultralytics (pip install --force-"
                                f"reinstall ultralytics) or generate the demo with another environment.")
        photos.append(img)
        names.append(f"ultralytics: ultralytics/assets/{f.name}")
        files.append(f)
    return Sources(digits=d.images[keep].astype(np.float32), targets=d.target[keep].astype(int),
                   indices=keep, photos=photos, photo_names=names, photo_files=files)


def _ultralytics_assets() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")  # locate the package without importing torch
    if spec is None or not spec.submodule_search_locations:
        raise DemoDataError("ultralytics is not installed; the demo backgrounds come from its assets folder. "
                            "Install the project's dependencies (pip install -e .).")
    assets = Path(list(spec.submodule_search_locations)[0]) / "assets"
    files = [assets / "bus.jpg", assets / "zidane.jpg"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DemoDataError(f"{missing}: Ultralytics sample images not found. Reinstall ultralytics.")
    return files


def digit_split(targets: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Positions (into `targets`) of the digits each split may use: 'test' is disjoint from 'fit'
    (train/val/pool), stratified by class, so test figures measure unseen handwriting."""
    rng = np.random.default_rng([seed, 99])
    test, fit = [], []
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_test = int(round(len(idx) * TEST_DIGIT_FRACTION))
        test.append(idx[:n_test])
        fit.append(idx[n_test:])
    return {"test": np.sort(np.concatenate(test)), "fit": np.sort(np.concatenate(fit))}


def digit_alpha(digit8: np.ndarray, w: int, h: int) -> np.ndarray:
    """8x8 intensities (0..16) -> (h, w) opacity in [0, 1]; the blurry upscale is stretched back into strokes."""
    interp = cv2.INTER_CUBIC if max(w, h) >= 16 else cv2.INTER_LINEAR
    a = cv2.resize(np.asarray(digit8, np.float32) / 16.0, (int(w), int(h)), interpolation=interp)
    a = np.clip((a - 0.15) / 0.6, 0.0, 1.0)
    a[a < ALPHA_CUT] = 0.0
    return a


def _visible(alpha: np.ndarray, x0: int, y0: int, size: int):
    """Clip an alpha patch placed at (x0, y0): (visible ink share, box in image pixels, image and patch slices)."""
    h, w = alpha.shape
    ix1, iy1, ix2, iy2 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
    total = float(alpha.sum())
    if ix2 <= ix1 or iy2 <= iy1 or total <= 0:
        return 0.0, None, None, None
    psl = (slice(iy1 - y0, iy2 - y0), slice(ix1 - x0, ix2 - x0))
    part = alpha[psl]
    share = float(part.sum()) / total
    rows, cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
    if not len(rows):
        return 0.0, None, None, None
    box = (ix1 + int(cols[0]), iy1 + int(rows[0]), ix1 + int(cols[-1]) + 1, iy1 + int(rows[-1]) + 1)
    return share, box, (slice(iy1, iy2), slice(ix1, ix2)), psl


def paste_digit(img: np.ndarray, digit8: np.ndarray, x0: int, y0: int, w: int, h: int,
                colour, opacity: float = 1.0) -> tuple[int, int, int, int] | None:
    """Paint a digit scaled to w x h with its top-left at (x0, y0) (may be off-image) in place.
    Returns the visible ink's pixel box [x1, y1, x2, y2) (x2/y2 exclusive), or None when nothing is visible."""
    alpha = digit_alpha(digit8, w, h)
    _, box, isl, psl = _visible(alpha, x0, y0, img.shape[0])
    if box is None:
        return None
    a = (alpha[psl] * opacity)[..., None]
    region = img[isl].astype(np.float32)
    img[isl] = np.clip(region * (1 - a) + np.asarray(colour, np.float32) * a + 0.5, 0, 255).astype(np.uint8)
    return box


def _iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _luma(bgr) -> float:
    b, g, r = np.asarray(bgr, np.float32)[..., :3].reshape(-1, 3).mean(axis=0)
    return 0.114 * b + 0.587 * g + 0.299 * r


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop (random scale) of a random photo, resized to size x size, random brightness."""
    photo = photos[int(rng.integers(len(photos)))]
    H, W = photo.shape[:2]
    side = max(16, int(min(H, W) * rng.uniform(0.25, 1.0)))
    y, x = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    crop = photo[y:y + side, x:x + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    bg = cv2.resize(crop, (size, size), interpolation=interp).astype(np.float32)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    gain, offset = rng.uniform(0.6, 1.3), rng.uniform(-20, 20)
    return np.clip(bg * gain + offset, 0, 255).astype(np.uint8)


def _ink(rng: np.random.Generator, bg_luma: float, low_contrast: bool) -> np.ndarray:
    """An ink colour (BGR) that contrasts with the local background, or deliberately barely does."""
    if low_contrast:
        sign = 1.0 if bg_luma < 128 else -1.0
        target = bg_luma + sign * rng.uniform(20, 40)
    else:
        dark = bg_luma > 145 or (bg_luma >= 110 and rng.random() < 0.5)
        if rng.random() < 0.05:  # a few inks ignore the background entirely
            dark = not dark
        target = rng.uniform(0, 70) if dark else rng.uniform(185, 255)
    tint = rng.uniform(-50, 50, 3)
    tint -= tint.mean()
    return np.clip(target + tint, 0, 255)


def render_image(rng: np.random.Generator, src: Sources, allowed: np.ndarray, size: int
                 ) -> tuple[np.ndarray, list[DemoObject]]:
    """One demo image (BGR uint8) and its objects; `allowed` holds the digit positions this split may use."""
    img = _background(rng, src.photos, size)
    n = 0 if rng.random() < NEGATIVE_RATE else int(rng.integers(1, MAX_OBJECTS + 1))
    s_max = min(64.0, size / 2)
    s_min = min(10.0, s_max / 2)
    by_class = {c: allowed[src.targets[allowed] == c] for c in range(len(NAMES))}
    objects: list[DemoObject] = []
    for _ in range(n):
        cls = int(rng.choice(len(NAMES), p=CLASS_PROBS))
        pos = int(rng.choice(by_class[cls]))
        s = float(np.exp(rng.uniform(np.log(s_min), np.log(s_max))))
        stretch = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
        w, h = max(3, round(s * np.sqrt(stretch))), max(3, round(s / np.sqrt(stretch)))
        alpha = digit_alpha(src.digits[pos], w, h)
        for _try in range(30):  # positions reach past every border: objects may be cut at edges and corners
            x0 = int(rng.integers(-int(0.4 * w), size - int(0.6 * w) + 1))
            y0 = int(rng.integers(-int(0.4 * h), size - int(0.6 * h) + 1))
            share, box, isl, psl = _visible(alpha, x0, y0, size)
            if box is None or share < MIN_VISIBLE or box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            if any(_iou(box, o.box) >= MAX_IOU for o in objects):
                continue
            low = bool(rng.random() < LOW_CONTRAST_RATE)
            mask = alpha[psl] > 0
            colour = _ink(rng, _luma(img[isl][mask]), low)
            paste_digit(img, src.digits[pos], x0, y0, w, h, colour, opacity=float(rng.uniform(0.8, 1.0)))
            objects.append(DemoObject(cls, box, int(src.indices[pos]), low))
            break
    sigma = rng.uniform(0, 3)
    if sigma > 0.5:  # sensor-like noise over the whole frame, pasted digits included
        img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
    return img, objects


def yolo_lines(objects: list[DemoObject], size: int) -> str:
    """Objects -> YOLO label text 'cls xc yc w h', normalised, 6 decimals (empty for a negative image)."""
    lines = []
    for o in objects:
        x1, y1, x2, y2 = o.box
        lines.append(f"{o.cls} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                     f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}")
    return "".join(ln + "\n" for ln in lines)


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    if split == "pool":
        return root / "pool" / "images", root / "pool" / "labels_hidden"
    return root / "images" / split, root / "labels" / split


def _manifest_key(m: dict) -> tuple:
    return (m.get("schema"), m.get("generator_version"), m.get("seed"), m.get("size"), m.get("counts"),
            m.get("names"))


def _check_existing(out_dir: Path, manifest: dict) -> bool:
    """True when out_dir already holds this exact demo; False when it is absent or empty; raises otherwise."""
    if not out_dir.exists():
        return False
    fix = "Delete it or choose another --out path."
    if not out_dir.is_dir():
        raise DemoDataError(f"{out_dir}: exists and is not a folder. {fix}")
    if not any(out_dir.iterdir()):
        return False
    mf = out_dir / "demo_manifest.json"
    if not mf.is_file():
        raise DemoDataError(f"{out_dir}: folder exists and is not a demo dataset (no demo_manifest.json). {fix}")
    try:
        old = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DemoDataError(f"{mf}: unreadable demo manifest. {fix}") from None
    if not isinstance(old, dict) or _manifest_key(old) != _manifest_key(manifest):
        got = {k: old.get(k) for k in ("seed", "size", "counts", "generator_version")} if isinstance(old, dict) else old
        raise DemoDataError(f"{out_dir}: holds a different demo dataset ({got}). {fix}")
    for split, n in manifest["counts"].items():
        idir, ldir = _split_dirs(out_dir, split)
        n_img = len(list(idir.glob("*.jpg"))) if idir.is_dir() else 0
        n_lab = len(list(ldir.glob("*.txt"))) if ldir.is_dir() else 0
        if n_img != n or n_lab != n:
            raise DemoDataError(f"{out_dir}: demo dataset is incomplete ({split}: {n_img} images, {n_lab} labels, "
                                f"expected {n}). {fix}")
    if not (out_dir / "data.yaml").is_file():
        raise DemoDataError(f"{out_dir}: demo dataset has no data.yaml. {fix}")
    return True


def _write_split(root: Path, split: str, n: int, seed: int, src: Sources, allowed: np.ndarray, size: int
                 ) -> tuple[list[int], list[int], int]:
    idir, ldir = _split_dirs(root, split)
    idir.mkdir(parents=True, exist_ok=True)
    ldir.mkdir(parents=True, exist_ok=True)
    counts, used, negatives = [0] * len(NAMES), set(), 0
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_CODE[split], i])
        img, objects = render_image(rng, src, allowed, size)
        stem = f"{split}_{i:05d}"
        if not cv2.imwrite(str(idir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise DemoDataError(f"{idir / (stem + '.jpg')}: could not write the image. Check disk space and "
                                f"permissions of {root.parent}.")
        (ldir / f"{stem}.txt").write_text(yolo_lines(objects, size), encoding="utf-8")
        negatives += not objects
        for o in objects:
            counts[o.cls] += 1
            used.add(o.digit_index)
    return counts, sorted(used), negatives


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _manifest_json(m: dict) -> str:
    """One top-level key per line, values compact: readable, and the long index lists stay on one line."""
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in m.items())
    return "{\n" + body + "\n}\n"


def _source_md(src: Sources, manifest: dict) -> str:
    from importlib.metadata import PackageNotFoundError, version

    import sklearn

    ul_version = "version unknown"
    for dist in ("ultralytics", "ultralytics-opencv-headless"):  # same package and assets under either name
        try:
            ul_version = f"{dist} {version(dist)}"
            break
        except PackageNotFoundError:
            continue
    rows = "\n".join(f"| {n} | {p.shape[1]}x{p.shape[0]} | `{_sha1(f)[:12]}` |"
                     for n, p, f in zip(src.photo_names, src.photos, src.photo_files))
    c = manifest["counts"]
    return f"""# Demo dataset provenance

Generated by `al/data/demo.py` (generator_version {GENERATOR_VERSION}) with seed {manifest['seed']}, image size
{manifest['size']}x{manifest['size']}. Nothing was downloaded: every pixel comes from files that installed
packages ship.

## Objects
Handwritten digits 0-4 from `sklearn.datasets.load_digits()` (scikit-learn {sklearn.__version__}): the 8x8 test set
of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998). Each digit is upscaled, turned
into an opacity mask (intensity / 16) and painted in an ink colour. Test images use digit samples disjoint from
those of train/val/pool ({len(manifest['digit_split']['test'])} vs {len(manifest['digit_split']['fit'])} samples).

## Backgrounds
Random crops (random scale, flip, brightness) of:

| file | size | sha1 |
|---|---|---|
{rows}

scikit-learn's china.jpg and flower.jpg are CC BY 2.0 Flickr photos (see `sklearn/datasets/images/README.txt`);
bus.jpg and zidane.jpg are the sample images of the Ultralytics package ({ul_version}).

## Counts
| split | images | objects per class {NAMES} | negatives |
|---|---|---|---|
""" + "\n".join(f"| {s} | {c[s]} | {manifest['class_counts'][s]} | {manifest['negatives'][s]} |" for s in SPLITS) + "\n"


def generate_demo(out_dir: Path, *, seed: int = 0, n_train: int = 160, n_val: int = 160, n_test: int = 120,
                  n_pool: int = 300, size: int = 256) -> Path:
    """Write the demo dataset to out_dir (crash-safe, idempotent) and return its data.yaml path."""
    out_dir = Path(out_dir).expanduser().absolute()
    counts = {"train": n_train, "val": n_val, "test": n_test, "pool": n_pool}
    bad = {k: v for k, v in counts.items() if int(v) != v or v < 0}
    if bad or n_train < 1 or n_val < 1 or size < 32:
        raise DemoDataError(f"demo counts must be whole numbers >= 0 (train and val >= 1) and size >= 32; got "
                            f"{counts}, size={size}.")
    manifest = {"schema": 1, "seed": int(seed), "counts": counts, "names": list(NAMES),
                "generator_version": GENERATOR_VERSION, "size": int(size)}
    if _check_existing(out_dir, manifest):
        log.info("demo data already present in %s", out_dir)
        return out_dir / "data.yaml"

    src = load_sources()
    split_pos = digit_split(src.targets, int(seed))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a crash leaves only a hidden temp folder, never a half dataset.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        class_counts, used, negatives = {}, {}, {}
        for split in SPLITS:
            allowed = split_pos["test" if split == "test" else "fit"]
            class_counts[split], used[split], negatives[split] = _write_split(
                tmp, split, counts[split], int(seed), src, allowed, int(size))
        manifest |= {"class_counts": class_counts, "negatives": negatives,
                     "digit_split": {k: src.indices[v].tolist() for k, v in split_pos.items()},
                     "digits_used": used}
        data = {"path": str(out_dir), "train": "images/train", "val": "images/val", "test": "images/test",
                "names": dict(enumerate(NAMES))}
        (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        (tmp / "SOURCE.md").write_text(_source_md(src, manifest), encoding="utf-8")
        (tmp / "demo_manifest.json").write_text(_manifest_json(manifest), encoding="utf-8")
        try:
            os.rename(tmp, out_dir)  # replaces a missing or empty folder atomically
        except OSError:
            if _check_existing(out_dir, manifest):  # another process finished the same demo first
                shutil.rmtree(tmp, ignore_errors=True)
                return out_dir / "data.yaml"
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("demo data written to %s", out_dir)
    return out_dir / "data.yaml"


def main(argv: list[str] | None = None) -> int:
    """CLI: generate the demo dataset and print one line with the counts and the data.yaml path."""
    p = argparse.ArgumentParser(prog="python -m al.data.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo_data"), help="output folder (default: demo_data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=160)
    p.add_argument("--n-val", type=int, default=160)
    p.add_argument("--n-test", type=int, default=120)
    p.add_argument("--n-pool", type=int, default=300)
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    a = p.parse_args(argv)
    try:
        yaml_path = generate_demo(a.out, seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test,
                                  n_pool=a.n_pool, size=a.size)
    except DemoDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"demo data: train={a.n_train} val={a.n_val} test={a.n_test} pool={a.n_pool} -> {yaml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
