"""The committed pretrained checkpoint's report (benchmarks/weights/yolov8n_shapes.json and .md, written by
benchmarks/pretrain.py) describes this very file: its hash, size, classes and a domain it learned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from al.data.synthetic import SHAPES_NAMES

WEIGHTS = Path(__file__).resolve().parents[2] / "benchmarks" / "weights" / "yolov8n_shapes.pt"


def test_report_describes_the_committed_file():
    report = json.loads(WEIGHTS.with_suffix(".json").read_text(encoding="utf-8"))
    data = WEIGHTS.read_bytes()
    assert hashlib.sha256(data).hexdigest() == report["sha256"]
    assert len(data) == report["file_bytes"] < 8_000_000  # optimizer stripped
    assert report["names"] == SHAPES_NAMES == report["generator"]["names"]
    assert report["sha256"] in WEIGHTS.with_suffix(".md").read_text(encoding="utf-8")
    assert report["final"]["val"]["map50_95"] > 0.5  # it learned its domain
