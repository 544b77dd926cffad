"""ONNX export of a checkpoint with Ultralytics' exporter, and its check with onnxruntime against the PyTorch model.

The check feeds the same letterboxed images to the PyTorch model and to the .onnx (onnxruntime, CPU), decodes and
runs NMS on both outputs the same way (Ultralytics' non_max_suppression, boxes scaled back to the original image),
and compares: the raw head outputs, and every detection at the release's confidence: the same class, every
coordinate within a pixel tolerance. A detection present on one side only fails the check unless its confidence is
within the score tolerance of the threshold (it may cross it by rounding). It also compares the class names the
exporter embedded in the .onnx with the checkpoint's.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from al.core.errors import UserError

BOX_TOL_PX = 1.0
"""Largest coordinate difference (original-image pixels) of a matched detection."""
SCORE_TOL = 1e-3
"""Largest difference of a class score (raw output) or a detection's confidence."""
CHECK_IMAGES = 8
"""Images the check runs by default."""


class ExportError(UserError):
    """The ONNX export or its check failed; the message says what failed and where the log is."""


def export_onnx(weights: Path, *, imgsz: int, log: Path) -> Path:
    """Export `weights` to ONNX beside it (Ultralytics' exporter: CPU, static batch 1, imgsz x imgsz, no
    simplifier, so no requirement check needs the network). The exporter's log goes to `log`. Returns the .onnx."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    if not Path(weights).is_file():  # Ultralytics would try to download a .pt it does not find
        raise ExportError(f"ONNX export: {weights} not found. Restore the checkpoint.")
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(_Plain("%(message)s"))
    quiet = {h: h.level for h in LOGGER.handlers}  # the console gets warnings only; the log file gets everything
    for h in quiet:
        h.setLevel(logging.WARNING)
    LOGGER.addHandler(handler)
    try:
        model = YOLO(str(weights))
        out = model.export(format="onnx", imgsz=imgsz, device="cpu", simplify=False, dynamic=False,
                           nms=False, verbose=False)
    except Exception as e:  # the exporter raises many types (AssertionError, RuntimeError, onnx errors, ...)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("\n" + "".join(traceback.format_exception(e)))
        text = " ".join(str(e).split())  # one line (Ultralytics' messages span several)
        raise ExportError(f"ONNX export of {weights} failed: {type(e).__name__}: {text}. The exporter's log: "
                          f"{log}.") from None
    finally:
        LOGGER.removeHandler(handler)
        handler.close()
        for h, level in quiet.items():
            h.setLevel(level)
    path = Path(str(out)) if out else weights.with_suffix(".onnx")
    if not path.is_file() or path.stat().st_size == 0:
        raise ExportError(f"ONNX export of {weights} wrote no model ({path} missing or empty). The exporter's log: "
                          f"{log}.")
    return path


class _Plain(logging.Formatter):
    """Log lines without Ultralytics' terminal colours."""

    def format(self, record: logging.LogRecord) -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", super().format(record))


