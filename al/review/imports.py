"""The one way reviewed labels come back in, whatever carries them: a folder or zip of YOLO label files, a COCO
JSON, a YOLO export with its data.yaml (Roboflow's renamed files included), or seed 004's whole reviewed dataset in
dataset.combined_dir. Every way in is held to the same rules:

- a zip is checked as a whole before a byte is written (member names with '\\' read as '/', none absolute, climbing
  out, a link or a device; member-count, size and expansion-ratio limits), extracted beside its final folder and
  removed again on any refusal;
- class names are compared by name (data.yaml, classes.txt, COCO categories): the project's names in its order are
  used as they are, anything else is refused unless the configured class mapping covers it;
- a file is matched to the picked image it stands for by its original name (Roboflow's renaming undone), then its
  stem, then its content hash (Matcher; the Roboflow backend matches its export with the same one).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from al.core.config import LocalReviewConfig
from al.core.errors import ReviewError, UserError
from al.data import dataset, hashing
from al.data.labels import Labelled, class_map, read_norm_labels, remap

MIB = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_RF_NAME = re.compile(r"^(?P<stem>.+)_(?P<ext>[A-Za-z0-9]{2,5})\.rf\.[0-9A-Za-z]+$")
_SKIPPED = ("__MACOSX/",)  # macOS resource forks: never labels


@dataclass(frozen=True)
class Rules:
    """What an import accepts: the project's classes, the class mapping (and the config key it is set under, named in
    errors) and the zip limits."""

    names: list[str]
    class_mapping: dict[str, str | None] = field(default_factory=dict)
    mapping_key: str = "review.local.class_mapping"
    max_zip_bytes: int = 2 << 30
    max_zip_members: int = 100_000
    max_zip_ratio: float = 200.0

    @classmethod
    def local(cls, lc: LocalReviewConfig, names: list[str]) -> Rules:
        """The rules of review.local."""
        return cls(list(names), dict(lc.class_mapping), "review.local.class_mapping", lc.max_zip_bytes,
                   lc.max_zip_members, lc.max_zip_ratio)


# ------------------------------------------------------------------------------------------------------------ zips

def _size(n: float) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


def check_zip(zf: zipfile.ZipFile, where: Path, rules: Rules) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The members to extract, each with its path parts ('\\' read as '/'), after checking the archive as a whole:
    one member that is absolute, climbs out, is a link or a device, is encrypted or comes twice refuses it, and so do
    more than max_zip_members members, more than max_zip_bytes uncompressed, or a member that expands more than
    max_zip_ratio times (a zip bomb)."""
    def refuse(why: str, fix: str):
        raise ReviewError(f"{where}: refused, nothing extracted: {why}. {fix}")

    infos = zf.infolist()
    unzip_yourself = "If the archive is genuine, unzip it yourself and hand back the folder, or raise"
    if len(infos) > rules.max_zip_members:
        refuse(f"{len(infos)} members, more than review.local.max_zip_members = {rules.max_zip_members}",
               f"{unzip_yourself} review.local.max_zip_members.")
    total = sum(i.file_size for i in infos)
    if total > rules.max_zip_bytes:
        refuse(f"{_size(total)} uncompressed, more than review.local.max_zip_bytes = {_size(rules.max_zip_bytes)}",
               f"{unzip_yourself} review.local.max_zip_bytes.")
    bad, seen, out = [], set(), []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        kind = stat.S_IFMT(info.external_attr >> 16)
        if name.startswith("/") or _DRIVE.match(name) or ".." in parts or "\0" in name \
                or kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            bad.append(info.filename)
            continue
        if info.flag_bits & 0x1:
            refuse(f"member {info.filename!r} is encrypted", "Re-create the zip without a password.")
        if info.file_size > MIB and info.file_size > rules.max_zip_ratio * max(info.compress_size, 1):
            refuse(f"member {info.filename!r} expands from {_size(info.compress_size)} to {_size(info.file_size)} "
                   f"({info.file_size / max(info.compress_size, 1):.0f} times, more than "
                   f"review.local.max_zip_ratio = {rules.max_zip_ratio:g}), a zip bomb",
                   f"{unzip_yourself} review.local.max_zip_ratio.")
        if info.is_dir() or name.endswith("/") or not parts or name.startswith(_SKIPPED):
            continue
        if parts in seen:
            refuse(f"member {'/'.join(parts)!r} comes twice (one would overwrite the other)",
                   "Re-create the zip with each file once.")
        seen.add(parts)
        out.append((info, parts))
    if bad:
        refuse(f"{len(bad)} member(s) would be written outside the extraction folder or are links "
               f"(e.g. {bad[0]!r})", "Re-create the zip from inside the folder that holds the labels.")
    return out


