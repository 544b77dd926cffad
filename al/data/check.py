"""The one dataset check: every image and label file the loop hands to training, by the rules Ultralytics' training
applies (ultralytics/data/utils.py: check_image and verify_image_label), so that training and the loop's own
validation see the same data.

Ultralytics drops a whole image as "corrupt" for one bad label line and says so only in its training log, while the
loop's validation would drop only the line. This check runs before anything trains (at run start and on every merge
of reviewed labels) and lists each problem as `file:line: what is wrong → how to fix`; the caller refuses the run or
leaves the bad images out of every split (dataset.on_bad_data). A label file two images share (img.jpg and img.png
beside img.txt) is such a problem too: training would give both images its boxes. What training and validation
repair without a word (a box past the image edge, clipped; a box of zero width, which validation drops and training
keeps; a label file named in another Unicode normal form than its image) is noted for the caller to warn about.
Results are cached per file by (path, size, mtime) so a --resume re-checks only what changed.
"""

from __future__ import annotations

import math
import os
import sys
import unicodedata
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al.core import store
from al.data.dataset import DatasetError, label_path, yolo_label_path

# Pillow format names Ultralytics trains on (its IMG_FORMATS plus Pillow's name for .jp2).
TRAINABLE_FORMATS = {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp",
                     "jpeg2000"}
MIN_SIDE = 10
"""Ultralytics drops images smaller than this many pixels on a side."""
COORD_MAX = 1.01
"""Normalised coordinates may exceed 1 by 1 % (Ultralytics' tolerance)."""
COORD_MIN = -0.01
"""Box centres may go 1 % below 0 when no width or height in the file is negative (Ultralytics' tolerance)."""
EDGE_TOLERANCE = 1e-3
"""A box may pass the image edge by this fraction of the image side before the check notes it as clipped (labels
written with 6 decimals pass it by rounding, far less)."""
CACHE_SCHEMA = 2
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
    others: tuple[str, ...] = ()
    """Further images this makes unusable (the other images sharing a label file)."""

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
    clipped: dict[str, list[int]] = field(default_factory=dict)
    """Label file -> lines of boxes past the image edge (training and validation clip them to the image)."""
    empty: dict[str, list[int]] = field(default_factory=dict)
    """Label file -> lines of boxes of zero width or height (validation drops them; training keeps them)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Label file -> its image, where the two names differ in Unicode normal form only (matched by NFC)."""

    @property
    def bad_images(self) -> set[str]:
        return {p.image for p in self.problems} | {o for p in self.problems for o in p.others}

    def why(self, *, validation: bool = False) -> str:
        """What the problems do to training, said after the headline (with `validation`: and that validation would
        not drop the corrupt ones)."""
        corrupt = ["that training would drop as corrupt" + " (validation would not)" * validation] \
            if any(not p.others for p in self.problems) else []
        return " or ".join(corrupt + ["whose label file another image shares"] * any(p.others for p in self.problems))

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


@dataclass
class LabelFindings:
    """What the check finds in one label file."""

    problems: list[tuple[int | None, str, str]] = field(default_factory=list)
    """(line, what, fix) of each line Ultralytics' verify_image_label refuses (one drops the whole image)."""
    duplicates: int = 0
    clipped: list[int] = field(default_factory=list)
    """Lines of boxes past the image edge by more than EDGE_TOLERANCE."""
    empty: list[int] = field(default_factory=list)
    """Lines of boxes of zero width or height (after clipping to the image)."""


def inspect_label_text(text: str, nc: int, size: tuple[int, int] | None = None
                       ) -> tuple[list[tuple[int | None, str, str]], int]:
    """(line, what, fix) for every line of a YOLO detection label file that Ultralytics' verify_image_label would
    refuse (one is enough for it to drop the whole image), and how many exact duplicate rows it would remove.
    `size` (the image's width, height) only sharpens the advice for pixel coordinates."""
    found = label_findings(text, nc, size)
    return found.problems, found.duplicates


def label_findings(text: str, nc: int, size: tuple[int, int] | None = None) -> LabelFindings:
    """inspect_label_text's problems and duplicate rows, and the lines of boxes that training and validation
    repair: past the image edge (clipped) and of zero width or height."""
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
    found = LabelFindings(out, len(keys) - len(set(keys)))
    for no, _, nums in good:
        _, xc, yc, w, h = _xywh(nums)
        x1, y1, x2, y2 = xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
        if min(x2, 1) <= max(x1, 0) or min(y2, 1) <= max(y1, 0):  # what the loop's reader drops
            found.empty.append(no)
        elif min(x1, y1) < -EDGE_TOLERANCE or max(x2, y2) > 1 + EDGE_TOLERANCE:
            found.clipped.append(no)
    return found


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
    found = label_file_findings(path, nc, size)
    return found.problems, found.duplicates


