"""The step artefacts as typed models: the validation summary and its per-image records, hard_examples.json and
review.json. save_* writes a model atomically with its schema number (al.core.store); load_* checks the schema and
the model, and a missing, corrupt or invalid file raises StoreError naming the file and what to do.

Per-image records and picks are TypedDicts: pydantic checks them on read, and the steps and the layers below
(error analysis, review packages, hard negatives) keep working on the plain dicts they always had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, with_config
from typing_extensions import NotRequired, Required, TypedDict

from al.core import store
from al.core.paths import RunPaths
from al.core.store import StoreError

VALIDATION_SCHEMA = 2
"""validation.json. Schema 1 was one file with the per-image records inside; it is still read (and split)."""
LEGACY_VALIDATION_SCHEMA = 1
RECORDS_SCHEMA = 1
HARD_EXAMPLES_SCHEMA = 1
REVIEW_SCHEMA = 1

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
"""A score in [0, 1]."""
Count = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict:
        """The file's body (store.write_json adds the schema and turns numpy scalars, tuples and paths that free
        dicts such as a pick's errors may hold into JSON, which pydantic's json mode refuses)."""
        return self.model_dump()


# ------------------------------------------------------------------------------------------------- validation

class Counts(_Model):
    """Matched boxes at the configured conf and IoU, and the scores derived from them."""

    tp: Count
    fp: Count
    fn: Count
    precision: Unit
    recall: Unit
    f1: Unit


class ClassAP(_Model):
    """One class's average precision (Ultralytics' AP: 101-point interpolation, IoU 0.5 and 0.5:0.95)."""

    ap50: Unit
    ap50_95: Unit
    instances: Count = 0


class SplitMetrics(Counts):
    """A whole split (the frozen test split): overall counts and scores, mAP, per class, and how many images."""

    map50: Unit
    map50_95: Unit
    per_class: dict[str, Counts]
    per_class_ap: dict[str, ClassAP] = {}
    images: Count


class DecisionMetrics(SplitMetrics):
    """The model on the decision set (paths.decision_set): the figures convergence, plots and the gate read."""

    set: Literal["test", "val_frozen"]


class Timing(_Model):
    predict_s: Annotated[float, Field(ge=0.0)]
    images: Count


class ValidationSummary(_Model):
    """validation.json: what converge, track and the run's final line need, without any per-image record."""

    iteration: Count
    split: str = "val"
    weights: str | None = None
    conf: Unit
    iou: Unit
    names: list[str]
    dataset_version: str | None = None
    per_class: dict[str, Counts]
    overall: Counts
    map50: Unit
    map50_95: Unit
    train_f1: Unit | None = None
    """F1 on a fixed sample of training images (None without a sample)."""
    train_sample: Count = 0
    test: SplitMetrics | None = None
    """None without a test split."""
    per_class_ap: dict[str, ClassAP] = {}
    """AP50 and AP50-95 per class on this split."""
    decision: DecisionMetrics | None = None
    """The same model on the frozen decision set (None in runs made before the gate)."""
    timing: Timing | None = None


class ImageRecord(TypedDict):
    """One validation image: ground truth [cls, x1, y1, x2, y2] and predictions [cls, conf, x1, y1, x2, y2] in
    pixels, and the matches (al.metrics.matching.match_record): tp [gt_idx, pred_idx, iou], fp pred_idx, fn gt_idx.
    A record without matches (predictions only) is accepted for review; the error analysis needs them."""

    image: str
    width: int
    height: int
    gt: list[tuple[int, float, float, float, float]]
    pred: list[tuple[int, float, float, float, float, float]]
    tp: NotRequired[list[tuple[int, int, float]]]
    fp: NotRequired[list[int]]
    fn: NotRequired[list[int]]


class ValidationRecords(_Model):
    """validation_images.json: one record per validation image, read by analyze, extract and review."""

    iteration: Count
    split: str = "val"
    images: list[ImageRecord]

    def by_image(self) -> dict[str, ImageRecord]:
        return {r["image"]: r for r in self.images}


def _validation_fix(k: int) -> str:
    return (f"It is written by the validate step of iteration {k}: restore it from a backup, or redo iteration {k} "
            f"with --start-iteration {k} (earlier iterations are kept).")


def save_validation(paths: RunPaths, k: int, summary: ValidationSummary, records: ValidationRecords) -> None:
    """The records first, then the summary: a summary on disk always has its records beside it."""
    store.write_json(paths.validation_images(k), records.to_json(), schema=RECORDS_SCHEMA)
    store.write_json(paths.validation(k), summary.to_json(), schema=VALIDATION_SCHEMA)


