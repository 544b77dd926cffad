"""The one dataset check: every image and label file the loop hands to training, by the rules Ultralytics' training
applies (ultralytics/data/utils.py: check_image and verify_image_label), so that training and the loop's own
validation see the same data.

Ultralytics drops a whole image as "corrupt" for one bad label line and says so only in its training log, while the
loop's validation would drop only the line. This check runs before anything trains (at run start and on every merge
of reviewed labels) and lists each problem as `file:line: what is wrong → how to fix`; the caller refuses the run or
leaves the bad images out of every split (dataset.on_bad_data). Results are cached per file by (path, size, mtime)
so a --resume re-checks only what changed.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al.core import store
from al.data.dataset import DatasetError, label_path

# Pillow format names Ultralytics trains on (its IMG_FORMATS plus Pillow's name for .jp2).
TRAINABLE_FORMATS = {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp",
                     "jpeg2000"}
MIN_SIDE = 10
"""Ultralytics drops images smaller than this many pixels on a side."""
COORD_MAX = 1.01
"""Normalised coordinates may exceed 1 by 1 % (Ultralytics' tolerance)."""
COORD_MIN = -0.01
"""Box centres may go 1 % below 0 when no width or height in the file is negative (Ultralytics' tolerance)."""
CACHE_SCHEMA = 1
BOX_FORMAT = "cls xc yc w h (numbers, coordinates normalised to 0..1)"


class BadDataError(DatasetError):
    """Images or label files break the rules training applies; the message lists `file:line: what → fix`."""


@dataclass(frozen=True)
class Problem:
    """One reason an image cannot be trained on."""

    image: str
    """The image this makes unusable (the one left out under dataset.on_bad_data: skip)."""
    file: str
    """The file to fix: the image itself or its label file."""
    line: int | None
    what: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.what} → {self.fix}"

    def to_list(self) -> list:
        return [self.image, self.file, self.line, self.what, self.fix]


@dataclass
class Report:
    """What one check found over a list of images."""

    images: int = 0
    checked: int = 0
    """Images examined now; the rest were unchanged since the cached check."""
    problems: list[Problem] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    """Label file -> exact duplicate rows (Ultralytics removes them with a warning; so does the loop's reader)."""

    @property
    def bad_images(self) -> set[str]:
        return {p.image for p in self.problems}

    def describe(self, limit: int = 20) -> str:
        """The first `limit` problems, one per line, and how many more there are."""
        lines = [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)

    def headline(self) -> str:
        return (f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''} in "
                f"{len(self.bad_images)} of {self.images} images")


# ------------------------------------------------------------------------------------------------------ images

def _exif_size(im) -> tuple[int, int]:
    """(width, height) after the EXIF orientation, as Ultralytics' exif_size reads it."""
    w, h = im.size
    try:
        if im.getexif().get(274) in {5, 6, 7, 8}:  # rotated by 90 degrees
            return h, w
    except Exception:  # a broken EXIF block leaves the stored size (Ultralytics does the same)
        pass
    return w, h


def _pillow_open():
    """Pillow's own Image.open. Ultralytics, once imported in this process, replaces it with one that tries to
    install and import a HEIF plugin for any file Pillow cannot identify (a text file named .jpg then fails with
    "No module named 'pi_heif'"); the check wants Pillow's answer."""
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")  # looked up, never imported here
    return getattr(patches, "_image_open", None) or Image.open


def inspect_image(path: str | Path) -> tuple[tuple[str, str] | None, tuple[int, int] | None]:
    """((what is wrong, how to fix it) or None, (width, height) or None) of one image, by Ultralytics' check_image:
    Pillow verify, at least 10 px a side, a trainable format, and a JPEG that either ends with its end marker or
    still decodes (Ultralytics re-saves such a JPEG; it drops one that does not decode)."""
    from PIL import UnidentifiedImageError

    pil_open = _pillow_open()
    p = Path(path)
    try:
        nbytes = p.stat().st_size
    except OSError as e:
        return (f"image cannot be read ({e.strerror})", "restore the file or remove it from the split"), None
    if nbytes == 0:
        return ("empty file (0 bytes)", "replace it with the real image or delete it"), None
    redo = "re-export or re-download the image, or delete it"
    try:
        with pil_open(p) as im:
            im.verify()
            fmt = (im.format or "").lower()
            size = _exif_size(im)
    except (UnidentifiedImageError, ImportError):  # ImportError: a patched open's missing plugin, same meaning
        with p.open("rb") as fh:
            head = fh.read(16)
        return (f"not an image Pillow can read (the file starts with {head!r})",
                "replace it with a real JPEG or PNG, or delete it"), None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... for damaged files
        return (f"Pillow cannot decode it ({type(e).__name__}: {e})", redo), None
    w, h = size
    if w < MIN_SIDE or h < MIN_SIDE:
        return (f"image is {w}x{h} px; training drops images under {MIN_SIDE} px a side",
                "use a larger image or delete it"), size
    if fmt not in TRAINABLE_FORMATS:
        return (f"{fmt.upper() or 'unknown'} image data (training reads JPEG, PNG, BMP, TIFF, WebP)",
                "convert it to JPEG or PNG"), size
    if fmt == "jpeg":
        with p.open("rb") as fh:
            fh.seek(-2, os.SEEK_END)
            ends = fh.read() == b"\xff\xd9"
        if not ends:
            try:
                with pil_open(p) as im:
                    im.load()
            except Exception as e:
                return (f"truncated JPEG ({e})", redo), size
    return None, size


