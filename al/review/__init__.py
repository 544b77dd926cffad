"""Annotation round-trips: the local package (package.py) and Roboflow (roboflow.py). Reviewed boxes travel as
al.data.labels.Labelled records into the versioned merge (al.data.manifest)."""

from __future__ import annotations

from typing import cast

from al.core import artifacts, store
from al.core.context import StepContext
from al.core.errors import ReviewError
from al.data.labels import (
    Labelled,
    class_map,
    norm_boxes,
    read_norm_labels,
    remap,
    write_norm_labels,
)


def pick_predictions(ctx: StepContext) -> dict[str, dict]:
    """This iteration's prediction records by image (the validation records, or pool_predictions.json for a pool).
    Parses the file: call it once per step and pass the result down."""
    paths, k = ctx.env.paths, ctx.iteration
    if ctx.env.cfg.dataset.mining_source == "val":
        # an ImageRecord is a TypedDict, i.e. a plain dict at run time, like the pool's JSON records below
        return cast(dict[str, dict], artifacts.load_validation_records(paths, k).by_image())
    data = store.read_json(paths.pool_predictions(k), required=("images",))
    return {r["image"]: r for r in data["images"]}


def pre_annotation_conf(ctx: StepContext) -> float:
    """Predictions at or above this become pre-annotations (review.pre_annotation_conf, else validation.conf)."""
    rc = ctx.env.cfg.review.pre_annotation_conf
    return rc if rc is not None else ctx.env.cfg.validation.conf


__all__ = ["Labelled", "ReviewError", "class_map", "norm_boxes", "pick_predictions", "pre_annotation_conf",
           "read_norm_labels", "remap", "write_norm_labels"]