def label_file_findings(path: str | Path, nc: int, size: tuple[int, int] | None = None) -> LabelFindings:
    """label_findings of a file, read as Ultralytics reads it (UTF-8, with or without a byte-order mark)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return LabelFindings([(None, f"not UTF-8 text (byte {e.start})", "save the label file as plain UTF-8 text")])
    except OSError as e:
        return LabelFindings([(None, f"label file cannot be read ({e.strerror})", "restore it or delete it")])
    return label_findings(text, nc, size)


def check_image_and_label(image: str, nc: int) -> tuple[list[Problem], LabelFindings]:
    """Problems of one image and of its label file (a missing label file is a negative, not a problem), and what
    else its label file holds (duplicate rows, clipped and empty boxes)."""
    issue, size = inspect_image(image)
    out = [Problem(image, image, None, *issue)] if issue else []
    lp = label_path(image)
    found = LabelFindings()
    if lp.is_file():
        found = label_file_findings(lp, nc, size)
        out += [Problem(image, str(lp), no, what, fix) for no, what, fix in found.problems]
    return out, found


def shared_labels(images: list[str]) -> list[Problem]:
    """A problem for each label file that several images map to (img_000.jpg and img_000.png beside one
    img_000.txt): training would give every one of them its boxes. The images are the problem's image and others."""
    groups: dict[str, list[str]] = {}
    for img in images:
        if (lp := label_path(img)).is_file():
            groups.setdefault(str(lp), []).append(img)
    out = []
    for label, members in groups.items():
        if len(members) < 2:
            continue
        first, *rest = sorted(members)
        names = ", ".join([first, *rest[:-1]]) + f" and {rest[-1]}"
        b = Path(rest[0])
        out.append(Problem(first, label, None,
                           f"the label file of {len(members)} images, {names} (one name, other extensions): "
                           f"training would give each of them these boxes",
                           f"rename {'one' if len(rest) == 1 else 'all but one'} of the images (e.g. {b.name} to "
                           f"{b.stem}_{b.suffix.lstrip('.').lower()}{b.suffix}) and give it its own label file, "
                           f"or none if it shows no objects", tuple(rest)))
    return out


def orphan_labels(images: Iterable[str]) -> list[tuple[str, str]]:
    """Label files without an image: (label file, image folder) for each label file in the label folder of an
    image folder of `images` whose name (compared in Unicode NFC) is that of no file in the image folder. A .txt
    file that does not start like a label file (a split list of paths, LabelImg's classes.txt) is not one."""
    out = []
    for folder in sorted({str(Path(p).parent) for p in images}):
        labels = yolo_label_path(Path(folder) / "x.jpg").parent
        if not labels.is_dir():
            continue
        have = {unicodedata.normalize("NFC", f.stem) for f in Path(folder).iterdir() if f.suffix != ".txt"}
        for f in sorted(labels.iterdir()):
            if f.suffix == ".txt" and unicodedata.normalize("NFC", f.stem) not in have and f.is_file() \
                    and _looks_like_labels(f):
                out.append((str(f), folder))
    return out


def _looks_like_labels(path: Path) -> bool:
    """Empty (a negative), or its first line starts with a number (a class id)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(256).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    toks = head.split()
    return not toks or _number(toks[0]) is not None


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
            probs, found = fresh[img]
        else:
            e = old[img]
            probs = [Problem(*p) for p in e["problems"]]
            found = LabelFindings(duplicates=e["dups"], clipped=e["clipped"], empty=e["empty"])
        rep.problems += probs
        lp = label_path(img)
        for kind, value in (("duplicates", found.duplicates), ("clipped", found.clipped), ("empty", found.empty)):
            if value:
                getattr(rep, kind)[str(lp)] = value
        if lp.is_file() and lp.name != yolo_label_path(img).name:
            rep.renamed[str(lp)] = img
        files[img] = {"image": stats[img][0], "label": stats[img][1], "problems": [p.to_list() for p in probs],
                      "dups": found.duplicates, "clipped": found.clipped, "empty": found.empty}
    rep.problems += shared_labels(images)  # a relation between files: never cached
    if cache is not None:
        store.write_json(cache, {"nc": nc, "files": files}, schema=CACHE_SCHEMA)
    return rep


def write_report(path: Path, rep: Report, *, source: str, action: str) -> None:
    """Every problem of a check that found some (the refusal message lists only the first ones)."""
    store.write_json(path, {"source": source, "action": action, "images": rep.images,
                            "bad_images": sorted(rep.bad_images),
                            "problems": [{"image": p.image, "file": p.file, "line": p.line, "what": p.what,
                                          "fix": p.fix, **({"others": list(p.others)} if p.others else {})}
                                         for p in rep.problems],
                            "duplicate_rows": rep.duplicates})
