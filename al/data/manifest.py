"""The versioned dataset manifest: where every image came from, and the guarded merge of reviewed images.

One manifest.json per dataset version (beside its data.yaml): per image its content hash, a 64-bit perceptual
hash, split, source, the iteration it was added in and who drew its labels (dataset | human | pseudo | simulated).
`merge` applies one iteration's reviewed images to a version's splits:
  * the test split is frozen: an image identical to a test image never reaches training;
  * exact duplicates (by content hash) are dropped, except a human relabel of a pseudo-labelled image, which
    replaces it (and the pseudo-labels are scored against the human ones); the relabel is recognised by content
    hash, or, for an image an annotation tool re-encoded or resized (a Roboflow export), by its perceptual hash
    within `relabel_distance` of exactly one pseudo-labelled training image;
  * a reviewed image that is (or was picked from) the validation split moves out of validation; a validation
    image nobody picked that comes back too (an export of the whole dataset) stays in validation and is reported;
  * near-duplicates across splits (perceptual hash) are reported, not dropped.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from al.core import store
from al.core.errors import ReviewError
from al.data import check, dataset, hashing
from al.data.labels import Labelled, read_norm_labels, write_norm_labels
from al.metrics.matching import match_image, prf

SPLITS = ("train", "val", "test")


def phash(path: str | Path) -> str | None:
    """64-bit difference hash (9x8 grey thumbnail, left < right) as 16 hex digits; None if unreadable."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


@dataclass
class Manifest:
    """Per-image provenance of one dataset version, keyed by the image path listed in the split files."""

    version: int
    images: dict[str, dict] = field(default_factory=dict)

    def hashes(self, split: str) -> dict[str, str]:
        """content hash -> path of the images in `split`."""
        return {e["hash"]: p for p, e in self.images.items() if e["split"] == split}

    def counts(self) -> dict:
        out: dict = {s: {} for s in SPLITS}
        for e in self.images.values():
            out[e["split"]][e["label_origin"]] = out[e["split"]].get(e["label_origin"], 0) + 1
        return out

    def to_json(self, dataset_id: str, parent: str | None) -> dict:
        return {"version": self.version, "dataset_version": dataset_id, "parent": parent, "counts": self.counts(),
                "images": self.images}


def _entry(path: str, split: str, *, source: str, label_origin: str, iteration: int | None, with_phash: bool,
           old: dict | None = None, **extra) -> dict:
    size = Path(path).stat().st_size
    if old and old.get("size") == size and old.get("hash"):
        h, ph = old["hash"], old.get("phash")  # unchanged file: reuse the hashes
    else:
        h, ph = hashing.file_hash(path), None
    if with_phash and ph is None:
        ph = phash(path)
    return {"hash": h, "phash": ph, "size": size, "split": split, "source": source, "label_origin": label_origin,
            "iteration_added": iteration, **extra}


def build_initial(splits: dict[str, list[str]], source: str, *, with_phash: bool) -> Manifest:
    """Manifest of dataset version 0: every image from the configured data.yaml, labels from the dataset."""
    man = Manifest(0)
    for split in SPLITS:
        for p in splits.get(split, []):
            man.images[p] = _entry(p, split, source=source, label_origin="dataset", iteration=None,
                                   with_phash=with_phash)
    return man


def load(path: Path) -> Manifest:
    data = store.read_json(path, required=("version", "images"))
    return Manifest(int(data["version"]), dict(data["images"]))


