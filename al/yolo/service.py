"""The detector service: owns the loaded models of a run, so each predict pass reuses one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from al.yolo import detector


class DetectorService:
    """Models cached per weights file (path and mtime) for the life of one invocation; one at a time."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], Any] = {}

    def model(self, weights: Path) -> Any:
        p = Path(weights)
        key = (str(p), p.stat().st_mtime_ns if p.exists() else 0)
        if key not in self._models:
            self._models.clear()
            self._models[key] = detector.load_model(p)
        return self._models[key]