@dataclass
class OnnxCheck:
    """What the check compared and the largest differences it found (onnx_check.json)."""

    passed: bool
    onnx: str
    weights: str
    images: list[str]
    imgsz: int
    conf: float
    iou: float
    box_tol_px: float
    score_tol: float
    detections_torch: int = 0
    detections_onnx: int = 0
    matched: int = 0
    max_box_diff_px: float = 0.0
    """Largest coordinate difference of a matched detection, original-image pixels."""
    max_conf_diff: float = 0.0
    max_raw_box_diff_px: float = 0.0
    """Largest difference of the decoded boxes of all anchors before NMS (network-input pixels)."""
    max_raw_score_diff: float = 0.0
    problems: list[str] = field(default_factory=list)
    onnxruntime: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def match_detections(a: np.ndarray, b: np.ndarray, *, conf: float, box_tol_px: float = BOX_TOL_PX,
                     score_tol: float = SCORE_TOL) -> tuple[list[float], list[float], list[str]]:
    """Pair the detections of the PyTorch model `a` with the ONNX model's `b` (rows [x1, y1, x2, y2, conf, cls]):
    each of `a`, most confident first, takes the unused one of `b` of the same class with the smallest largest
    coordinate difference. Returns (box differences, confidence differences) of the pairs, and the problems: a pair
    further apart than `box_tol_px` or `score_tol`, a detection without a partner (unless its confidence is within
    `score_tol` of `conf`, where rounding may put it on either side)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 6), np.asarray(b, dtype=np.float64).reshape(-1, 6)
    used = np.zeros(len(b), dtype=bool)
    box_d: list[float] = []
    conf_d: list[float] = []
    problems: list[str] = []
    for i in np.argsort(-a[:, 4], kind="stable"):
        same = np.flatnonzero((b[:, 5] == a[i, 5]) & ~used)
        if len(same) == 0:
            if a[i, 4] - conf > score_tol:
                problems.append(f"PyTorch detection {_row(a[i])} has no ONNX detection of the same class")
            continue
        diffs = np.abs(b[same, :4] - a[i, :4]).max(axis=1)
        j = same[int(np.argmin(diffs))]
        d, dc = float(diffs.min()), float(abs(b[j, 4] - a[i, 4]))
        if d > box_tol_px:
            if a[i, 4] - conf > score_tol:
                problems.append(f"PyTorch detection {_row(a[i])} is {d:.2f} px from the nearest ONNX detection of "
                                f"its class {_row(b[j])} (tolerance {box_tol_px} px)")
            continue
        used[j] = True
        box_d.append(d)
        conf_d.append(dc)
        if dc > score_tol:
            problems.append(f"PyTorch detection {_row(a[i])}: ONNX confidence {b[j, 4]:.4f} differs by {dc:.4f} "
                            f"(tolerance {score_tol})")
    for j in np.flatnonzero(~used):
        if b[j, 4] - conf > score_tol:
            problems.append(f"ONNX detection {_row(b[j])} has no PyTorch detection of the same class")
    return box_d, conf_d, problems


def _row(r: np.ndarray) -> str:
    return f"class {int(r[5])} conf {r[4]:.3f} box [{r[0]:.1f}, {r[1]:.1f}, {r[2]:.1f}, {r[3]:.1f}]"


def verify_onnx(weights: Path, onnx_path: Path, images: list[str], *, imgsz: int, conf: float, iou: float,
                box_tol_px: float = BOX_TOL_PX, score_tol: float = SCORE_TOL) -> OnnxCheck:
    """Run `onnx_path` with onnxruntime and the PyTorch checkpoint `weights` on `images` and compare them (see the
    module docstring). Never raises for a mismatch: the result says what differs (passed False)."""
    import onnxruntime as ort
    import torch
    from ultralytics.utils import nms, ops

    from al.yolo.detector import load_model

    res = OnnxCheck(passed=False, onnx=str(onnx_path), weights=str(weights), images=list(images), imgsz=imgsz,
                    conf=conf, iou=iou, box_tol_px=box_tol_px, score_tol=score_tol, onnxruntime=ort.__version__)
    if not images:
        res.problems.append("no images to compare on")
        return res
    net = load_model(weights).model.float().eval()
    names = {int(k): str(v) for k, v in dict(net.names).items()}
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        res.problems.append(f"onnxruntime cannot load {onnx_path}: {e}")
        return res
    meta = sess.get_modelmeta().custom_metadata_map
    onnx_names = _literal(meta.get("names"))
    if onnx_names is not None and {int(k): str(v) for k, v in onnx_names.items()} != names:
        res.problems.append(f"class names differ: the .onnx has {onnx_names}, the checkpoint {names}")
    inp = sess.get_inputs()[0]
    raw_box = raw_score = 0.0
    box_d: list[float] = []
    conf_d: list[float] = []
    for img in images:
        x, shape0 = _letterbox(img, imgsz)
        with torch.inference_mode():
            y = net(torch.from_numpy(x))
        y_torch = (y[0] if isinstance(y, (list, tuple)) else y).cpu().numpy()
        try:
            y_onnx = sess.run(None, {inp.name: x})[0]
        except Exception as e:
            res.problems.append(f"onnxruntime failed on {img}: {e}")
            return res
        if y_onnx.shape != y_torch.shape:
            res.problems.append(f"{Path(img).name}: output shape {tuple(y_onnx.shape)} of the .onnx differs from the "
                                f"PyTorch model's {tuple(y_torch.shape)}")
            continue
        raw_box = max(raw_box, float(np.abs(y_onnx[:, :4] - y_torch[:, :4]).max()))
        raw_score = max(raw_score, float(np.abs(y_onnx[:, 4:] - y_torch[:, 4:]).max()))
        dets = []
        for y_ in (y_torch, y_onnx):
            d = nms.non_max_suppression(torch.from_numpy(np.ascontiguousarray(y_)), conf, iou, nc=len(names))[0]
            d[:, :4] = ops.scale_boxes(x.shape[2:], d[:, :4], shape0)
            dets.append(d.cpu().numpy())
        res.detections_torch += len(dets[0])
        res.detections_onnx += len(dets[1])
        bd, cd, probs = match_detections(dets[0], dets[1], conf=conf, box_tol_px=box_tol_px, score_tol=score_tol)
        box_d += bd
        conf_d += cd
        res.problems += [f"{Path(img).name}: {p}" for p in probs]
    res.matched = len(box_d)
    res.max_box_diff_px = max(box_d, default=0.0)
    res.max_conf_diff = max(conf_d, default=0.0)
    res.max_raw_box_diff_px, res.max_raw_score_diff = raw_box, raw_score
    if raw_score > score_tol:
        res.problems.append(f"class scores before NMS differ by up to {raw_score:.4g} (tolerance {score_tol})")
    if raw_box > box_tol_px:
        res.problems.append(f"boxes before NMS differ by up to {raw_box:.4g} px (tolerance {box_tol_px} px)")
    res.passed = not res.problems
    return res


def _literal(text: str | None):
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return None


def _letterbox(image: str, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, 3, imgsz, imgsz) float32 RGB in [0, 1], letterboxed as Ultralytics' predictor does; the original shape."""
    import cv2
    from ultralytics.data.augment import LetterBox

    im = cv2.imread(os.fspath(image))
    if im is None:
        raise ExportError(f"Cannot read image {image} for the ONNX check: restore it or check the dataset version.")
    lb = cast(np.ndarray, LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)(image=im))
    x = np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    return x.astype(np.float32), im.shape[:2]