def extract(zip_path: Path, dest: Path, rules: Rules) -> None:
    """Check the zip (check_zip), then write its members under dest (which must not exist yet), counting every byte:
    a member that inflates past its declared size stops the extraction."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = check_zip(zf, zip_path, rules)
            dest.mkdir(parents=True)
            budget = rules.max_zip_bytes
            for info, parts in members:
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                left = info.file_size
                with zf.open(info) as src, open(target, "xb") as dst:
                    while chunk := src.read(MIB):
                        left -= len(chunk)
                        budget -= len(chunk)
                        if left < 0 or budget < 0:
                            raise ReviewError(f"{zip_path}: refused: member {info.filename!r} inflates past the size "
                                              f"its header declares (a zip bomb). Re-create the zip.")
                        dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ReviewError(f"{zip_path}: not a valid zip file ({e}). Re-create it, or hand the labels back as a "
                          f"folder.") from None
    except NotImplementedError as e:
        raise ReviewError(f"{zip_path}: {e}. Re-create the zip with the usual deflate compression.") from None


def unpack(zip_path: Path, dest: Path, rules: Rules) -> Path:
    """Extract a zip into a temporary folder beside dest, then move it to dest (an earlier extraction is removed
    first). Nothing is left behind when the zip is refused or the extraction fails."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    for old in (tmp, dest):  # an earlier import's, or what a killed one left
        shutil.rmtree(old, ignore_errors=True)
    try:
        extract(zip_path, tmp, rules)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.replace(dest)
    return dest


# -------------------------------------------------------------------------------------------------------- matching

def original_name(file_name: str) -> str:
    """Roboflow renames 'img_01.jpg' to 'img_01_jpg.rf.<hash>.jpg' (its label to '...rf.<hash>.txt'); this undoes it
    (other names pass through)."""
    p = Path(file_name)
    m = _RF_NAME.match(p.stem)
    return f"{m.group('stem')}.{m.group('ext')}" if m else p.name


def _unique_index(items: list[dict], key) -> dict[str, dict]:
    """key(item) -> item, leaving out keys two items share (an ambiguous key must not pick one of them)."""
    idx: dict[str, dict] = {}
    clash = set()
    for it in items:
        k = key(it)
        if k in idx and idx[k] is not it:
            clash.add(k)
        idx[k] = it
    return {k: v for k, v in idx.items() if k not in clash}


class Matcher:
    """Which wanted item (a pick in the package, an upload) a returned file stands for: by its original name
    (Roboflow's renaming undone), then its stem (a label file), then the image's content hash. Items are dicts with
    'name' (unique) and 'hash'."""

    def __init__(self, items: list[dict]):
        self.items = items
        self.by_name = _unique_index(items, lambda it: it["name"].lower())
        self.by_stem = _unique_index(items, lambda it: Path(it["name"]).stem.lower())
        self.by_hash = {it["hash"]: it for it in items if it.get("hash")}

    def find(self, file_name: str, image: Path | None = None) -> dict | None:
        orig = original_name(PurePosixPath(file_name.replace("\\", "/")).name)
        it = self.by_name.get(orig.lower()) or self.by_stem.get(Path(orig).stem.lower())
        if it is None and image is not None and self.by_hash:
            it = self.by_hash.get(hashing.file_hash(image))
        return it


