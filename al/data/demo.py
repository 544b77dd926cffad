"""Generate the bundled demo dataset: real handwritten digits (scikit-learn) pasted on real photos that installed
packages ship (scikit-learn, Ultralytics). Nothing is downloaded; the output is a function of `seed` and the counts.

Run: python -m al.data.demo --out demo_data [--seed 0] [--n-train 160] ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from al.core.errors import UserError
from al.data import scenes
from al.data.scenes import PaintedObject

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


_OUT = scenes.Output("demo dataset", manifest="demo_manifest.json", readme="SOURCE.md", error=DemoDataError,
                     jpeg_quality=JPEG_QUALITY)


@dataclass(frozen=True)
class DemoObject(PaintedObject):
    """One pasted digit, with its sample index in load_digits()."""

    digit_index: int


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
    package = scenes.package_dir("ultralytics")
    if package is None:
        raise DemoDataError("ultralytics is not installed; the demo backgrounds come from its assets folder. "
                            "Install the project's dependencies (pip install -e .).")
    assets = package / "assets"
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
    return scenes.drop_faint(np.clip((a - 0.15) / 0.6, 0.0, 1.0), ALPHA_CUT)


def _visible(alpha: np.ndarray, x0: int, y0: int, size: int):
    """Clip an alpha patch placed at (x0, y0): (visible ink share, box in image pixels, image and patch slices)."""
    total = float(alpha.sum())
    where = scenes.overlap(x0, y0, alpha.shape, (size, size))
    if where is None or total <= 0:
        return 0.0, None, None, None
    isl, psl = where
    part = alpha[psl]
    box = scenes.mask_box(part > 0, isl)
    if box is None:
        return 0.0, None, None, None
    return float(part.sum()) / total, box, isl, psl


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


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop (random scale) of a random photo, resized to size x size, random brightness."""
    bg = scenes.resize_square(scenes.random_crop(rng, photos, min_side=16, min_share=0.25), size)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    gain, offset = rng.uniform(0.6, 1.3), rng.uniform(-20, 20)
    return np.clip(bg * gain + offset, 0, 255).astype(np.uint8)


def _ink(rng: np.random.Generator, bg_luma: float, low_contrast: bool) -> np.ndarray:
    """An ink colour (BGR) that contrasts with the local background, or deliberately barely does."""
    target: float | np.float32
    if low_contrast:
        sign = 1.0 if bg_luma < 128 else -1.0
        # float32 on purpose: the pixels are pinned, and a float64 target rounds differently (rarely moves one).
        target = np.float32(bg_luma) + sign * rng.uniform(20, 40)
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
            if any(scenes.iou(box, o.box) >= MAX_IOU for o in objects):
                continue
            low = bool(rng.random() < LOW_CONTRAST_RATE)
            mask = alpha[psl] > 0
            colour = _ink(rng, scenes.luma(img[isl][mask]), low)
            paste_digit(img, src.digits[pos], x0, y0, w, h, colour, opacity=float(rng.uniform(0.8, 1.0)))
            objects.append(DemoObject(cls=cls, box=box, low_contrast=low, digit_index=int(src.indices[pos])))
            break
    sigma = rng.uniform(0, 3)
    if sigma > 0.5:  # sensor-like noise over the whole frame, pasted digits included
        img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
    return img, objects


def _write_split(root: Path, split: str, n: int, seed: int, src: Sources, allowed: np.ndarray, size: int
                 ) -> tuple[list[int], list[int], int]:
    renders = (render_image(np.random.default_rng([seed, SPLIT_CODE[split], i]), src, allowed, size)
               for i in range(n))
    per_image = _OUT.write_split(root, split, renders)
    used = sorted({o.digit_index for objects in per_image for o in objects})
    return scenes.class_counts(per_image, len(NAMES)), used, sum(not objects for objects in per_image)


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
    rows = scenes.sources_table(src.photo_names, src.photos, src.photo_files)
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
    if _OUT.check(out_dir, manifest):
        log.info("demo data already present in %s", out_dir)
        return out_dir / "data.yaml"

    src = load_sources()
    split_pos = digit_split(src.targets, int(seed))

    def fill(folder: Path) -> str:
        class_counts, used, negatives = {}, {}, {}
        for split in SPLITS:
            allowed = split_pos["test" if split == "test" else "fit"]
            class_counts[split], used[split], negatives[split] = _write_split(
                folder, split, counts[split], int(seed), src, allowed, int(size))
        manifest.update({"class_counts": class_counts, "negatives": negatives,
                         "digit_split": {k: src.indices[v].tolist() for k, v in split_pos.items()},
                         "digits_used": used})
        return _source_md(src, manifest)

    return _OUT.build(out_dir, manifest, NAMES, fill)


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
