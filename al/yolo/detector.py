"""Talks to Ultralytics: offline set-up, predict, model building and training specs (validation and mAP:
al.yolo.validator)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from al.core.errors import UserError


class DetectorError(UserError):
    """Ultralytics could not load a model or run; the message says which file and what to do."""


def prepare_offline(config_dir: Path) -> Path:
    """Make Ultralytics work with no network: offline flags, a config dir we own, and a local font.

    Must run before `ultralytics` is imported; Ultralytics reads these at import time. Returns the settings folder.
    """
    config_dir = Path(config_dir).resolve()
    if "ultralytics" in sys.modules and os.environ.get("YOLO_CONFIG_DIR") != str(config_dir):
        # already imported with another config dir (e.g. an earlier run in the same process): keep that one
        config_dir = Path(os.environ.get("YOLO_CONFIG_DIR", config_dir))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("MPLBACKEND", "Agg")
    settings = config_dir / "Ultralytics"
    settings.mkdir(parents=True, exist_ok=True)
    # Without these, every train/val tries to download Arial fonts for its plots.
    from matplotlib import get_data_path

    dejavu = Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (settings / name).exists():
            shutil.copyfile(dejavu, settings / name)
    return settings


def disable_mlflow_callback() -> None:
    """Switch Ultralytics' own MLflow callback off in the loop's settings file (YOLO_CONFIG_DIR, set by
    prepare_offline). The loop records each iteration itself (al.report.tracking, docs/TRACKING.md); left on, the
    callback would log every training's epochs a second time, into ./mlruns of the current directory unless
    MLFLOW_TRACKING_URI is set. Call before a trainer is built: Ultralytics reads the setting per trainer."""
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("mlflow") is not False:
        SETTINGS.update(mlflow=False)


def resolve_device(device: str | Sequence[int]) -> str:
    """The one device inference runs on: 'auto' -> '0' when a CUDA GPU is usable, else 'cpu'; the first of several
    (training.device: [0, 1] trains on both, predicts on 0)."""
    if not isinstance(device, str):
        return str(list(device)[0])
    if "," in device:
        return device.split(",")[0].strip()
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def set_threads(n: int) -> None:
    """Torch's intra-op threads of this process (a scoring worker uses the CPUs it was given, no more)."""
    import torch

    torch.set_num_threads(max(1, int(n)))


@dataclass
class Prediction:
    """Detections of one image in original pixels."""

    path: str
    width: int
    height: int
    boxes: np.ndarray  # (N,4) xyxy
    cls: np.ndarray  # (N,)
    conf: np.ndarray  # (N,)


def load_model(weights: str | Path):
    """Load a YOLO model from a .pt or a model YAML, with an actionable error."""
    from ultralytics import YOLO

    w = str(weights)
    if w.endswith(".pt") and not Path(w).is_file():
        raise DetectorError(f"Model not found: {w}. For iteration 0 set model.baseline to a model YAML "
                            f"(e.g. yolov8n.yaml) or an existing .pt; for iteration k, run iteration k-1 first.")
    try:
        return YOLO(w)
    except Exception as e:  # Ultralytics raises many types for a bad file
        raise DetectorError(f"Could not load model {w}: {e}. Check that the file is an Ultralytics checkpoint.") from e


def predict(
    weights: str | Path,
    images: list[str],
    *,
    imgsz: int,
    conf: float,
    iou: float,
    batch: int,
    device: str | Sequence[int],
    on_progress: Callable[[int, int], None] | None = None,
    model=None,
) -> Iterator[Prediction]:
    """Batched, streamed inference: memory stays flat in the number of images."""
    if not images:
        return
    model = model or load_model(weights)
    total = len(images)
    done = 0
    # chunk the list ourselves so progress can be reported and the source list stays small
    for start in range(0, total, _chunk(batch)):
        chunk = images[start:start + _chunk(batch)]
        for r in model.predict(source=chunk, stream=True, imgsz=imgsz, conf=conf, iou=iou, batch=batch,
                               device=resolve_device(device), verbose=False, save=False):
            yield _prediction(r)
            done += 1
            if on_progress:
                on_progress(done, total)


def _chunk(batch: int) -> int:
    """Images handed to one Ultralytics predict call: several batches, so progress flows and lists stay small."""
    return max(batch * 8, 1)


def _prediction(r) -> Prediction:
    """An Ultralytics Results object as a Prediction in original pixels."""
    b = r.boxes
    h, w = r.orig_shape
    return Prediction(path=str(r.path), width=int(w), height=int(h), boxes=b.xyxy.cpu().numpy().astype(np.float64),
                      cls=b.cls.cpu().numpy().astype(int), conf=b.conf.cpu().numpy().astype(np.float64))