def for_version(path: Path, v: int, splits: dict[str, list[str]], source: str, *, with_phash: bool) -> Manifest:
    """The manifest of version v, (re)built when missing or when it does not list exactly the version's images
    (version 0 is built on first use; a later version without one gets entries of unknown origin)."""
    man = load(path) if path.is_file() else None
    listed = {p for s in SPLITS for p in splits.get(s, [])}
    if man is not None and set(man.images) == listed and \
            all(man.images[p]["split"] == s for s in SPLITS for p in splits.get(s, [])):
        if with_phash:
            for p, e in man.images.items():
                if e.get("phash") is None:
                    e["phash"] = phash(p)
        return man
    old = man.images if man else {}
    fresh = Manifest(v)
    for s in SPLITS:
        for p in splits.get(s, []):
            prev = old.get(p)
            if prev:
                fresh.images[p] = {**prev, **_entry(p, s, source=prev["source"], label_origin=prev["label_origin"],
                                                    iteration=prev.get("iteration_added"), with_phash=with_phash,
                                                    old=prev)}
            else:
                fresh.images[p] = _entry(p, s, source=source if v == 0 else "unknown",
                                         label_origin="dataset" if v == 0 else "unknown", iteration=None,
                                         with_phash=with_phash)
    return fresh


@dataclass
class MergeResult:
    splits: dict[str, list[str]]
    manifest: Manifest
    added: list[str] = field(default_factory=list)
    added_boxes: int = 0
    moved_from_val: list[str] = field(default_factory=list)
    relabelled: list[dict] = field(default_factory=list)
    dropped_duplicates: list[dict] = field(default_factory=list)
    refused_test: list[str] = field(default_factory=list)
    near_duplicates: list[dict] = field(default_factory=list)
    kept_in_val: list[dict] = field(default_factory=list)
    """Reviewed images nobody picked that equal a validation image: left in validation, not added to training."""
    pseudo_check: dict | None = None
    bad_data: list[str] = field(default_factory=list)
    """Problems of the reviewed images left out under dataset.on_bad_data: skip (`file: what → fix`)."""

    def diff(self, iteration: int) -> dict:
        return {"iteration": iteration, "added": self.added, "moved_from_val": self.moved_from_val,
                "relabelled": self.relabelled, "dropped_duplicates": self.dropped_duplicates,
                "refused_test": self.refused_test, "near_duplicates": self.near_duplicates,
                "kept_in_val": self.kept_in_val, "pseudo_check": self.pseudo_check,
                "bad_data_skipped": self.bad_data}


def _unique_name(name: str, taken: set[str]) -> str:
    stem, suf = Path(name).stem, Path(name).suffix
    out, i = name, 1
    while out in taken:
        out = f"{stem}_{i}{suf}"
        i += 1
    taken.add(out)
    return out


def _place(src: str, dst: Path) -> None:
    """Copy an image into the run's dataset atomically (skipped when an identical-size copy is there)."""
    h = hashing.file_hash(src)
    if dst.exists() and dst.stat().st_size == Path(src).stat().st_size and hashing.file_hash(dst) == h:
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    hashing.remember(dst, h)  # the copy's content is the source's: the manifest entry need not read it again


def _checked(cands: list[Labelled], nc: int, iteration: int, on_bad_data: str) -> tuple[list[Labelled], list[str]]:
    """The candidates that pass the dataset check (each image as Pillow and Ultralytics read it, each box as the
    label line it becomes), and the problems of those left out; refuses when on_bad_data is not 'skip'."""
    rep = check.Report(images=len(cands))
    for c in cands:
        issue, _ = check.inspect_image(c.src)
        if issue:
            rep.problems.append(check.Problem(c.src, c.src, None, *issue))
        rep.problems += check.check_boxes(c.src, c.boxes, nc)
    if not rep.problems:
        return cands, []
    if on_bad_data != "skip":
        raise check.BadDataError(f"Review of iteration {iteration}: {rep.headline()} that training would drop as "
                                 f"corrupt, so nothing was merged:\n{rep.describe()}\nFix them and continue "
                                 f"(--resume), or set dataset.on_bad_data: skip to leave those images out.")
    bad = rep.bad_images
    return [c for c in cands if c.src not in bad], [str(p) for p in rep.problems]


def _pseudo_phashes(man: Manifest) -> dict[str, int]:
    """Perceptual hash of every pseudo-labelled training image (computed for entries made without one)."""
    out = {}
    for p, e in man.images.items():
        if e["split"] == "train" and e["label_origin"] == "pseudo":
            ph = e.get("phash") or phash(p)
            if ph:
                out[p] = int(ph, 16)
    return out