def load_validation(paths: RunPaths, k: int) -> ValidationSummary:
    """Iteration k's validation summary (a schema-1 validation.json is split into the two files first)."""
    path = paths.validation(k)
    fix = _validation_fix(k)
    data = store.read_json(path, schema=(VALIDATION_SCHEMA, LEGACY_VALIDATION_SCHEMA), fix=fix)
    if data["schema"] == LEGACY_VALIDATION_SCHEMA:
        summary, _ = _split_legacy(paths, k, data)
        if summary is not None:
            return summary
        data = {key: v for key, v in data.items() if key != "images"}  # says what the summary lacks
    return _validate(ValidationSummary, data, path, fix)


def load_validation_records(paths: RunPaths, k: int) -> ValidationRecords:
    """Iteration k's per-image records; from a schema-1 validation.json when the run started before the split."""
    path = paths.validation_images(k)
    fix = _validation_fix(k)
    if not path.is_file() and paths.validation(k).is_file():
        old = store.read_json(paths.validation(k), schema=(VALIDATION_SCHEMA, LEGACY_VALIDATION_SCHEMA), fix=fix)
        if old["schema"] == LEGACY_VALIDATION_SCHEMA:
            return _split_legacy(paths, k, old)[1]
    return _validate(ValidationRecords, store.read_json(path, schema=RECORDS_SCHEMA, fix=fix), path, fix)


def _split_legacy(paths: RunPaths, k: int, data: dict) -> tuple[ValidationSummary | None, ValidationRecords]:
    """A schema-1 validation.json (records inside) as the two models. When the whole file is valid it is rewritten
    as the two files, so later reads are cheap; a file with records only (hand-made) is left as it is, and asking
    for its summary names what is missing."""
    path, fix = paths.validation(k), _validation_fix(k)
    if "images" not in data:
        raise StoreError(f"{path}: schema 1 file without 'images'. {fix}")
    rec = {"iteration": data.get("iteration", k), "split": data.get("split", "val"), "images": data["images"]}
    records = _validate(ValidationRecords, rec, path, fix)
    try:
        summary = ValidationSummary.model_validate(_body({key: v for key, v in data.items() if key != "images"}))
    except ValidationError:
        return None, records
    save_validation(paths, k, summary, records)
    return summary, records


# --------------------------------------------------------------------------------------------- hard examples

@with_config(ConfigDict(extra="allow"))
class Pick(TypedDict, total=False):
    """One picked image. Every strategy writes image, score, components and reasons; fn_weighted adds the errors
    it scored, pool strategies add kind (uncertain | hard_negative | random | most_boxes | diversity); rank is its
    place (1 = best). Other keys a strategy adds are kept."""

    image: Required[str]
    score: float
    rank: int
    kind: str
    components: dict[str, float]
    reasons: list[str]
    errors: list[dict[str, Any]]


class ScanInfo(_Model):
    images: Count
    cached: Count
    model: str
    settings: str


class HardExamples(_Model):
    """hard_examples.json: the picks of one iteration, best first, and how they were chosen."""

    iteration: Count
    source: Literal["val", "pool"] = "val"
    strategy: str = "fn_weighted"
    weights: dict[str, float] = {}
    uncertainty_measure: str | None = None
    candidates: Count = 0
    train_class_counts: dict[str, int] = {}
    scan: ScanInfo | None = None
    """Pool strategies: images scored and how many came from the score cache."""
    hard_negative_candidates: int | None = None
    hard_negative_slots: dict[str, Count] | None = None
    """combined: the hard-negative share of the budget, {reserved, filled, given_back}; the slots without a
    candidate went to the other picks."""
    class_difficulty: dict[str, float] | None = None
    """combined with sampling_strategy.combined_difficulty_calibration: the weight of each class's uncertainty."""
    picks: list[Pick]

    def to_json(self) -> dict:
        """As written (optional keys that were never set stay out)."""
        return self.model_dump(exclude_unset=True)


def save_hard_examples(paths: RunPaths, k: int, hard: HardExamples) -> None:
    store.write_json(paths.hard_examples(k), hard.to_json(), schema=HARD_EXAMPLES_SCHEMA)


def load_hard_examples(paths: RunPaths, k: int) -> HardExamples:
    path = paths.hard_examples(k)
    fix = (f"It is written by the extract step of iteration {k}: restore it from a backup, or redo iteration {k} "
           f"with --start-iteration {k}.")
    return _validate(HardExamples, store.read_json(path, schema=HARD_EXAMPLES_SCHEMA, fix=fix), path, fix)


# ---------------------------------------------------------------------------------------------------- review

class ReviewResult(_Model):
    """review.json: what the review of one iteration did to the dataset. The backend's own summary (source,
    negatives, not_returned, pseudo_thresholds, ...) is kept beside these keys."""

    model_config = ConfigDict(extra="allow")

    iteration: Count
    mode: Literal["manual", "simulated", "pseudo"]
    backend: str | None = None
    simulation: bool = False
    picks: Count
    returned_labelled: Count
    added_images: Count
    added_boxes: Count
    removed_from_val: Count
    val_changed: bool
    skipped_test_duplicates: Count = 0
    duplicates_dropped: Count = 0
    relabelled: Count = 0
    near_duplicates: Count = 0
    pseudo_label_check: dict[str, Any] | None = None
    dataset_version: str
    dataset_counts: dict[str, Any]
    manifest: str
    manifest_diff: str