def build_untrained(model_yaml: str, names: list[str], out: Path) -> Path:
    """Write an untrained checkpoint of `model_yaml` with len(names) classes (dry-run stands in for training)."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)  # a dry run must be reproducible (resume tests compare whole runs)
    y = YOLO(model_yaml)
    built = cast(torch.nn.Module, y.model)  # YOLO(<yaml>) builds the network; Ultralytics' code types it str | None
    dm = DetectionModel(built.yaml, nc=len(names), verbose=False)
    dm.names = dict(enumerate(names))
    dm.args = {"imgsz": 640}  # type: ignore[assignment]  # nn.Module types attributes it lacks as Tensor | Module
    y.model = dm  # type: ignore[assignment]  # the same str | None as above
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.pt")
    y.save(tmp)
    os.replace(tmp, out)
    return out


@dataclass
class RawPrediction:
    """One image's post-NMS detections plus what NMS throws away: the dense head's class probabilities of the
    candidate anchors before NMS, each class's best probability anywhere, and a backbone embedding."""

    pred: Prediction
    candidates: np.ndarray  # (M, nc) sigmoid class probabilities of pre-NMS anchors whose best class >= cand_conf
    class_max: np.ndarray  # (nc,) highest probability of each class over all anchors
    embedding: np.ndarray  # (D,) global-average-pooled feature map of the last backbone layer


def _hook_points(net):
    """(detection head, last backbone layer) of the torch model inside Ultralytics' predictor."""
    import torch
    from ultralytics.nn.modules.head import Detect
    from ultralytics.nn.tasks import BaseModel

    inner = getattr(getattr(net, "backend", None), "model", None)  # AutoBackend keeps the torch model here
    roots = [r for r in (inner, net) if isinstance(r, torch.nn.Module)]
    dm = next((m for r in roots for m in r.modules() if isinstance(m, BaseModel)), None)
    if dm is None or not isinstance(dm.model[-1], Detect):
        raise DetectorError("Pool scoring needs a native PyTorch YOLO detection model (.pt or model YAML); this "
                            "model has no Detect head. Use a detection checkpoint.")
    n_backbone = len((getattr(dm, "yaml", None) or {}).get("backbone", [])) or len(dm.model) - 1
    return dm.model[-1], dm.model[n_backbone - 1]


def predict_raw(
    weights: str | Path,
    images: list[str],
    *,
    imgsz: int,
    conf: float,
    iou: float,
    batch: int,
    device: str | Sequence[int],
    cand_conf: float = 0.05,
    max_candidates: int = 100,
    on_progress: Callable[[int, int], None] | None = None,
    model=None,
) -> Generator[RawPrediction, None, None]:
    """Like `predict` (same batched, streamed Ultralytics pass, same preprocessing and NMS), but each image also
    carries the head's pre-NMS class probabilities and a backbone embedding, taken by forward hooks during that
    one pass: no second inference."""
    if not images:
        return
    import torch

    model = model or load_model(weights)
    total, done, step = len(images), 0, _chunk(batch)
    for start in range(0, total, step):
        gen = model.predict(source=images[start:start + step], stream=True, imgsz=imgsz, conf=conf, iou=iou,
                            batch=batch, device=resolve_device(device), verbose=False, save=False)
        # model.predict builds (or re-arms) the predictor before returning the generator, so its torch model
        # (a fused copy of ours) exists now and the hooks go on the modules that will actually run
        head, backbone_end = _hook_points(model.predictor.model)
        cap: dict = {}

        def on_head(module, inputs, output, cap=cap):  # bound: a hook of this chunk's pass only
            raw = output[1] if isinstance(output, tuple) else None
            if not isinstance(raw, dict):
                raise DetectorError("Unexpected Detect head output; pool scoring supports YOLOv8/11/26 detectors.")
            if "one2one" in raw:
                raw = raw["one2one" if module.end2end else "one2many"]
            probs = raw["scores"].float().sigmoid()  # (B, nc, A): independent per-class scores, as NMS sees them
            best = probs.amax(1)  # (B, A)
            top, idx = best.topk(min(max_candidates, best.shape[1]), dim=1)
            cand = probs.gather(2, idx[:, None, :].expand(-1, probs.shape[1], -1)).transpose(1, 2)
            cap.update(top=top.cpu().numpy(), cand=cand.cpu().numpy(), class_max=probs.amax(2).cpu().numpy(),
                       i=0)

        def on_backbone(module, inputs, output, cap=cap):
            cap["emb"] = output.float().mean(dim=(2, 3)).cpu().numpy()

        handles = [head.register_forward_hook(on_head), backbone_end.register_forward_hook(on_backbone)]
        try:
            with torch.inference_mode():
                for r in gen:
                    i = cap["i"]
                    cap["i"] = i + 1  # results come in batch order, after that batch's forward pass
                    keep = cap["top"][i] >= cand_conf
                    yield RawPrediction(pred=_prediction(r), candidates=cap["cand"][i][keep].astype(np.float32),
                                        class_max=cap["class_max"][i].astype(np.float32),
                                        embedding=cap["emb"][i].astype(np.float32))
                    done += 1
                    if on_progress:
                        on_progress(done, total)
        finally:
            for hd in handles:
                hd.remove()
            gen.close()