def _relabel_by_phash(src: str, pseudo: dict[str, int], max_distance: int) -> tuple[str, int] | None:
    """The one pseudo-labelled training image whose perceptual hash is nearest to `src`'s and within
    max_distance; None when there is none, or when two are equally near (ambiguous: better a duplicate than a
    wrong replacement)."""
    ph = phash(src)
    if ph is None or not pseudo:
        return None
    paths = list(pseudo)
    x = np.bitwise_xor(np.array([pseudo[q] for q in paths], dtype=np.uint64), np.uint64(int(ph, 16)))
    dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
    best = int(dist.min())
    near = np.where(dist == best)[0]
    if best > max_distance or len(near) != 1:
        return None
    return paths[int(near[0])], best


def merge(man: Manifest, splits: dict[str, list[str]], cands: list[Labelled], *, iteration: int, img_dir: Path,
          lbl_dir: Path, nc: int, iou: float, near_distance: int | None, dry: bool = False,
          on_bad_data: str = "refuse", relabel_distance: int | None = 4) -> MergeResult:
    """Apply one iteration's reviewed images to a version's splits; returns the next splits and manifest.
    `dry`: the same decisions and counts, but nothing is written (no folders, image copies or label files).
    Every reviewed image and its boxes first pass the dataset check (al.data.check): a bad one refuses the merge
    (BadDataError, nothing written) or, with on_bad_data 'skip', is left out and listed in `bad_data`.
    `relabel_distance`: how close (Hamming distance of the 64-bit perceptual hash) a human-labelled image must be to
    a pseudo-labelled training image to count as its relabel when the bytes differ; None: by content hash only."""
    if dataset.label_path(img_dir / "x.jpg").parent != lbl_dir:
        raise ReviewError(f"{img_dir}: added images must live in an 'images' folder beside {lbl_dir}")
    train, val, test = list(splits["train"]), list(splits["val"]), list(splits["test"])
    new = Manifest(man.version + 1, {p: dict(e) for p, e in man.images.items()})
    by_hash = {s: new.hashes(s) for s in SPLITS}
    res = MergeResult(splits={}, manifest=new)
    cands, res.bad_data = _checked(cands, nc, iteration, on_bad_data)
    if not dry:
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    seen: dict[str, str] = {}
    pseudo_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    with_phash = near_distance is not None
    pseudo_ph = _pseudo_phashes(new) if relabel_distance is not None and any(
        c.label_origin == "human" for c in cands) else {}
    for c in cands:
        h = hashing.file_hash(c.src)
        if h in by_hash["test"] or (c.pick and c.pick in test):
            res.refused_test.append(c.src)  # the frozen test split never reaches training
            continue
        if h in seen:
            res.dropped_duplicates.append({"image": c.src, "duplicate_of": seen[h]})
            continue
        relabel, matched = None, dict[str, Any](matched_by="content")
        if h in by_hash["train"]:
            old = by_hash["train"][h]
            if not (new.images[old]["label_origin"] == "pseudo" and c.label_origin == "human"):
                res.dropped_duplicates.append({"image": c.src, "duplicate_of": old})
                continue
            relabel = old
        elif c.label_origin == "human" and pseudo_ph and relabel_distance is not None:
            near = _relabel_by_phash(c.src, pseudo_ph, relabel_distance)
            if near:
                relabel, matched = near[0], {"matched_by": "phash", "distance": near[1]}
        if c.pick is None and h in by_hash["val"]:  # only a pick leaves validation
            res.kept_in_val.append({"image": c.src, "val_image": by_hash["val"][h]})
            continue
        name = _unique_name(c.name or Path(c.pick or c.src).name, taken)
        dst = img_dir / name
        if not dry:
            _place(c.src, dst)
            write_norm_labels(lbl_dir / (dst.stem + ".txt"), c.boxes)
        dst_s = str(dst.resolve())
        seen[h] = dst_s
        moved_from = None
        if relabel:
            pseudo_pairs.append((read_norm_labels(dataset.label_path(relabel), nc), c.boxes))
            train.remove(relabel)
            old_entry = new.images.pop(relabel)
            pseudo_ph.pop(relabel, None)
            by_hash["train"].pop(old_entry["hash"], None)
            res.relabelled.append({"image": dst_s, "replaces": relabel, "was": old_entry["label_origin"], **matched})
        for v in [v for v in val if v == c.pick or by_hash["val"].get(h) == v]:
            val.remove(v)  # mined from validation: it moves out (never copied)
            new.images.pop(v, None)
            res.moved_from_val.append(v)
            moved_from = "val"
        train.append(dst_s)
        by_hash["train"][h] = dst_s
        content = c.src if dry else dst_s  # dry: the copy does not exist; its content is the source's
        relabelled: dict[str, Any] = {"relabelled_from": relabel} if relabel else {}
        new.images[dst_s] = _entry(content, "train", source=c.source, label_origin=c.label_origin, iteration=iteration,
                                   with_phash=with_phash, origin=c.pick or c.src, moved_from=moved_from,
                                   boxes=int(len(c.boxes)), **relabelled, **c.extra)
        res.added.append(dst_s)
        res.added_boxes += int(len(c.boxes))
    by_hash["val"] = {e["hash"]: p for p, e in new.images.items() if e["split"] == "val"}
    res.splits = {"train": train, "val": val, "test": test}
    if near_distance is not None:  # = with_phash, spelled out so that the type narrows
        res.near_duplicates = near_duplicates(new, res.added, near_distance)
    if pseudo_pairs:
        res.pseudo_check = pseudo_label_quality(pseudo_pairs, nc, iou)
    return res