# ------------------------------------------------------------------------------------------------------ labels

def _number(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def inspect_label_text(text: str, nc: int, size: tuple[int, int] | None = None
                       ) -> tuple[list[tuple[int | None, str, str]], int]:
    """(line, what, fix) for every line of a YOLO detection label file that Ultralytics' verify_image_label would
    refuse (one is enough for it to drop the whole image), and how many exact duplicate rows it would remove.
    `size` (the image's width, height) only sharpens the advice for pixel coordinates."""
    out: list[tuple[int | None, str, str]] = []
    rows: list[tuple[int, int, tuple[float, ...]]] = []  # (line, fields, values) of the numeric lines
    for no, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if not toks:
            continue
        vals = [_number(t) for t in toks]
        bad = [(i, t) for i, (t, v) in enumerate(zip(toks, vals), 1) if v is None]
        if bad:
            i, t = bad[0]
            out.append((no, f"field {i} {t[:20]!r} is not a number", f"write {BOX_FORMAT}, or delete the line"))
            continue
        nums = tuple(float(v) for v in vals if v is not None)
        odd = [(i, t) for i, (t, v) in enumerate(zip(toks, nums), 1) if not math.isfinite(v)]
        if odd:
            i, t = odd[0]
            out.append((no, f"field {i} is {t!r} (not a finite number)", "write the real value, or delete the line"))
            continue
        rows.append((no, len(nums), nums))
    polygons, boxes = [r for r in rows if r[1] > 6], [r for r in rows if r[1] == 5]
    # Ultralytics refuses a file mixing both; the rows of the rarer kind are the ones to change
    odd_one = "polygon" if len(polygons) < len(boxes) else "box"
    for no, n, nums in rows:
        if n < 5:
            out.append((no, f"{n} fields; a box needs 5: {BOX_FORMAT}", "complete the line or delete it"))
            continue
        if n == 6:
            out.append((no, "6 fields; a box has 5 (a confidence column from a predictions file?)",
                        f"keep {BOX_FORMAT}: drop the 6th field"))
            continue
        if n > 6 and n % 2 == 0:
            out.append((no, f"polygon with an odd number of coordinates ({n - 1})",
                        "give each point an x and a y, or delete the line"))
            continue
        if polygons and boxes and odd_one == ("box" if n == 5 else "polygon" if n > 6 else ""):
            other = boxes if odd_one == "polygon" else polygons
            out.append((no, f"a {odd_one} row in a file of {'box' if odd_one == 'polygon' else 'polygon'} rows "
                            f"(line {other[0][0]})",
                        "use one format per file: all boxes (cls xc yc w h) or all polygons"))
            continue
        out += [(no, what, fix) for what, fix in _row_problems(nums, nc, size)]
    good = [r for r in rows if r[0] not in {p[0] for p in out}]
    keys = [np.asarray(nums, dtype=np.float32).tobytes() for _, _, nums in good]  # as Ultralytics compares rows
    return out, len(keys) - len(set(keys))


def _xywh(nums: tuple[float, ...]) -> tuple[float, ...]:
    """cls, xc, yc, w, h of a box row, or of a polygon row's bounding box (Ultralytics' segments2boxes)."""
    if len(nums) == 5:
        return nums
    xs, ys = nums[1::2], nums[2::2]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return nums[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def _row_problems(nums: tuple[float, ...], nc: int, size: tuple[int, int] | None) -> list[tuple[str, str]]:
    cls, xc, yc, w, h = _xywh(nums)
    ids = f"a class id 0..{nc - 1} (the {nc} names of data.yaml, in order)"
    if cls % 1:
        return [(f"class {cls:g} is not an integer", f"use {ids}")]
    if cls < 0:
        return [(f"class {cls:g} is negative", f"use {ids}")]
    if cls >= nc:
        return [(f"class {cls:g} is outside 0..{nc - 1} (data.yaml has {nc} names)",
                 f"use {ids}, or add the class to names in data.yaml")]
    coords = (xc, yc, w, h)
    if max(coords) > COORD_MAX:
        if min(coords) >= 1:
            scale = (f"divide x and w by the image width ({size[0]}) and y and h by its height ({size[1]})" if size
                     else "divide x and w by the image width and y and h by its height")
            return [(f"coordinates {' '.join(f'{v:g}' for v in coords)} look like pixels; YOLO labels are "
                     f"fractions of the image size (0..1)", scale)]
        return [(f"coordinate {max(coords):g} is above 1 (coordinates are fractions of the image size)",
                 "fix the box so it lies inside the image (0..1), or delete the line")]
    if min(coords) < COORD_MIN or w < 0 or h < 0:
        return [(f"negative coordinate {min(coords):g}", "fix the box so it lies inside the image (0..1), or delete "
                 "the line")]
    return []


def inspect_label_file(path: str | Path, nc: int, size: tuple[int, int] | None = None
                       ) -> tuple[list[tuple[int | None, str, str]], int]:
    """inspect_label_text of a file, read as Ultralytics reads it (UTF-8, with or without a byte-order mark)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return [(None, f"not UTF-8 text (byte {e.start})", "save the label file as plain UTF-8 text")], 0
    except OSError as e:
        return [(None, f"label file cannot be read ({e.strerror})", "restore it or delete it")], 0
    return inspect_label_text(text, nc, size)


def check_image_and_label(image: str, nc: int) -> tuple[list[Problem], int]:
    """Problems of one image and of its label file (a missing label file is a negative, not a problem), and its
    duplicate label rows."""
    issue, size = inspect_image(image)
    out = [Problem(image, image, None, *issue)] if issue else []
    lp = label_path(image)
    dups = 0
    if lp.is_file():
        found, dups = inspect_label_file(lp, nc, size)
        out += [Problem(image, str(lp), no, what, fix) for no, what, fix in found]
    return out, dups


def check_boxes(image: str, boxes: np.ndarray, nc: int, where: str | None = None) -> list[Problem]:
    """Problems of reviewed boxes ((N,5) [cls, x1, y1, x2, y2] normalised) as the label file they become, named by
    box number; `where` is the file they came from (default: the image)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    out = []
    for i, (c, x1, y1, x2, y2) in enumerate(b, 1):
        row = (c, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        if not all(math.isfinite(v) for v in row):
            found = [("a value is NaN or infinite", "fix the box's coordinates, or delete the box")]
        else:
            found = _row_problems(row, nc, None)
        out += [Problem(image, where or image, None, f"box {i}: {what}", fix) for what, fix in found]
    return out


# ------------------------------------------------------------------------------------------------------ the check

def _stat(p: Path) -> list[int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_cache(path: Path | None, nc: int) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        data = store.read_json(path, schema=CACHE_SCHEMA, required=("nc", "files"))
    except store.StoreError:
        return {}  # a cache is only a shortcut: a damaged one is rebuilt
    return data["files"] if data["nc"] == nc else {}


def check_images(images: Iterable[str], nc: int, *, cache: Path | None = None, workers: int | None = None
                 ) -> Report:
    """Check each image and its label file once; unchanged files (same path, size and mtime of the image and of its
    label file) reuse the result cached in `cache`, which is rewritten with this check's results."""
    images = list(dict.fromkeys(images))
    old = _load_cache(cache, nc)
    stats = {img: [_stat(Path(img)), _stat(label_path(img))] for img in images}
    todo = [img for img in images if (e := old.get(img)) is None or [e["image"], e["label"]] != stats[img]]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as ex:  # Pillow and file reads release the GIL
        fresh = dict(zip(todo, ex.map(lambda img: check_image_and_label(img, nc), todo)))
    rep = Report(images=len(images), checked=len(todo))
    files = {}
    for img in images:
        if img in fresh:
            probs, dups = fresh[img]
        else:
            e = old[img]
            probs, dups = [Problem(*p) for p in e["problems"]], e["dups"]
        rep.problems += probs
        if dups:
            rep.duplicates[str(label_path(img))] = dups
        files[img] = {"image": stats[img][0], "label": stats[img][1], "problems": [p.to_list() for p in probs],
                      "dups": dups}
    if cache is not None:
        store.write_json(cache, {"nc": nc, "files": files}, schema=CACHE_SCHEMA)
    return rep


def write_report(path: Path, rep: Report, *, source: str, action: str) -> None:
    """Every problem of a check that found some (the refusal message lists only the first ones)."""
    store.write_json(path, {"source": source, "action": action, "images": rep.images,
                            "bad_images": sorted(rep.bad_images),
                            "problems": [{"image": p.image, "file": p.file, "line": p.line, "what": p.what,
                                          "fix": p.fix} for p in rep.problems],
                            "duplicate_rows": rep.duplicates})
