"""The local annotation package (seed 001), and the import of the labels returned for it (through
al.review.imports: a folder or zip of YOLO labels, a COCO JSON, a YOLO export).

Package layout (also written as one zip):
  images/            the picked images (names made unique by stem, so each has its own label file)
  labels/            pre-annotations in YOLO format (one file per image; empty = the model saw nothing)
  annotations_coco.json   the same pre-annotations in COCO format (categories by name)
  classes.txt, data.yaml  class names in the project's order
  thumbnails/, contact_sheet.jpg   previews with the pre-annotations drawn
  GUIDELINES.md      what to do and how to hand the labels back
  package.json       which picked image each file stands for (and its content hash), read back on import
  returned/          put the reviewed labels here (YOLO label files, a COCO JSON, or a zip of either)
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from al.core import store
from al.data import hashing
from al.review import (
    Labelled,
    ReviewError,
    imports,
    norm_boxes,
    read_norm_labels,
    write_norm_labels,
)
from al.review.imports import unique_names

PACKAGE_SCHEMA = 1


def _guidelines(names: list[str], iteration: int, returned: Path, extra: str | None) -> str:
    lines = [
        f"# Annotation guidelines — iteration {iteration}",
        "",
        "These images are the ones the current model gets most wrong. `labels/` (YOLO) and `annotations_coco.json`",
        "(COCO) hold the model's own detections as a starting point: **correct them, do not trust them.**",
        "",
        "1. Draw a tight box around every object of the classes below; remove boxes with nothing in them.",
        "2. Fix wrong classes; keep the class names and their order exactly as listed.",
        "3. An image without any object stays in with no boxes (an empty label file / no COCO annotations):",
        "   it is a useful negative.",
        "4. Do not rename the image files.",
        f"5. Hand the result back in `{returned}`: the corrected YOLO `.txt` files (a copy of `labels/`), or a",
        "   COCO JSON, or a zip of either. Then continue the run (`--resume`).",
        "",
        "## Classes (id: name)",
        *[f"- {i}: {n}" for i, n in enumerate(names)],
    ]
    if extra:
        lines += ["", "## Project guidelines", "", extra.strip()]
    return "\n".join(lines) + "\n"


def _coco(entries: list[dict], names: list[str]) -> dict:
    images: list[dict] = []
    anns: list[dict] = []
    for i, e in enumerate(entries, 1):
        images.append({"id": i, "file_name": e["name"], "width": e["width"], "height": e["height"]})
        for c, x1, y1, x2, y2, *conf in e["pixel_boxes"]:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                         "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0,
                         **({"score": round(conf[0], 4)} if conf else {})})
    return {"info": {"description": "pre-annotations (model predictions) for review"}, "images": images,
            "annotations": anns,
            "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]}


def _thumbnail(src: str, boxes: list, size: int, out: Path):
    import cv2

    img = cv2.imread(src)
    if img is None:
        return None
    h, w = img.shape[:2]
    s = size / max(h, w)
    thumb = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    for c, x1, y1, x2, y2, *_ in boxes:
        cv2.rectangle(thumb, (round(x1 * s), round(y1 * s)), (round(x2 * s), round(y2 * s)), (0, 255, 255), 1)
        cv2.putText(thumb, str(int(c)), (round(x1 * s), max(8, round(y1 * s) - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 255, 255), 1)
    ok, buf = cv2.imencode(".jpg", thumb)
    if ok:
        store.write_bytes_atomic(out, buf.tobytes())
    return thumb


def _contact_sheet(thumbs: list, size: int, out: Path) -> None:
    import cv2

    if not thumbs:
        return
    cols = min(6, len(thumbs))
    rows = -(-len(thumbs) // cols)
    sheet = np.full((rows * (size + 16), cols * size, 3), 32, np.uint8)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        y, x = r * (size + 16), c * size
        sheet[y:y + t.shape[0], x:x + t.shape[1]] = t
        cv2.putText(sheet, str(i + 1), (x + 2, y + size + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    ok, buf = cv2.imencode(".jpg", sheet)
    if ok:
        store.write_bytes_atomic(out, buf.tobytes())


# what build() writes, in the order it is put in place: package.json last (without it the package counts as missing)
_PACKAGE_FILES = ("images", "labels", "thumbnails", "contact_sheet.jpg", "classes.txt", "data.yaml",
                  "annotations_coco.json", "GUIDELINES.md", "package.json")


def _install(tmp: Path, out_dir: Path) -> None:
    """Put the freshly built package files from tmp in place of the old ones, one by one. package.json goes first
    out and last in, so a build killed half-way is a missing package (rebuilt on the next call), never a mixed one.
    Nothing else in out_dir is touched: returned/ (the human's work) is never moved, removed or written to."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "package.json").unlink(missing_ok=True)
    for name in _PACKAGE_FILES:
        old, new = out_dir / name, tmp / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
        if new.exists():
            new.replace(old)
    shutil.rmtree(tmp)


def build(out_dir: Path, zip_path: Path | None, picks: list[dict], records: dict[str, dict], names: list[str], *,
          iteration: int, conf: float, thumbnails: bool = True, thumb_size: int = 256,
          extra_guidelines: str | None = None) -> dict:
    """Write the package for `picks` (pre-annotations: each record's predictions at or above `conf`).
    Rebuilding is safe, even when killed half-way: the package's files are built beside it and then replaced
    (_install); the returned/ folder (the human's work) is never part of the build."""
    returned = out_dir / "returned"
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # an earlier, killed build's; it never holds returned/
    for sub in ("images", "labels", "thumbnails"):
        (tmp / sub).mkdir(parents=True)
    images = [p["image"] for p in picks]
    entries, thumbs = [], []
    for img, name in zip(images, unique_names(images)):
        rec = records.get(img) or {}
        if "width" not in rec:
            raise ReviewError(f"{img}: picked but absent from this iteration's predictions; re-run extract.")
        w, h = rec["width"], rec["height"]
        pred = [r for r in rec.get("pred", []) if r[1] >= conf]
        pixel = [[r[0], *r[2:6], r[1]] for r in pred]
        shutil.copyfile(img, tmp / "images" / name)
        write_norm_labels(tmp / "labels" / (Path(name).stem + ".txt"),
                          norm_boxes([b[:5] for b in pixel], w, h))
        entries.append({"name": name, "image": img, "hash": hashing.file_hash(img), "width": w, "height": h,
                        "pre_annotations": len(pixel), "pixel_boxes": pixel})
        if thumbnails:
            t = _thumbnail(img, pixel, thumb_size, tmp / "thumbnails" / (Path(name).stem + ".jpg"))
            if t is not None:
                thumbs.append(t)
    if thumbnails:
        _contact_sheet(thumbs, thumb_size, tmp / "contact_sheet.jpg")
    store.write_text_atomic(tmp / "classes.txt", "\n".join(names) + "\n")
    store.write_yaml(tmp / "data.yaml", {"path": ".", "train": "images", "val": "images",
                                         "names": dict(enumerate(names))})
    store.write_text_atomic(tmp / "annotations_coco.json", json.dumps(_coco(entries, names), indent=1))
    store.write_text_atomic(tmp / "GUIDELINES.md", _guidelines(names, iteration, returned, extra_guidelines))
    store.write_json(tmp / "package.json", {
        "package_schema": PACKAGE_SCHEMA, "iteration": iteration, "names": names, "conf": conf,
        "images": [{k: v for k, v in e.items() if k != "pixel_boxes"} for e in entries]})
    _install(tmp, out_dir)
    returned.mkdir(exist_ok=True)
    if zip_path is not None:
        ztmp = zip_path.with_name(f".{zip_path.name}.tmp")
        with zipfile.ZipFile(ztmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(out_dir.rglob("*")):
                if f.is_file() and "returned" not in f.relative_to(out_dir).parts:
                    zf.write(f, f"{out_dir.name}/{f.relative_to(out_dir).as_posix()}")
        ztmp.replace(zip_path)
    return {"dir": str(out_dir), "zip": str(zip_path) if zip_path else None, "images": len(entries),
            "pre_annotations": sum(e["pre_annotations"] for e in entries), "returned_dir": str(returned)}


# ---------------------------------------------------------------------------------------------------------- import

def load_package(pkg_dir: Path) -> dict:
    f = pkg_dir / "package.json"
    data = store.read_json(f, required=("images", "names"))
    return data


def read_returned(source: Path, pkg: dict, names: list[str], unpack_dir: Path, *,
                  rules: imports.Rules | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Reviewed labels per picked image (normalised boxes) from any returned source (al.review.imports.read). A
    picked image without a label file (or absent from the COCO images) did not come back; an empty label file (or a
    COCO image without annotations) is a negative."""
    res = imports.read(Path(source), imports.Matcher(pkg["images"]), rules or imports.Rules(list(names)), unpack_dir)
    return {f.item["image"]: f.boxes for f in res.found if f.item}, res.what


def import_returned(source: Path, pkg_dir: Path, names: list[str], unpack_dir: Path, *,
                    rules: imports.Rules | None = None) -> tuple[list[Labelled], dict]:
    """Labelled picks from the human's returned labels (a folder or zip of YOLO label files, a COCO JSON, a YOLO
    export), matched to the package's images, plus a summary (how many came back, negatives, unedited). Images of an
    export nobody picked are ignored."""
    pkg = load_package(pkg_dir)
    rules = rules or imports.Rules(list(names))
    res = imports.read(Path(source), imports.Matcher(pkg["images"]), rules, unpack_dir)
    exported = any(f.image is not None for f in res.found)
    out, summary = imports.labelled(res, pkg["images"], "local-export" if exported else "local-package")
    unedited = 0
    for f in res.found:
        if f.item is None:  # an image nobody picked; read() without extras returns none
            continue
        pre = read_norm_labels(pkg_dir / "labels" / (Path(f.item["name"]).stem + ".txt"), len(rules.names))
        if len(pre) and pre.shape == f.boxes.shape and np.allclose(pre, f.boxes, atol=1e-4):
            unedited += 1
    summary["unedited_pre_annotations"] = unedited
    return out, summary


def has_returned(path: Path) -> bool:
    """True when the returned/ folder holds anything to import."""
    return path.is_dir() and any(f.is_file() and not f.name.startswith(".") for f in path.rglob("*"))
