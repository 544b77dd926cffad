"""The local annotation package (seed 001) and the import of reviewed labels from a folder, a zip or a COCO JSON.

Package layout (also written as one zip):
  images/            the picked images (names made unique)
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
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from al.core import store
from al.data import dataset
from al.review import (
    Labelled,
    ReviewError,
    norm_boxes,
    read_norm_labels,
    write_norm_labels,
)

PACKAGE_SCHEMA = 1


def unique_names(images: list[str]) -> list[str]:
    out, taken = [], set()
    for img in images:
        p = Path(img)
        name, i = p.name, 1
        while name.lower() in taken:
            name = f"{p.stem}_{i}{p.suffix}"
            i += 1
        taken.add(name.lower())
        out.append(name)
    return out


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
    images, anns = [], []
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


def build(out_dir: Path, zip_path: Path | None, picks: list[dict], records: dict[str, dict], names: list[str], *,
          iteration: int, conf: float, thumbnails: bool = True, thumb_size: int = 256,
          extra_guidelines: str | None = None) -> dict:
    """Write the package for `picks` (pre-annotations: each record's predictions at or above `conf`).
    Rebuilding is safe: the folder is replaced, the returned/ folder (the human's work) is kept."""
    returned = out_dir / "returned"
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
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
        entries.append({"name": name, "image": img, "hash": dataset.file_hash(img), "width": w, "height": h,
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
    if returned.is_dir():
        shutil.move(str(returned), tmp / "returned")
    else:
        (tmp / "returned").mkdir()
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
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

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_members(zf: zipfile.ZipFile) -> list[str]:
    """Member names that would land outside the extraction folder (absolute, drive, '..') or are links."""
    bad = []
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts or is_link:
            bad.append(name)
    return bad


def safe_extract(zip_path: Path, dest: Path) -> Path:
    """Extract a zip after checking every member name first: any '../', absolute path or link refuses the whole
    archive before a single file is written."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = unsafe_members(zf)
            if bad:
                raise ReviewError(f"{zip_path}: refused, nothing extracted: {len(bad)} member(s) would be written "
                                  f"outside the extraction folder (e.g. {bad[0]!r}). Re-create the zip from inside "
                                  f"the folder that holds the labels.")
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            zf.extractall(dest)
    except zipfile.BadZipFile:
        raise ReviewError(f"{zip_path}: not a valid zip file. Re-create it, or hand the labels back as a folder.") \
            from None
    return dest


def _package_index(pkg: dict) -> dict[str, dict]:
    """Lookup by file name and by stem (case-insensitive) of the package's images."""
    idx = {}
    for e in pkg["images"]:
        idx[e["name"].lower()] = e
        idx[Path(e["name"]).stem.lower()] = e
    return idx


def _coco_labels(path: Path, pkg: dict, names: list[str]) -> dict[str, np.ndarray]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReviewError(f"{path}: not valid JSON ({e}). Export COCO JSON again.") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ReviewError(f"{path}: not a COCO file (needs images, annotations and categories).")
    cats = {c["id"]: c["name"] for c in data["categories"]}
    # categories no annotation uses are harmless (tools often export their whole label set)
    used = {a["category_id"] for a in data["annotations"]}
    unknown_used = sorted({cats.get(c, f"id {c}") for c in used} - set(names))
    if unknown_used:
        raise ReviewError(f"{path}: categories {unknown_used} are not project classes {names}. Rename them to the "
                          f"project's class names (see classes.txt) and import again.")
    idx = _package_index(pkg)
    by_id, out = {}, {}
    for im in data["images"]:
        e = idx.get(Path(im["file_name"]).name.lower()) or idx.get(Path(im["file_name"]).stem.lower())
        if e is not None:
            by_id[im["id"]] = (e, float(im.get("width") or e["width"]), float(im.get("height") or e["height"]))
            out[e["image"]] = []
    for a in data["annotations"]:
        if a["image_id"] not in by_id:
            continue
        e, w, h = by_id[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        out[e["image"]].append([names.index(cats[a["category_id"]]), x / w, y / h, (x + bw) / w, (y + bh) / h])
    res = {}
    for k, v in out.items():
        b = np.asarray(v, float).reshape(-1, 5)
        b[:, 1:] = b[:, 1:].clip(0, 1)
        res[k] = b
    return res


def _yolo_labels(folder: Path, pkg: dict, names: list[str]) -> dict[str, np.ndarray]:
    classes = next(iter(sorted(folder.rglob("classes.txt"))), None)
    if classes is not None:
        got = [ln.strip() for ln in classes.read_text().splitlines() if ln.strip()]
        if got != names:
            raise ReviewError(f"{classes}: class names {got} differ from the model's {names}. Keep the classes "
                              f"and their order exactly as in the package's classes.txt.")
    idx = _package_index(pkg)
    out = {}
    for f in sorted(folder.rglob("*.txt")):
        if f.name == "classes.txt":
            continue
        e = idx.get(f.stem.lower())
        if e is not None:
            out[e["image"]] = read_norm_labels(f, len(names))
    return out


def read_returned(source: Path, pkg: dict, names: list[str], unpack_dir: Path, *,
                  allow_zip: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """Reviewed labels per picked image (normalised boxes) from a folder or zip of YOLO labels or a COCO JSON.
    A picked image without a label file (or absent from the COCO images) did not come back; an empty label file
    (or a COCO image without annotations) is a negative."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".zip" and allow_zip:
        folder = safe_extract(source, unpack_dir)
        return read_returned(folder, pkg, names, unpack_dir, allow_zip=False)[0], f"zip {source}"
    if source.is_file() and source.suffix.lower() == ".json":
        return _coco_labels(source, pkg, names), f"COCO {source}"
    if source.is_dir():
        zips = sorted(source.glob("*.zip")) if allow_zip else []
        if zips:
            return read_returned(zips[0], pkg, names, unpack_dir)[0], f"zip {zips[0]}"
        yolo = _yolo_labels(source, pkg, names)
        jsons = [j for j in sorted(source.rglob("*.json")) if j.name != "package.json"]
        if yolo or not jsons:  # YOLO label files win over a JSON lying beside them
            return yolo, f"YOLO labels in {source}"
        return _coco_labels(jsons[0], pkg, names), f"COCO {jsons[0]}"
    raise ReviewError(f"{source}: not found. Put the reviewed labels there (YOLO .txt files, a COCO JSON or a zip).")


def load_package(pkg_dir: Path) -> dict:
    f = pkg_dir / "package.json"
    data = store.read_json(f, required=("images", "names"))
    return data


def import_returned(source: Path, pkg_dir: Path, names: list[str], unpack_dir: Path) -> tuple[list[Labelled], dict]:
    """Labelled picks from the human's returned labels, plus a summary (how many came back, negatives, unedited)."""
    pkg = load_package(pkg_dir)
    labels, what = read_returned(source, pkg, names, unpack_dir)
    by_image = {e["image"]: e for e in pkg["images"]}
    out, unedited = [], 0
    for img, boxes in labels.items():
        e = by_image[img]
        pre = read_norm_labels(pkg_dir / "labels" / (Path(e["name"]).stem + ".txt"), len(names))
        if len(pre) and pre.shape == boxes.shape and np.allclose(pre, boxes, atol=1e-4):
            unedited += 1
        out.append(Labelled(src=img, boxes=boxes, source="local-package", label_origin="human", pick=img,
                            name=e["name"]))
    summary = {"source": what, "returned_labelled": len(out), "negatives": sum(1 for c in out if not len(c.boxes)),
               "not_returned": [e["name"] for e in pkg["images"] if e["image"] not in labels],
               "unedited_pre_annotations": unedited}
    return out, summary


def import_yolo_dataset(yml: Path, names: list[str], picks: list[dict], source: str = "combined",
                        cmap_fn=None) -> tuple[list[Labelled], dict]:
    """Every train/val image of a YOLO dataset export (seed 004's dataset_combined) with its labels."""
    spec = dataset.read_data_yaml(yml)
    if cmap_fn is None and spec.names != names:
        raise ReviewError(f"{yml}: class names {spec.names} differ from the model's {names}. Export with the same "
                          f"classes in the same order, then run again with --resume.")
    exported = list(dict.fromkeys(spec.splits["train"] + spec.splits["val"]))
    pick_names = {Path(p["image"]).name: p["image"] for p in picks}
    out = []
    for img in exported:
        boxes = read_norm_labels(dataset.label_path(img), len(spec.names))
        if cmap_fn is not None:
            boxes = cmap_fn(boxes)
        out.append(Labelled(src=img, boxes=boxes, source=source, label_origin="human",
                            pick=pick_names.get(Path(img).name)))
    summary = {"source": f"YOLO dataset {yml}", "returned_labelled": sum(1 for c in out if c.pick),
               "negatives": sum(1 for c in out if not len(c.boxes)), "exported_images": len(out),
               "not_returned": sorted(set(pick_names) - {Path(c.src).name for c in out})}
    return out, summary


def has_returned(path: Path) -> bool:
    """True when the returned/ folder holds anything to import."""
    return path.is_dir() and any(f.is_file() and not f.name.startswith(".") for f in path.rglob("*"))


def is_yolo_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "data.yaml").is_file() and not (path / "package.json").is_file()