def unique_names(images: list[str]) -> list[str]:
    """File names for the picked images, unique by stem (case-insensitive), so that each has a label file of its
    own: a.jpg and a.png become a.jpg and a_1.png, x/a.jpg and y/a.jpg become a.jpg and a_1.jpg. The package, the
    Roboflow uploads and every import name the picks this way."""
    out, taken = [], set()
    for img in images:
        p = Path(img)
        stem, i = p.stem, 1
        while stem.lower() in taken:
            stem = f"{p.stem}_{i}"
            i += 1
        taken.add(stem.lower())
        out.append(stem + p.suffix)
    return out


def wanted_picks(picks: list[dict]) -> list[dict]:
    """Match items for picks: their unique names (as in the package and the uploads) and content hashes."""
    images = [p["image"] for p in picks]
    return [{"name": n, "image": img, "hash": hashing.file_hash(img)} for img, n in zip(images, unique_names(images))]


# ----------------------------------------------------------------------------------------------------- class names

def class_ids(got: list[str], where: str, rules: Rules) -> np.ndarray:
    """Returned class id -> project class id (-1 drops it): as is when the names equal the project's in order,
    through the class mapping otherwise; refused (with the mapping to write) when the mapping does not cover them."""
    key, names = rules.mapping_key, rules.names
    suggest = ", ".join(f"{n}: {n}" if n in names else f"{n}: <a project class, or null to drop it>" for n in got)
    fix = (f"Keep the project's classes in its order ({', '.join(names)}; see classes.txt in the package), or map "
           f"the returned names in {key}, e.g. {key}: {{{suggest}}}; then run again with --resume.")
    return class_map(got, names, rules.class_mapping, False, where, fix, key)


def _listed_names(f: Path) -> list[str]:
    if f.name == "classes.txt":
        return [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return dataset.read_data_yaml(f, require_splits=False).names


def _folder_classes(folder: Path, rules: Rules) -> tuple[np.ndarray, int]:
    """The class map of a folder of label files from its classes.txt / data.yaml files (all must list the same
    names); none: the project's order is assumed."""
    files = sorted((f for f in folder.rglob("*") if f.name in ("classes.txt", "data.yaml") and f.is_file()
                    and not _hidden(f, folder)), key=lambda f: (len(f.parts), str(f)))
    if not files:
        return np.arange(len(rules.names)), len(rules.names)
    lists = [(f, _listed_names(f)) for f in files]
    first, got = lists[0]
    for f, other in lists[1:]:
        if other != got:
            raise ReviewError(f"{f}: class names {other} differ from {got} in {first}. Hand back one list of "
                              f"classes (the package's classes.txt), then run again with --resume.")
    return class_ids(got, str(first), rules), len(got)


# --------------------------------------------------------------------------------------------------------- reading

@dataclass
class Found:
    """One returned image's labels: the wanted item it belongs to (None: an image nobody picked), its boxes in
    project class ids, the file they were read from and, when the source carries images, the returned image."""

    item: dict | None
    boxes: np.ndarray
    file: Path
    image: Path | None = None


@dataclass
class Result:
    """What a source gave back, and how much of it was left out."""

    found: list[Found]
    what: str
    counts: dict = field(default_factory=dict)


def _hidden(f: Path, root: Path) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in f.relative_to(root).parts)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b, atol=1e-6)


def _label_folder(folder: Path, matcher: Matcher, rules: Rules) -> Result:
    cmap, nc = _folder_classes(folder, rules)
    found: dict[str, Found] = {}
    for f in sorted(folder.rglob("*.txt")):
        if f.name == "classes.txt" or not f.is_file() or _hidden(f, folder):
            continue
        it = matcher.find(f.name)
        if it is None:
            continue
        boxes = remap(read_norm_labels(f, nc), cmap)
        prev = found.get(it["name"])
        if prev is not None and not _same(prev.boxes, boxes):
            raise ReviewError(f"{f} and {prev.file}: two different label files for {it['name']}. Hand back one "
                              f"label file per image, then run again with --resume.")
        found.setdefault(it["name"], Found(it, boxes, f))
    return Result(list(found.values()), f"YOLO labels in {folder}")


