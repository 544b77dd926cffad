"""Ultralytics' own validator, one split at a time, keeping what it computed for each image.

The loop's mAP is the number `model.val()` / `yolo val` gives on the same weights, split and settings because it
is computed by the same code from the same per-image statistics: `SplitValidator` runs a subclass of
Ultralytics' DetectionValidator (its loader, its rect letterbox, its multi-label NMS, its matching) that, for every
image, also keeps the predictions scaled back to original pixels and the exact `tp`/`conf`/`pred_cls`/`target_cls`
arrays the validator fed to its metrics. `map_from_stats` turns a list of those per-image statistics into mAP
with Ultralytics' DetMetrics, so any subset of images (the decision set) is measured the same way.
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from al.yolo.detector import DetectorError, Prediction, resolve_device

CONF = 0.001
"""The validator's confidence floor (Ultralytics' default for val): mAP integrates the whole precision-recall curve."""


@dataclass
class ImageEval:
    """One image as Ultralytics' validator saw it: its predictions in original pixels (multi-label NMS at CONF,
    sorted by confidence) and the statistics the validator fed to its metrics for it."""

    pred: Prediction
    stats: dict[str, np.ndarray]
    """tp (n_pred, 10) bool at IoU 0.50:0.95 · conf (n_pred,) · pred_cls (n_pred,) · target_cls (n_targets,)."""


@dataclass
class SplitEval:
    """One validator pass: the images in the validator's order (its rect batches sort them by aspect ratio) and
    the validator's own mAP over them."""

    images: list[ImageEval]
    map50: float
    map50_95: float


@functools.cache
def _capturing_validator() -> type:
    """DetectionValidator that keeps each image's predictions and statistics (built on first use: importing
    Ultralytics is slow and must follow prepare_offline)."""
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import ops

    class CapturingValidator(DetectionValidator):
        on_batch: Callable[[int], None] | None = None

        def get_model(self, model, trainer=None):
            return model  # already an independent copy (SplitValidator): Ultralytics would deep-copy it every call

        def init_metrics(self, model) -> None:
            super().init_metrics(model)
            self.captured: list[ImageEval] = []

        def update_metrics(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
            super().update_metrics(preds, batch)
            stats = self.metrics.stats
            first = len(stats["tp"]) - len(preds)  # super() appended one entry per image of this batch
            for si, pred in enumerate(preds):
                s = {key: stats[key][first + si] for key in ("tp", "conf", "pred_cls", "target_cls")}
                h, w = (int(v) for v in batch["ori_shape"][si])
                # what the validator's scale_preds does for save_txt / save_json: back to original pixels
                scaled: Any = ops.scale_boxes(batch["img"].shape[2:], pred["bboxes"].clone(), batch["ori_shape"][si],
                                              ratio_pad=batch["ratio_pad"][si])  # a tensor in, a tensor out
                boxes = scaled.float().cpu().numpy().astype(np.float64)
                self.captured.append(ImageEval(
                    pred=Prediction(path=str(batch["im_file"][si]), width=w, height=h, boxes=boxes.reshape(-1, 4),
                                    cls=np.asarray(s["pred_cls"]).astype(int),
                                    conf=np.asarray(s["conf"], dtype=np.float64)),
                    stats=s))
            if self.on_batch:
                self.on_batch(len(preds))

    return CapturingValidator


class SplitValidator:
    """Ultralytics' validator for one loaded YOLO model (al.yolo.service), run split by split with the settings
    `model.val(data=..., split=..., imgsz=imgsz, batch=batch, conf=CONF, iou=iou, device=device)` uses (rect
    batches, fp32, max_det 300). Like model.val() it validates an independent copy of the network (the validator
    fuses it), but copies it once, not once per split."""

    def __init__(self, model, *, imgsz: int, batch: int, iou: float,
                 device: str | list[int],  # training.device; resolve_device picks the one device validation runs on
                 workers: int = 0) -> None:
        self.net = copy.deepcopy(model.model)
        self.args = {**model.overrides, "rect": True,  # what Model.val() adds to the checkpoint's arguments
                     "imgsz": imgsz, "batch": batch, "conf": CONF, "iou": iou, "device": resolve_device(device),
                     "workers": workers, "plots": False, "save_json": False, "save_txt": False, "verbose": False,
                     "mode": "val"}

    def run(self, data_yaml: str | Path, split: str, on_batch: Callable[[int], None] | None = None) -> SplitEval:
        """`split` of `data_yaml`, quietly, writing nothing but Ultralytics' labels cache beside the split's label
        files; `on_batch(n_images)` runs after every batch and may raise to stop."""
        return validate_split(self.net, {**self.args, "data": str(data_yaml), "split": split}, on_batch)


def validate_split(net, args: dict, on_batch: Callable[[int], None] | None = None) -> SplitEval:
    """Run the capturing validator on `net` (an independent copy: it is fused in place) with `args`."""
    from ultralytics.utils import LOGGER

    data_yaml, split = args["data"], args["split"]
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # no results table, speed line or progress bar; warnings still show
    try:
        with tempfile.TemporaryDirectory(prefix="al_val_") as tmp:  # the validator insists on a save_dir
            v = _capturing_validator()(save_dir=Path(tmp), args=args)
            v.on_batch = on_batch
            try:
                v(model=net)
            except (FileNotFoundError, SyntaxError) as e:  # what check_det_dataset raises for a bad data.yaml
                raise DetectorError(f"{data_yaml} (split {split}): Ultralytics' validator could not read it: {e}. "
                                    f"Fix the file or re-create the dataset version.") from e
    finally:
        LOGGER.setLevel(level)
    return SplitEval(images=v.captured, map50=float(v.metrics.box.map50), map50_95=float(v.metrics.box.map))


def map_from_stats(stats: Sequence[dict[str, np.ndarray]], names: list[str]) -> dict:
    """mAP50, mAP50-95 and per-class AP of per-image statistics (ImageEval.stats) with Ultralytics' DetMetrics,
    the computation the validator ends with: given one split's images in the validator's order, the same numbers.
    per_class_ap holds the classes with at least one instance, as Ultralytics' table does."""
    from ultralytics.utils.metrics import DetMetrics

    if not stats or sum(len(s["target_cls"]) for s in stats) == 0:
        return {"map50": 0.0, "map50_95": 0.0, "per_class_ap": {}}
    m = DetMetrics(names=dict(enumerate(names)))
    for i, s in enumerate(stats):
        m.update_stats({**s, "target_img": np.unique(s["target_cls"]), "im_name": str(i)})
    m.process()
    instances = np.bincount(np.concatenate([s["target_cls"] for s in stats]).astype(int), minlength=len(names))
    per = {}
    for row, c in enumerate(m.box.ap_class_index):
        if int(c) < len(names):
            ap = m.box.all_ap[row]
            per[names[int(c)]] = {"ap50": float(ap[0]), "ap50_95": float(ap.mean()), "instances": int(instances[c])}
    return {"map50": float(m.box.map50), "map50_95": float(m.box.map), "per_class_ap": per}
