"""The trainer of a prompted YOLOE model (al.yolo.yoloe.prepare_start's start.pt). Imports Ultralytics at module
level: import it only after al.yolo.detector.prepare_offline (the training child does). A module-level class, so
that Ultralytics' DDP launcher can re-import it by name in its worker processes."""

from __future__ import annotations

import copy

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import YOLOEModel
from ultralytics.utils import RANK

from al.yolo.detector import DetectorError


class PromptedYOLOETrainer(DetectionTrainer):
    """A DetectionTrainer whose model is the prompted YOLOEModel of its start checkpoint, kept with its class prompt
    embeddings through build, resume and EMA, and validated by the plain DetectionValidator on those embeddings.
    (Ultralytics' YOLOETrainer would rebuild the model without them, and its text validator fetches an encoder.)"""

    def get_model(self, cfg=None, weights=None, verbose=True):
        pe = getattr(weights, "pe", None)
        if weights is None or pe is None:
            raise DetectorError("a YOLOE training needs its start checkpoint with prompt embeddings (yoloe/start.pt); "
                                "re-run the retrain step")
        cfg = cfg if isinstance(cfg, dict) else weights.yaml
        # built with the checkpoint's own nc (the head's prompt capacity): its shapes must match to load
        model = YOLOEModel(copy.deepcopy(cfg), ch=self.data["channels"], nc=cfg["nc"], verbose=verbose and RANK == -1)
        model.load(weights)
        names = weights.names if isinstance(weights.names, dict) else dict(enumerate(weights.names))
        data_names = self.data["names"]
        if list(names.values()) != list(data_names.values()):
            raise DetectorError(f"the YOLOE start model's classes {list(names.values())} differ from the dataset's "
                                f"{list(data_names.values())}; re-run the retrain step")
        model.set_classes(list(names.values()), pe.detach().clone())  # Ultralytics' YOLOE API: names + embeddings
        return model