def save_review(paths: RunPaths, k: int, review: ReviewResult) -> None:
    store.write_json(paths.review(k), review.to_json(), schema=REVIEW_SCHEMA)


def load_review(paths: RunPaths, k: int) -> ReviewResult:
    path = paths.review(k)
    fix = (f"It is written by the review step of iteration {k}: restore it from a backup, or redo that review with "
           f"--start-iteration {k + 1}.")
    return _validate(ReviewResult, store.read_json(path, schema=REVIEW_SCHEMA, fix=fix), path, fix)


# ------------------------------------------------------------------------------------------- promotion gate

DECISION_SET_SCHEMA = 1
PROMOTION_SCHEMA = 1
CHAMPION_SCHEMA = 1


class DecisionSet(_Model):
    """decision_set.json: the images every decision is measured on, frozen at iteration 0. `test` is the frozen
    test split; `val_frozen` a seeded part of validation carved once and never mined (it stays in val)."""

    set: Literal["test", "val_frozen"]
    images: list[str]
    content_hash: str
    """SHA-256 over the sorted images' content hashes (each with its label file's): a changed file is detected."""
    hashes: dict[str, str] = {}
    """Each image's content hash and its label file's: the refusal names the file that changed."""
    created_iteration: Count = 0


class Promotion(_Model):
    """promotion.json of iteration k: the challenger (iteration k's model) against the champion before it, on the
    decision set, with a paired bootstrap over images. Iteration 0 (the baseline) is champion by definition."""

    iteration: Count
    challenger: Count
    champion_before: Count | None
    champion_after: Count
    promoted: bool
    metric: str
    challenger_value: float
    champion_value: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    resamples: Count
    margin: float
    per_class_delta: dict[str, float] = {}
    """AP50-95 change per class (challenger - champion)."""
    alarms: list[str] = []
    """Classes whose AP dropped by more than gate.max_class_drop."""
    decision_set: Literal["test", "val_frozen"]
    decision_images: Count
    reason: str


class Champion(_Model):
    """champion.json: the run's current champion (what release and the next fine-tune use)."""

    iteration: Count
    weights: str
    since_iteration: Count
    """The iteration whose gate made it champion."""
    metric: str
    value: float


def save_promotion(paths: RunPaths, k: int, p: Promotion) -> None:
    store.write_json(paths.promotion(k), p.to_json(), schema=PROMOTION_SCHEMA)


def load_promotion(paths: RunPaths, k: int) -> Promotion:
    path = paths.promotion(k)
    fix = (f"It is written by the validate step of iteration {k} (the promotion gate): redo it with "
           f"--start-iteration {k}.")
    return _validate(Promotion, store.read_json(path, schema=PROMOTION_SCHEMA, fix=fix), path, fix)


def save_decision_set(paths: RunPaths, d: DecisionSet) -> None:
    store.write_json(paths.decision_set, d.to_json(), schema=DECISION_SET_SCHEMA)


def load_decision_set(paths: RunPaths) -> DecisionSet:
    path = paths.decision_set
    fix = ("It is written once, by iteration 0's validate step: restore it from a backup, or start the run again "
           "(--start-iteration 0); changing it would make later iterations' figures incomparable.")
    return _validate(DecisionSet, store.read_json(path, schema=DECISION_SET_SCHEMA, fix=fix), path, fix)


def save_champion(paths: RunPaths, c: Champion) -> None:
    store.write_json(paths.champion, c.to_json(), schema=CHAMPION_SCHEMA)


def load_champion(paths: RunPaths) -> Champion:
    path = paths.champion
    fix = ("It is written by the promotion gate in each validate step; a run without it has not validated its "
           "baseline yet (run the loop first).")
    return _validate(Champion, store.read_json(path, schema=CHAMPION_SCHEMA, fix=fix), path, fix)


# ----------------------------------------------------------------------------------------------------- common

M = TypeVar("M", bound=BaseModel)


def _body(data: dict) -> dict:
    return {key: v for key, v in data.items() if key != "schema"}


def _validate(model: type[M], data: dict, path: Path, fix: str) -> M:
    """The model of a file's body, or a StoreError naming the file, the first bad key and the fix."""
    try:
        return model.model_validate(_body(data))
    except ValidationError as e:
        errs = e.errors()
        where = ".".join(str(p) for p in errs[0]["loc"]) or "(top level)"
        more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
        raise StoreError(f"{path}: invalid value at '{where}': {errs[0]['msg']}{more}. {fix}") from None
