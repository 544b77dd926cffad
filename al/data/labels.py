"""Reviewed boxes on their way into training: `Labelled` records with (N,5) [cls, x1, y1, x2, y2] rows normalised
to 0..1 (the image's size is then not needed, and IoU is unchanged by the scaling), and export class maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al.core.errors import ReviewError
from al.data import check, dataset


@dataclass
class Labelled:
    """One reviewed image on its way into training."""

    src: str
    """The image file to copy into the run's dataset."""
    boxes: np.ndarray
    """(N,5) [cls, x1, y1, x2, y2] normalised to 0..1; no rows = a negative (an image without objects)."""
    source: str
    """Where it came from: local-package, combined, roboflow, roboflow-crop, label-studio, simulated or pseudo."""
    label_origin: str
    """Who drew the boxes: human, pseudo (model predictions) or simulated (revealed ground truth)."""
    pick: str | None = None
    """The picked image (its path in the run's dataset) this is the reviewed version of; None for extra images."""
    name: str | None = None
    """File name in the added-images folder (default: the pick's or the source's name)."""
    extra: dict = field(default_factory=dict)
    """Facts recorded in the manifest entry (e.g. the Roboflow image id, the pseudo-label thresholds)."""


def norm_boxes(boxes, width: float, height: float) -> np.ndarray:
    """Pixel [cls, x1, y1, x2, y2] rows -> the same rows normalised to 0..1."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    if len(b):
        b[:, [1, 3]] /= float(width)
        b[:, [2, 4]] /= float(height)
    return b


class BadLabelsError(ReviewError):
    """A label file handed back breaks the rules training applies; the message lists `file:line: what → fix`."""


def read_norm_labels(path: Path, nc: int) -> np.ndarray:
    """A YOLO label file as normalised [cls, x1, y1, x2, y2] rows (a missing file is a negative). A file with a line
    the dataset check refuses (al.data.check: a class outside 0..nc-1, a non-numeric or NaN value, not 5 fields,
    coordinates outside 0..1) raises BadLabelsError naming each line: reviewed labels never lose a line silently."""
    path = Path(path)
    if path.is_file():
        found, _ = check.inspect_label_file(path, nc)
        if found:
            lines = "\n".join(f"  {check.Problem(str(path), str(path), no, what, fix)}" for no, what, fix in found)
            raise BadLabelsError(f"{path}: training would drop this image for {len(found)} bad "
                                 f"line{'s' if len(found) > 1 else ''}; nothing was imported:\n{lines}\n"
                                 f"Fix the file, then continue (--resume).")
    return dataset.read_labels(path, nc, 1, 1)


def write_norm_labels(path: Path, boxes: np.ndarray) -> None:
    dataset.write_labels(Path(path), boxes, 1, 1)


def class_map(export_names: list[str], names: list[str], mapping: dict[str, str | None], by_name: bool,
              where: str, how_to_fix: str, key: str = "review.roboflow.class_mapping") -> np.ndarray:
    """Export class id -> project class id (-1 drops the class). Identical names in identical order map to
    themselves; any other difference is refused unless `mapping` (config key `key`; or `by_name` for a pure
    reorder) covers it."""
    if list(export_names) == list(names) and not mapping:
        return np.arange(len(names))
    if not mapping and not (by_name and sorted(export_names) == sorted(names)):
        only_export = [n for n in export_names if n not in names]
        only_project = [n for n in names if n not in export_names]
        detail = (f"export-only {only_export}, project-only {only_project}" if only_export or only_project
                  else "same names in another order")
        raise ReviewError(f"{where}: class names {list(export_names)} differ from the model's {list(names)} "
                          f"({detail}). {how_to_fix}")
    out = np.full(len(export_names), -1, dtype=int)
    unmapped, unknown = [], []
    for i, n in enumerate(export_names):
        if n in mapping:
            target = mapping[n]
            if target is None:
                continue
            if target not in names:
                unknown.append(f"{n} -> {target}")
                continue
            out[i] = names.index(target)
        elif n in names:
            out[i] = names.index(n)
        else:
            unmapped.append(n)
    if unknown or unmapped:
        raise ReviewError(f"{where}: cannot map export classes to the project's {list(names)}: "
                          + "; ".join(filter(None, [f"mapping targets not in the project: {unknown}" if unknown
                                                    else "", f"export classes without a mapping: {unmapped}"
                                                    if unmapped else ""]))
                          + f". Add them to {key} (name -> project name, or null to drop).")
    return out


def remap(boxes: np.ndarray, cmap: np.ndarray) -> np.ndarray:
    """Apply an export -> project class map to [cls, ...] rows; rows of dropped classes go."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if not len(b):
        return b
    new = cmap[b[:, 0].astype(int)]
    keep = new >= 0
    out = b[keep].copy()
    out[:, 0] = new[keep]
    return out