def coco(path: Path, matcher: Matcher, rules: Rules) -> Result:
    """Labels from a COCO JSON, categories by name (through the class mapping); images matched by file name. An image
    without annotations is a negative; categories no annotation uses are harmless (tools export their whole set)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReviewError(f"{path}: not valid JSON ({e}). Export COCO JSON again.") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ReviewError(f"{path}: not a COCO file (needs images, annotations and categories).")
    names, mapping = rules.names, rules.class_mapping
    cats = {c["id"]: str(c["name"]) for c in data["categories"]}
    used = {a.get("category_id") for a in data["annotations"]}
    unknown = sorted({cats.get(c, f"id {c}") for c in used} - set(names) - set(mapping))
    if unknown:
        raise ReviewError(f"{path}: categories {unknown} are not project classes {names}. Rename them to the "
                          f"project's class names (see classes.txt), or map them in {rules.mapping_key} (name -> "
                          f"project name, or null to drop); then import again.")
    bad_targets = sorted(f"{cats[c]} -> {mapping[cats[c]]}" for c in used if cats[c] in mapping
                         and mapping[cats[c]] is not None and mapping[cats[c]] not in names)
    if bad_targets:
        raise ReviewError(f"{path}: {rules.mapping_key} maps to names that are not project classes: {bad_targets}. "
                          f"Map to one of {names}, or to null to drop the class.")
    target = {c: (-1 if (t := mapping.get(n, n)) is None else names.index(t)) for c, n in cats.items() if c in used}
    by_id: dict = {}
    rows: dict[str, list] = {}
    for im in data["images"]:
        it = matcher.find(str(im.get("file_name", "")))
        if it is None:
            continue
        if it["name"] in rows:
            raise ReviewError(f"{path}: {it['name']} is listed twice in 'images'. Export each image once.")
        w, h = float(im.get("width") or it.get("width") or 0), float(im.get("height") or it.get("height") or 0)
        if w <= 0 or h <= 0:
            raise ReviewError(f"{path}: image {im.get('file_name')!r} has no width/height. Export COCO JSON again.")
        by_id[im["id"]] = (it, w, h)
        rows[it["name"]] = []
    for a in data["annotations"]:
        if a.get("image_id") not in by_id or target[a["category_id"]] < 0:
            continue
        if not isinstance(a.get("bbox"), list) or len(a["bbox"]) != 4:
            raise ReviewError(f"{path}: annotation {a.get('id')} has no bbox [x, y, width, height]. Export boxes "
                              f"(object detection), then import again.")
        it, w, h = by_id[a["image_id"]]
        x, y, bw, bh = (float(v) for v in a["bbox"])
        rows[it["name"]].append([target[a["category_id"]], x / w, y / h, (x + bw) / w, (y + bh) / h])
    found = []
    for it, _, _ in by_id.values():
        b = np.asarray(rows[it["name"]], float).reshape(-1, 5)
        b[:, 1:] = b[:, 1:].clip(0, 1)
        found.append(Found(it, b, path))
    return Result(found, f"COCO {path}")


def yolo_dataset(yml: Path, matcher: Matcher, rules: Rules, *, extras: bool) -> Result:
    """Images and labels of a YOLO export (train, val, test as its data.yaml says, paths resolved the way Ultralytics
    does). Each wanted item is taken once (later copies are augmentations or duplicates); with `extras` the train/val
    images nobody picked come too (dataset.combined_dir), otherwise they are ignored."""
    spec = dataset.read_data_yaml(yml, require_splits=False)
    cmap = class_ids(spec.names, str(yml), rules)
    images = list(dict.fromkeys(spec.splits["train"] + spec.splits["val"] + spec.splits["test"]))
    if not images:
        raise ReviewError(f"{yml}: its train/val/test entries hold no images. Export the reviewed images with "
                          f"their labels (images/ beside labels/), then run again with --resume.")
    test = set(spec.splits["test"]) - set(spec.splits["train"]) - set(spec.splits["val"])
    found, taken = [], set()
    ignored = augmented = 0
    for img in images:
        it = matcher.find(Path(img).name, Path(img))
        if it is not None and it["name"] in taken:
            augmented += 1
            continue
        if it is None and (not extras or img in test):
            ignored += 1  # another image of the export, not picked this iteration
            continue
        lp = dataset.label_path(img)
        found.append(Found(it, remap(read_norm_labels(lp, len(spec.names)), cmap), lp, Path(img)))
        if it is not None:
            taken.add(it["name"])
    return Result(found, f"YOLO dataset {yml}", {"exported_images": len(images), "ignored_not_selected": ignored,
                                                 "augmented_ignored": augmented})


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in dataset.IMG_SUFFIXES for f in folder.rglob("*") if not _hidden(f, folder))


def dataset_yaml(folder: Path) -> Path | None:
    """The data.yaml of a YOLO export in folder (at its top, or in its one subfolder); None for a folder of label
    files (no images beside its data.yaml) or the annotation package itself (package.json)."""
    inside = [d for d in folder.iterdir() if not d.name.startswith(".") and d.name != "__MACOSX"]
    for root in [folder] + (inside if len(inside) == 1 and inside[0].is_dir() else []):
        if (root / "data.yaml").is_file() and not (root / "package.json").is_file() and _has_images(root):
            return root / "data.yaml"
    return None


def read(source: Path, matcher: Matcher, rules: Rules, unpack_dir: Path, *, extras: bool = False) -> Result:
    """Returned labels from a zip (extracted into unpack_dir, after the checks), a COCO JSON, a YOLO export with a
    data.yaml, or a folder of YOLO label files (a zip or a JSON inside it is used when it holds no label files;
    label files win over a JSON beside them). On any failure the extracted zip is removed again."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".zip":
        folder = unpack(source, unpack_dir, rules)
        try:
            res = _read_folder(folder, matcher, rules, extras, unpack_dir=None)
        except UserError as e:  # name the member of the zip, not the folder that is removed now
            shutil.rmtree(folder, ignore_errors=True)
            raise type(e)(str(e).replace(f"{folder}/", f"{source}: ")) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        res.what = f"zip {source}"
        return res
    if source.is_file() and source.suffix.lower() == ".json":
        return coco(source, matcher, rules)
    if source.is_dir():
        return _read_folder(source, matcher, rules, extras, unpack_dir=unpack_dir)
    raise ReviewError(f"{source}: not found. Put the reviewed labels there (YOLO .txt files, a COCO JSON or a zip).")


