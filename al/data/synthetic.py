"""Generate synthetic detection datasets from nothing but installed packages (nothing is downloaded):

- "shapes": six filled geometric primitives on procedural textures (gradients, value noise, stripes, checkers). The
  domain of the project's pretrained checkpoint (benchmarks/pretrain.py): no class or scene of any benchmark set.
- "symbols": eight DejaVu Sans glyphs (card suits, chess pieces) in dense scenes on crops of real imagery that
  matplotlib ships (a photo, an MRI slice, two elevation maps), imbalanced classes; the test split renders the
  glyphs in a held-out style (heavier strokes, stronger slant), so test figures measure generalisation.

Each output is a function of the generator, seed, counts and size. The folder holds images/{train,val,test},
labels/{train,val,test} (YOLO 'cls xc yc w h', boxes tight around the painted pixels), data.yaml, README.md and
synthetic_manifest.json.

Run: python -m al.data.synthetic shapes --out DIR [--n-train 2400 --n-val 200 --n-test 200 --size 128 --seed 0]
     python -m al.data.synthetic symbols --out DIR [--n-train 360 --n-val 160 --n-test 160 --size 128 --seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from al.core.errors import UserError
from al.data import scenes
from al.data.scenes import PaintedObject

log = logging.getLogger("al")

GENERATOR_VERSION = 1
MANIFEST = "synthetic_manifest.json"
SPLITS = ("train", "val", "test")
SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}  # part of each image's seed: a split ignores the other counts
KIND_CODE = {"shapes": 1, "symbols": 2}  # the same seed gives unrelated images in the two generators
JPEG_QUALITY = 90
ALPHA_CUT = 0.2  # paint below this opacity is dropped, so every painted pixel lies inside its object's box
MIN_VISIBLE = 0.6  # share of an object's paint that must fall inside the image (objects may be cut at the borders)
MIN_KEPT = 0.75  # share of an object's visible paint that later objects may not cover
MAX_IOU = 0.3  # box overlap allowed between two objects of a scene
SUPERSAMPLE = 4  # primitives are drawn this much larger and area-averaged down: anti-aliased edges

SHAPES_NAMES = ["circle", "square", "triangle", "star", "ring", "cross"]
SHAPES_MAX_OBJECTS = 8
SHAPES_DIAMETER = (8.0, 48.0)  # circumscribed diameter in pixels
SHAPES_LOW_CONTRAST_RATE = 0.12

SYMBOL_GLYPHS = {"spade": "\u2660", "heart": "\u2665", "diamond": "\u2666", "club": "\u2663",
                 "rook": "\u265c", "king": "\u265a", "queen": "\u265b", "knight": "\u265e"}
SYMBOLS_NAMES = list(SYMBOL_GLYPHS)
SYMBOLS_PROBS = np.array([0.25, 0.20, 0.15, 0.12, 0.10, 0.08, 0.07, 0.03])  # rare classes for selection to find
SYMBOLS_OBJECTS = (3, 15)
SYMBOLS_HEIGHT = (0.0625, 0.22)  # glyph height as a share of the image side: 8-28 px at 128 px
SYMBOLS_LOW_CONTRAST_RATE = 0.15
GLYPH_REF = 96  # glyphs are rasterised once at this pixel size and scaled down per object
FONT_FILE = "DejaVuSans.ttf"


class SyntheticDataError(UserError):
    """A synthetic dataset cannot be written or read back; the message names the folder and the fix."""


_OUT = scenes.Output("synthetic dataset", manifest=MANIFEST, readme="README.md", error=SyntheticDataError,
                     jpeg_quality=JPEG_QUALITY)


@dataclass(frozen=True)
class GlyphStyle:
    """How glyphs are rendered: an extra stroke (share of the glyph height) and the range of |slant| (x shift per
    unit of height, sign random)."""

    name: str
    stroke: float
    slant: tuple[float, float]


TRAIN_STYLE = GlyphStyle("regular", stroke=0.0, slant=(0.0, 0.12))
TEST_STYLE = GlyphStyle("heavy-slanted", stroke=0.012, slant=(0.16, 0.28))  # held out: never seen in train or val
SPLIT_STYLE = {"train": TRAIN_STYLE, "val": TRAIN_STYLE, "test": TEST_STYLE}


# ---------------------------------------------------------------------------------------------- painting scenes


class Scene:
    """An image being painted: each pixel remembers which object painted it last, so every object's box is taken
    from the paint that is still visible, and a new object may cover only a little of the earlier ones."""

    def __init__(self, img: np.ndarray):
        self.img = img.astype(np.float32)
        self.owner: np.ndarray = np.full(img.shape[:2], -1, np.int16)
        self.kept: list[int] = []  # visible painted pixels per object
        self.painted: list[int] = []  # painted pixels per object when it was painted
        self.placed: list[tuple[int, int, int, int]] = []  # box of each object when it was painted
        self.low: list[bool] = []
        self.cls: list[int] = []

    def fit(self, alpha: np.ndarray, x0: int, y0: int):
        """Where `alpha` (a patch with its top-left at x0, y0, possibly off-image) would go, or None when too
        little of it is inside the image or it would hide too much of an earlier object or overlap its box."""
        slices = scenes.overlap(x0, y0, alpha.shape, self.owner.shape)
        if slices is None:
            return None
        isl, psl = slices
        mask = alpha[psl] > 0
        total = int(np.count_nonzero(alpha))
        n = int(np.count_nonzero(mask))
        if total == 0 or n < MIN_VISIBLE * total or n < 4:
            return None
        box = scenes.mask_box(mask, isl)
        if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
            return None
        if any(scenes.iou(box, b) > MAX_IOU for b in self.placed):
            return None
        covered = self._covered(self.owner[isl][mask])
        if np.any(np.asarray(self.kept) - covered < MIN_KEPT * np.asarray(self.painted)):
            return None
        return isl, psl, box

    def _covered(self, under: np.ndarray) -> np.ndarray:
        """Pixels of each earlier object among `under` (the owners of the pixels a new object would paint)."""
        return np.bincount(under[under >= 0], minlength=len(self.kept))

    def paint(self, alpha: np.ndarray, where, colour: np.ndarray, cls: int, low: bool, opacity: float = 1.0) -> None:
        """Blend `colour` (BGR, or a patch of BGR the shape of alpha) into the image where `fit` said."""
        isl, psl, box = where
        part = alpha[psl]
        mask = part > 0
        col = colour[psl] if colour.ndim == 3 else colour
        a = (part * opacity)[..., None]
        self.img[isl] = self.img[isl] * (1 - a) + col * a
        owner = self.owner[isl]
        self.kept = [int(k) for k in np.asarray(self.kept, np.int64) - self._covered(owner[mask])]
        owner[mask] = len(self.kept)
        n = int(np.count_nonzero(mask))
        self.kept.append(n)
        self.painted.append(n)
        self.placed.append(box)
        self.low.append(low)
        self.cls.append(cls)

    def objects(self) -> list[PaintedObject]:
        """The objects with boxes tight around the paint each still shows."""
        out = []
        for k in range(len(self.kept)):
            ys, xs = np.nonzero(self.owner == k)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            out.append(PaintedObject(self.cls[k], box, self.low[k]))
        return out

    def finish(self, rng: np.random.Generator) -> np.ndarray:
        """The image as uint8 after a little sensor-like noise (over objects and background alike)."""
        img = self.img
        sigma = rng.uniform(0, 4)
        if sigma > 0.5:
            img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _colour_near_luma(rng: np.random.Generator, target: float) -> np.ndarray:
    """A random hue and saturation (BGR) shifted to about the given luma."""
    c = rng.uniform(0, 255, 3) * rng.uniform(0.2, 1.0) + rng.uniform(0, 255) * 0.3
    return np.clip(c + (target - scenes.luma(c)), 0, 255).astype(np.float32)


def _contrasting(rng: np.random.Generator, bg_luma: float, low: bool) -> np.ndarray:
    """A colour that stands out from the background's luma by 60-150, or (low contrast) by only 15-30."""
    if low:
        delta = rng.uniform(15, 30)
        target = bg_luma + (delta if bg_luma < 128 else -delta)
    else:
        up = bg_luma < 70 or (bg_luma <= 185 and rng.random() < 0.5)
        delta = rng.uniform(60, 150)
        target = min(bg_luma + delta, 255.0) if up else max(bg_luma - delta, 0.0)
    return _colour_near_luma(rng, target)