def near_duplicates(man: Manifest, added: list[str], max_distance: int) -> list[dict]:
    """Added training images whose perceptual hash is within max_distance of a validation or test image."""
    others = [(p, e["split"], e["phash"]) for p, e in man.images.items()
              if e["split"] in ("val", "test") and e.get("phash")]
    if not others or not added:
        return []
    arr = np.array([int(ph, 16) for _, _, ph in others], dtype=np.uint64)
    out = []
    for a in added:
        ph = man.images[a].get("phash")
        if not ph:
            continue
        x = np.bitwise_xor(arr, np.uint64(int(ph, 16)))
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for i in np.where(dist <= max_distance)[0]:
            out.append({"image": a, "other": others[i][0], "split": others[i][1], "distance": int(dist[i])})
    return out


def pseudo_label_quality(pairs: list[tuple[np.ndarray, np.ndarray]], nc: int, iou: float) -> dict:
    """Precision and recall of pseudo-labels against the human labels that replaced them (IoU matching)."""
    tp, fp, fn = np.zeros(nc, int), np.zeros(nc, int), np.zeros(nc, int)
    for pseudo, human in pairs:
        pseudo = np.asarray(pseudo, float).reshape(-1, 5)
        human = np.asarray(human, float).reshape(-1, 5)
        m = match_image(human[:, 0], human[:, 1:], pseudo[:, 0], np.ones(len(pseudo)), pseudo[:, 1:], iou)
        for g, _p, _i in m.tp:
            tp[int(human[g, 0])] += 1
        for q in m.fp:
            fp[int(pseudo[q, 0])] += 1
        for g in m.fn:
            fn[int(human[g, 0])] += 1
    p, r, f1 = prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    per_class: dict[int, dict[str, float]] = {}
    for c in range(nc):
        if tp[c] + fp[c] + fn[c]:
            pc, rc, _ = prf(int(tp[c]), int(fp[c]), int(fn[c]))
            per_class[c] = {"tp": int(tp[c]), "fp": int(fp[c]), "fn": int(fn[c]), "precision": pc, "recall": rc}
    return {"images": len(pairs), "iou": iou, "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()),
            "precision": p, "recall": r, "f1": f1, "per_class": per_class}


def save(man: Manifest, path: Path, dataset_id: str, parent: str | None, **extra) -> None:
    store.write_json(path, {**man.to_json(dataset_id, parent), **extra})
