"""The committed pretrained checkpoint (benchmarks/weights/yolov8n_shapes.pt, built by benchmarks/pretrain.py): its
classes are the six shapes, and fine-tuning it on the digits demo (other classes, another class count) works and
transfers every tensor but the head's class outputs (its report: tests/unit/test_pretrained_weights.py)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from al.data.demo import NAMES as DIGITS
from al.data.synthetic import SHAPES_NAMES

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "benchmarks" / "weights" / "yolov8n_shapes.pt"
pytestmark = pytest.mark.slow


def test_fine_tunes_on_other_classes(tmp_path, tiny_data):
    from al.yolo.detector import disable_mlflow_callback, prepare_offline

    prepare_offline(tmp_path / "yolo_config")
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    disable_mlflow_callback()
    model = YOLO(str(WEIGHTS))
    assert [model.names[i] for i in sorted(model.names)] == SHAPES_NAMES

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    LOGGER.addHandler(handler)
    try:
        model.train(data=str(tiny_data), epochs=1, imgsz=64, batch=8, nbs=8, workers=0, device="cpu", fliplr=0.0,
                    plots=False, project=str(tmp_path), name="ft", exist_ok=True)
    finally:
        LOGGER.removeHandler(handler)
    found = [m for m in (re.search(r"Transferred (\d+)/(\d+) items", ln) for ln in lines) if m]
    assert found, lines[-20:]
    done, total = map(int, found[0].groups())
    assert total - done <= 6  # only the class conv (weight, bias) of the head's three scales has another shape
    tuned = YOLO(str(tmp_path / "ft" / "weights" / "best.pt"))
    assert [tuned.names[i] for i in sorted(tuned.names)] == DIGITS