def _place_object(rng: np.random.Generator, scene: Scene, alpha: np.ndarray, tries: int = 25):
    """A random position for `alpha` that `scene.fit` accepts (reaching past every border), or None."""
    h, w = scene.owner.shape
    ph, pw = alpha.shape
    for _ in range(tries):
        x0 = int(rng.integers(-int(0.3 * pw), w - int(0.7 * pw) + 1))
        y0 = int(rng.integers(-int(0.3 * ph), h - int(0.7 * ph) + 1))
        where = scene.fit(alpha, x0, y0)
        if where is not None:
            return where
    return None


# ------------------------------------------------------------------------------------------------------- shapes


def shape_alpha(name: str, diameter: float, angle: float, param: float = 0.5) -> np.ndarray:
    """The opacity patch (values 0 or ALPHA_CUT..1) of one primitive: `diameter` is its circumscribed diameter in
    pixels, `angle` its rotation in radians, `param` the inner share (ring hole, star valleys, cross arm width)."""
    n = int(np.ceil(diameter)) + 2
    big = n * SUPERSAMPLE
    c = big / 2.0
    r = diameter * SUPERSAMPLE / 2.0
    canvas = np.zeros((big, big), np.uint8)
    if name in ("circle", "ring"):
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) + 0.5
        d = np.hypot(xx - c, yy - c)
        inside = d <= r
        if name == "ring":
            inside &= d >= r * param
        canvas[inside] = 255
    else:
        if name == "square":
            t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
            pts = np.stack([np.cos(t), np.sin(t)], 1) * r
        elif name == "triangle":
            t = angle + np.arange(3) * 2 * np.pi / 3
            pts = np.stack([np.cos(t), np.sin(t)], 1) * r
        elif name == "star":
            t = angle + np.arange(10) * np.pi / 5
            rad = np.where(np.arange(10) % 2 == 0, r, r * param)
            pts = np.stack([np.cos(t), np.sin(t)], 1) * rad[:, None]
        elif name == "cross":
            a = r * param / 2  # half the arm width
            xy = np.array([(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r), (-a, -r), (-a, -a), (-r, -a),
                           (-r, a), (-a, a), (-a, r)], np.float64) / np.sqrt(1 + (param / 2) ** 2)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            pts = xy @ rot.T
        else:
            raise ValueError(f"unknown shape {name!r}; expected one of {SHAPES_NAMES}")
        poly = np.round((pts + c) * 16).astype(np.int32)  # 4 fractional bits: sub-pixel vertices
        cv2.fillPoly(canvas, [poly], 255, lineType=cv2.LINE_8, shift=4)
    small = cv2.resize(canvas, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return scenes.drop_faint(small, ALPHA_CUT)


_SHAPE_PARAM = {"circle": (0.5, 0.5), "square": (0.5, 0.5), "triangle": (0.5, 0.5), "star": (0.38, 0.52),
                "ring": (0.45, 0.65), "cross": (0.5, 0.75)}


def _value_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random field in 0..1 (two or three octaves of upsampled random grids)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    cells = int(rng.integers(2, 7))
    for _ in range(int(rng.integers(2, 4))):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        cells *= 2
    out /= total
    return np.clip((out - out.min()) / max(float(np.ptp(out)), 1e-6), 0, 1)


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One procedural texture as a 0..1 field: gradient, value noise, stripes or checker."""
    kind = rng.choice(["gradient", "noise", "stripes", "checker"], p=[0.3, 0.3, 0.2, 0.2])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, np.pi)
    u = xx * np.cos(t) + yy * np.sin(t)
    v = -xx * np.sin(t) + yy * np.cos(t)
    if kind == "gradient":
        if rng.random() < 0.3:  # radial
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            f = np.hypot(xx - cx, yy - cy)
        else:
            f = u
        return (f - f.min()) / max(float(np.ptp(f)), 1e-6)
    if kind == "noise":
        return _value_noise(rng, h, w)
    period = rng.uniform(6, 40)
    if kind == "stripes":
        f = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
        if rng.random() < 0.5:  # hard-edged stripes
            f = (f > 0.5).astype(np.float32)
        return f.astype(np.float32)
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)


def shapes_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A procedural background (BGR float32): one or two textures between random colours, colour jitter, maybe
    blur and a few thin clutter lines that belong to no class."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if rng.random() < 0.3:  # a quieter pair of colours
        c2 = np.clip(c1 + rng.uniform(-60, 60, 3), 0, 255)
    f = _pattern(rng, h, w)
    img = c1 + (c2 - c1) * f[..., None]
    if rng.random() < 0.4:
        g = _pattern(rng, h, w)[..., None]
        img = img * (1 - 0.35 * g) + rng.uniform(0, 255, 3) * 0.35 * g
    img = img * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20)  # colour jitter
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.6, 1.5))
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.float32))
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.5 else 0):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(float(x) for x in rng.uniform(0, 255, 3)), 1, cv2.LINE_AA)
    return img


def render_shapes_image(rng: np.random.Generator, side: int) -> tuple[np.ndarray, list[PaintedObject]]:
    """One shapes image (BGR uint8, side x side) and its objects: 1-8 primitives of any colour."""
    scene = Scene(shapes_background(rng, side, side))
    d_max = min(SHAPES_DIAMETER[1], side * 0.4)
    for _ in range(int(rng.integers(1, SHAPES_MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(SHAPES_NAMES)))
        name = SHAPES_NAMES[cls]
        d = float(np.exp(rng.uniform(np.log(SHAPES_DIAMETER[0]), np.log(d_max))))
        param = float(rng.uniform(*_SHAPE_PARAM[name]))
        alpha = shape_alpha(name, d, float(rng.uniform(0, 2 * np.pi)), param)
        where = _place_object(rng, scene, alpha)
        if where is None:
            continue
        low = bool(rng.random() < SHAPES_LOW_CONTRAST_RATE)
        isl, psl, _ = where
        bg = scenes.luma(scene.img[isl][alpha[psl] > 0])
        colour = _contrasting(rng, bg, low)
        ph, pw = alpha.shape
        yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
        t = rng.uniform(0, 2 * np.pi)
        ramp = ((xx - pw / 2) * np.cos(t) + (yy - ph / 2) * np.sin(t)) / max(pw, 1)
        shade = colour + (rng.uniform(-30, 30) * ramp)[..., None]  # a gentle lighting gradient over the shape
        scene.paint(alpha, where, np.clip(shade, 0, 255), cls, low, opacity=float(rng.uniform(0.85, 1.0)))
    return scene.finish(rng), scene.objects()


# ------------------------------------------------------------------------------------------------------ symbols


def _mpl_data() -> Path:
    package = scenes.package_dir("matplotlib")
    if package is None:
        raise SyntheticDataError("matplotlib is not installed; the symbols dataset takes its font and backgrounds "
                                 "from matplotlib's mpl-data folder. Install the project (pip install -e .).")
    return package / "mpl-data"


@dataclass
class SymbolSources:
    """The font and the real images the symbols dataset is made of (BGR backgrounds), with glyph masks cached."""

    font: Path
    backgrounds: list[np.ndarray]
    background_names: list[str]
    background_files: list[Path]
    _masks: dict = field(default_factory=dict, repr=False)

    def glyph(self, cls: int, style: GlyphStyle) -> np.ndarray:
        """The glyph of class `cls` rasterised at GLYPH_REF px in `style`'s stroke, cropped to its ink (0..1)."""
        key = (cls, style.stroke)
        if key not in self._masks:
            self._masks[key] = _rasterise(self.font, SYMBOL_GLYPHS[SYMBOLS_NAMES[cls]], style.stroke)
        return self._masks[key]


def _rasterise(font: Path, ch: str, stroke: float) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(str(font), GLYPH_REF)
    side = GLYPH_REF * 2
    im = Image.new("L", (side, side), 0)
    ImageDraw.Draw(im).text((side // 2, side // 2), ch, font=f, fill=255, anchor="mm",
                            stroke_width=int(round(stroke * GLYPH_REF)), stroke_fill=255)
    a = np.asarray(im, np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(axis=1) > 0), np.flatnonzero(a.max(axis=0) > 0)
    if not len(rows):
        raise SyntheticDataError(f"{font}: has no glyph for {ch!r} (U+{ord(ch):04X}). Reinstall matplotlib "
                                 f"(its DejaVu Sans ships the card suits and chess pieces).")
    return np.ascontiguousarray(np.pad(a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 2))


def _palette(values: np.ndarray, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """Map 0..1 values to BGR by linear interpolation between (position, BGR) stops."""
    pos = [p for p, _ in stops]
    return np.stack([np.interp(values, pos, [c[i] for _, c in stops]) for i in range(3)], -1).astype(np.float32)


_EARTH = [(0.0, (60, 110, 40)), (0.35, (80, 160, 120)), (0.6, (70, 130, 170)), (0.85, (110, 150, 190)),
          (1.0, (235, 240, 245))]
_SEA = [(0.0, (90, 30, 10)), (1.0, (200, 150, 90))]


def _hillshade(elev: np.ndarray, exaggerate: float) -> np.ndarray:
    gy, gx = np.gradient(elev.astype(np.float32) * exaggerate)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.deg2rad(315.0), np.deg2rad(45.0)
    return np.clip(np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect), 0, 1)


def _terrain(elev: np.ndarray, exaggerate: float) -> np.ndarray:
    """A real elevation grid as a shaded relief map (BGR uint8): sea in blues, land from green to snow."""
    e = elev.astype(np.float32)
    land = np.clip(e / max(float(e.max()), 1.0), 0, 1)
    sea = np.clip(1 + e / max(-float(e.min()), 1.0), 0, 1)
    col = np.where((e >= 0)[..., None], _palette(land, _EARTH), _palette(sea, _SEA))
    shade = 0.35 + 0.65 * _hillshade(e, exaggerate)
    return np.clip(col * shade[..., None], 0, 255).astype(np.uint8)


def load_symbol_sources() -> SymbolSources:
    """The DejaVu Sans font and four real images from matplotlib's sample data (no network)."""
    mpl = _mpl_data()
    font = mpl / "fonts" / "ttf" / FONT_FILE
    sample = mpl / "sample_data"
    files = {"photo": sample / "grace_hopper.jpg", "mri": sample / "s1045.ima.gz",
             "dem": sample / "jacksboro_fault_dem.npz", "topo": sample / "topobathy.npz"}
    missing = [str(f) for f in [font, *files.values()] if not f.is_file()]
    if missing:
        raise SyntheticDataError(f"{missing}: matplotlib's font or sample data not found. Reinstall matplotlib "
                                 f"(pip install --force-reinstall matplotlib).")
    try:
        photo = cv2.imread(str(files["photo"]), cv2.IMREAD_COLOR)
        if photo is None:
            raise ValueError("not an image")
        mri = np.frombuffer(gzip.decompress(files["mri"].read_bytes()), ">u2").reshape(256, 256)
        mri8 = np.clip(mri.astype(np.float32) / max(float(mri.max()), 1.0) * 255, 0, 255).astype(np.uint8)
        dem = np.load(files["dem"])["elevation"]
        topo = np.load(files["topo"])["topo"]
    except (OSError, ValueError, KeyError) as e:
        raise SyntheticDataError(f"{sample}: a sample file cannot be read ({e}). Reinstall matplotlib.") from None
    topo_img = cv2.resize(_terrain(topo, 0.02), (topo.shape[1] * 4, topo.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    images = [photo, cv2.cvtColor(mri8, cv2.COLOR_GRAY2BGR), _terrain(dem - float(dem.min()), 0.1), topo_img]
    names = ["matplotlib: sample_data/grace_hopper.jpg (photograph)",
             "matplotlib: sample_data/s1045.ima.gz (MRI slice, 256x256 16-bit)",
             "matplotlib: sample_data/jacksboro_fault_dem.npz (elevation model, shaded relief)",
             "matplotlib: sample_data/topobathy.npz (topography and bathymetry, shaded relief, 4x upscaled)"]
    return SymbolSources(font=font, backgrounds=images, background_names=names,
                         background_files=list(files.values()))


def photo_background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop (random scale, flips) of a random image, resized to size x size, colour-jittered."""
    for _ in range(6):  # parts of some images are flat (the MRI's black surround): look again
        crop = scenes.random_crop(rng, photos, min_side=24, min_share=0.2)
        if float(crop.std()) > 12:
            break
    bg = scenes.resize_square(crop, size)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    if rng.random() < 0.5:
        bg = bg[::-1]
    if rng.random() < 0.4:  # a colour cast, strong enough to tint the grey images
        grey = bg.mean(axis=2, keepdims=True)
        bg = grey + (bg - grey) * rng.uniform(0.5, 1.2) + rng.uniform(-40, 40, 3)
    bg = bg * rng.uniform(0.65, 1.25) + rng.uniform(-25, 25)
    return np.ascontiguousarray(np.clip(bg, 0, 255).astype(np.float32))


def glyph_alpha(mask: np.ndarray, height: float, stretch: float, slant: float, angle_deg: float) -> np.ndarray:
    """A rasterised glyph scaled to `height` px (width x `stretch`), slanted and rotated: its opacity patch."""
    h0, w0 = mask.shape
    s = height / h0
    w, h = max(2, int(round(w0 * s * stretch))), max(2, int(round(h0 * s)))
    small = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = rot @ np.array([[1.0, -slant], [0.0, 1.0]])  # slant: the top leans right for slant > 0
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) - (w / 2, h / 2)
    t = corners @ m.T
    ow, oh = int(np.ceil(np.ptp(t[:, 0]))) + 2, int(np.ceil(np.ptp(t[:, 1]))) + 2
    shift = np.array([ow / 2, oh / 2]) - m @ np.array([w / 2, h / 2])
    out = cv2.warpAffine(small, np.hstack([m, shift[:, None]]).astype(np.float32), (ow, oh),
                         flags=cv2.INTER_LINEAR, borderValue=0)
    return scenes.drop_faint(out, ALPHA_CUT)


def render_symbols_image(rng: np.random.Generator, src: SymbolSources, size: int, style: GlyphStyle
                         ) -> tuple[np.ndarray, list[PaintedObject]]:
    """One symbols image (BGR uint8, size x size) and its objects: 3-15 glyphs in `style` on a real-image crop."""
    scene = Scene(photo_background(rng, src.backgrounds, size))
    lo, hi = SYMBOLS_HEIGHT[0] * size, SYMBOLS_HEIGHT[1] * size
    for _ in range(int(rng.integers(SYMBOLS_OBJECTS[0], SYMBOLS_OBJECTS[1] + 1))):
        cls = int(rng.choice(len(SYMBOLS_NAMES), p=SYMBOLS_PROBS))
        height = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        slant = float(rng.uniform(*style.slant)) * (1 if rng.random() < 0.5 else -1)
        alpha = glyph_alpha(src.glyph(cls, style), height, float(np.exp(rng.uniform(-0.15, 0.15))), slant,
                            float(rng.uniform(-12, 12)))
        where = _place_object(rng, scene, alpha)
        if where is None:
            continue
        low = bool(rng.random() < SYMBOLS_LOW_CONTRAST_RATE)
        isl, psl, _ = where
        colour = _contrasting(rng, scenes.luma(scene.img[isl][alpha[psl] > 0]), low)
        scene.paint(alpha, where, colour, cls, low, opacity=float(rng.uniform(0.8, 1.0)))
    return scene.finish(rng), scene.objects()


# -------------------------------------------------------------------------------------------- writing datasets


@dataclass(frozen=True)
class _Kind:
    """What differs between the generators: classes, per-split settings and the renderer of one image."""

    name: str
    names: list[str]
    settings: dict
    render: Callable[[np.random.Generator, str], tuple[np.ndarray, list[PaintedObject]]]
    readme: Callable[[dict], str]


def _write_split(root: Path, kind: _Kind, split: str, n: int, seed: int) -> dict:
    renders = (kind.render(np.random.default_rng([seed, KIND_CODE[kind.name], SPLIT_CODE[split], i]), split)
               for i in range(n))
    objects = _OUT.write_split(root, split, renders)
    per_image = [len(o) for o in objects]
    return {"class_counts": scenes.class_counts(objects, len(kind.names)), "objects": int(sum(per_image)),
            "objects_per_image": [int(min(per_image, default=0)), round(float(np.mean(per_image or [0])), 2),
                                  int(max(per_image, default=0))]}


def _generate(out_dir: Path, kind: _Kind, *, seed: int, counts: dict[str, int], size: int, min_size: int) -> Path:
    out_dir = Path(out_dir).expanduser().absolute()
    bad = {k: v for k, v in counts.items() if int(v) != v or v < 1}
    if bad or not 32 <= min_size <= size:
        raise SyntheticDataError(f"{kind.name}: counts must be whole numbers >= 1 and 32 <= min size <= size; got "
                                 f"{counts}, size={size}, min_size={min_size}.")
    manifest = {"schema": 1, "generator": kind.name, "generator_version": GENERATOR_VERSION, "seed": int(seed),
                "size": int(size), "min_size": int(min_size), "counts": {k: int(v) for k, v in counts.items()},
                "names": list(kind.names)}
    if _OUT.check(out_dir, manifest):
        log.info("%s data already present in %s", kind.name, out_dir)
        return out_dir / "data.yaml"

    def fill(folder: Path) -> str:
        stats = {s: _write_split(folder, kind, s, int(counts[s]), int(seed)) for s in SPLITS}
        manifest.update({"settings": kind.settings, "splits": stats})
        return kind.readme(manifest)

    return _OUT.build(out_dir, manifest, kind.names, fill)


def _counts_table(m: dict) -> str:
    rows = [f"| {s} | {m['counts'][s]} | {m['splits'][s]['objects']} | {m['splits'][s]['objects_per_image']} | "
            f"{m['splits'][s]['class_counts']} |" for s in SPLITS]
    return ("| split | images | objects | objects per image (min, mean, max) | objects per class |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def _command(m: dict) -> str:
    c = m["counts"]
    extra = f" --min-size {m['min_size']}" if m["generator"] == "shapes" else ""
    return (f"python -m al.data.synthetic {m['generator']} --out DIR --n-train {c['train']} --n-val {c['val']} "
            f"--n-test {c['test']} --size {m['size']}{extra} --seed {m['seed']}")


def _shapes_readme(m: dict) -> str:
    return f"""# Synthetic "shapes" dataset

Generated by `al/data/synthetic.py` (generator_version {GENERATOR_VERSION}):

    {_command(m)}

Procedural scenes only, no photograph: square images of {m['min_size']}-{m['size']} px (side drawn per image).

## Objects
{len(SHAPES_NAMES)} classes, equally likely: {', '.join(SHAPES_NAMES)}. 1-{SHAPES_MAX_OBJECTS} per image, filled in
any colour with a gentle shading ramp, {SHAPES_DIAMETER[0]:.0f}-{SHAPES_DIAMETER[1]:.0f} px circumscribed diameter
(log-uniform, at most 0.4 of the side), random rotation; {SHAPES_LOW_CONTRAST_RATE:.0%} in low contrast (15-30 luma
from the background). An object covers at most {1 - MIN_KEPT:.0%} of an earlier one and box IoU stays under
{MAX_IOU}; boxes are tight around the paint each object still shows.

## Backgrounds
Linear or radial gradients, value noise, soft or hard stripes and checkers between random colours, sometimes a
second texture blended over, per-channel colour jitter, occasional blur and thin clutter lines of no class;
Gaussian sensor noise over the finished image. JPEG quality {JPEG_QUALITY}.

## Counts
{_counts_table(m)}"""


def _symbols_readme(src: SymbolSources) -> Callable[[dict], str]:
    def readme(m: dict) -> str:
        rows = scenes.sources_table(src.background_names, src.backgrounds, src.background_files)
        classes = ", ".join(f"{n} {SYMBOL_GLYPHS[n]} (U+{ord(SYMBOL_GLYPHS[n]):04X}, p={p:.2f})"
                            for n, p in zip(SYMBOLS_NAMES, SYMBOLS_PROBS))
        lo, hi = SYMBOLS_HEIGHT[0] * m["size"], SYMBOLS_HEIGHT[1] * m["size"]
        return f"""# Synthetic "symbols" dataset

Generated by `al/data/synthetic.py` (generator_version {GENERATOR_VERSION}):

    {_command(m)}

Square images of {m['size']} px. Nothing was downloaded: the font and every background pixel come from files that
matplotlib ships.

## Objects
Glyphs of matplotlib's `fonts/ttf/{FONT_FILE}` (DejaVu fonts licence, `LICENSE_DEJAVU` beside it), one class
each, drawn with these frequencies: {classes}. {SYMBOLS_OBJECTS[0]}-{SYMBOLS_OBJECTS[1]} per image, {lo:.0f}-{hi:.0f}
px high (log-uniform), width x 0.86-1.16, rotated up to 12 degrees, in a colour that contrasts with the background
behind it ({SYMBOLS_LOW_CONTRAST_RATE:.0%} in low contrast), opacity 0.8-1.

Rendering style per split (the test style is never seen in train or val):

| split | style | extra stroke (share of the glyph height) | abs(slant) |
|---|---|---|---|
""" + "\n".join(f"| {s} | {SPLIT_STYLE[s].name} | {SPLIT_STYLE[s].stroke} | {SPLIT_STYLE[s].slant[0]}-"
                f"{SPLIT_STYLE[s].slant[1]} |" for s in SPLITS) + f"""

## Backgrounds
Random square crops (0.2-1 of the short side), horizontal and vertical flips, colour casts and brightness jitter
of:

| source | size | sha1 of the file |
|---|---|---|
{rows}

## Counts
{_counts_table(m)}"""
    return readme


def generate_shapes(out_dir: Path, *, seed: int = 0, n_train: int = 2400, n_val: int = 200, n_test: int = 200,
                    size: int = 128, min_size: int | None = None) -> Path:
    """Write the shapes dataset to out_dir (crash-safe, idempotent) and return its data.yaml path. Each image's side
    is drawn from min_size..size (default min_size: three quarters of size)."""
    lo = int(min_size) if min_size is not None else max(32, (int(size) * 3) // 4)

    def render(rng: np.random.Generator, split: str):
        return render_shapes_image(rng, int(rng.integers(lo, int(size) + 1)))

    settings = {"diameter_px": list(SHAPES_DIAMETER), "objects_per_image": [1, SHAPES_MAX_OBJECTS],
                "low_contrast_rate": SHAPES_LOW_CONTRAST_RATE, "jpeg_quality": JPEG_QUALITY}
    kind = _Kind("shapes", SHAPES_NAMES, settings, render, _shapes_readme)
    return _generate(out_dir, kind, seed=seed, counts={"train": n_train, "val": n_val, "test": n_test},
                     size=int(size), min_size=lo)


def generate_symbols(out_dir: Path, *, seed: int = 0, n_train: int = 360, n_val: int = 160, n_test: int = 160,
                     size: int = 128) -> Path:
    """Write the symbols dataset to out_dir (crash-safe, idempotent) and return its data.yaml path."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if _OUT.check(Path(out_dir).expanduser().absolute(), {
            "schema": 1, "generator": "symbols", "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "size": int(size), "min_size": int(size), "counts": counts, "names": SYMBOLS_NAMES}):
        return Path(out_dir).expanduser().absolute() / "data.yaml"  # present: no need to load the sources
    src = load_symbol_sources()

    def render(rng: np.random.Generator, split: str):
        return render_symbols_image(rng, src, int(size), SPLIT_STYLE[split])

    settings = {"class_probs": SYMBOLS_PROBS.tolist(), "glyphs": SYMBOL_GLYPHS, "font": FONT_FILE,
                "height_share": list(SYMBOLS_HEIGHT), "objects_per_image": list(SYMBOLS_OBJECTS),
                "low_contrast_rate": SYMBOLS_LOW_CONTRAST_RATE, "jpeg_quality": JPEG_QUALITY,
                "styles": {s: asdict(SPLIT_STYLE[s]) for s in SPLITS}, "backgrounds": src.background_names}
    kind = _Kind("symbols", SYMBOLS_NAMES, settings, render, _symbols_readme(src))
    return _generate(out_dir, kind, seed=seed, counts=counts, size=int(size), min_size=int(size))


def main(argv: list[str] | None = None) -> int:
    """CLI: generate a synthetic dataset and print one line with the counts and the data.yaml path."""
    p = argparse.ArgumentParser(prog="python -m al.data.synthetic", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    defaults = {"shapes": (2400, 200, 200), "symbols": (360, 160, 160)}
    helps = {"shapes": "geometric primitives on procedural textures (the pretraining domain)",
             "symbols": "DejaVu glyphs on crops of real images; held-out glyph style in test"}
    for name, (n_train, n_val, n_test) in defaults.items():
        sp = sub.add_parser(name, help=helps[name], description=helps[name])
        sp.add_argument("--out", type=Path, required=True, help="output folder (absent, empty, or this same dataset)")
        sp.add_argument("--n-train", type=int, default=n_train, help=f"train images (default: {n_train})")
        sp.add_argument("--n-val", type=int, default=n_val, help=f"val images (default: {n_val})")
        sp.add_argument("--n-test", type=int, default=n_test, help=f"test images (default: {n_test})")
        sp.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
        if name == "shapes":
            sp.add_argument("--min-size", type=int, default=None,
                            help="smallest image side; each image's side is drawn from min-size..size "
                                 "(default: three quarters of --size)")
        sp.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if a.kind == "shapes":
            y = generate_shapes(a.out, seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, size=a.size,
                                min_size=a.min_size)
        else:
            y = generate_symbols(a.out, seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, size=a.size)
    except SyntheticDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.kind} data: train={a.n_train} val={a.n_val} test={a.n_test} -> {y}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