def _read_folder(folder: Path, matcher: Matcher, rules: Rules, extras: bool, *, unpack_dir: Path | None) -> Result:
    """unpack_dir None: `folder` is an unpacked zip, whose own zips are not opened (no nesting)."""
    yml = dataset_yaml(folder)
    if yml is not None:
        return yolo_dataset(yml, matcher, rules, extras=extras)
    if unpack_dir is not None:
        zips = sorted(f for f in folder.glob("*.zip") if not f.name.startswith("."))
        if zips:
            return read(zips[0], matcher, rules, unpack_dir, extras=extras)
    labels = _label_folder(folder, matcher, rules)
    jsons = [j for j in sorted(folder.rglob("*.json")) if j.name != "package.json" and not _hidden(j, folder)]
    if labels.found or not jsons:
        return labels
    return coco(jsons[0], matcher, rules)


def labelled(res: Result, wanted: list[dict], source: str) -> tuple[list[Labelled], dict]:
    """Labelled records for the merge, and the summary the step reports: picks back, negatives among them, picks not
    back (by name). A returned image (an export) is what enters training, under the pick's unique name."""
    out = []
    for f in res.found:
        it = f.item
        if it is None:
            out.append(Labelled(src=str(f.image), boxes=f.boxes, source=source, label_origin="human"))
            continue
        suffix = f.image.suffix if f.image is not None else Path(it["name"]).suffix
        extra = {"export_file": f.image.name} if f.image is not None and f.image.name != it["name"] else {}
        out.append(Labelled(src=str(f.image or it["image"]), boxes=f.boxes, source=source, label_origin="human",
                            pick=it["image"], name=Path(it["name"]).stem + suffix, extra=extra))
    back = {c.pick for c in out if c.pick}
    summary = {"source": res.what, "returned_labelled": len(back),
               "negatives": sum(1 for c in out if c.pick and not len(c.boxes)),
               "not_returned": [it["name"] for it in wanted if it["image"] not in back], **res.counts}
    return out, summary
