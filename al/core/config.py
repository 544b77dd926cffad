"""Typed model of config/al_config.yaml; every error names the file, the key, the value and what is accepted."""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
from pathlib import Path
from typing import Any, Literal, overload

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from al.core import yaml_problems
from al.core.errors import UserError


class ConfigError(UserError):
    """The config file is missing, malformed or holds a bad value (message is one line per problem)."""


class KeyProblem(ValueError):
    """Raised by a model-level validator about particular keys of its section (dotted, relative to the section):
    load_config names the first of them the file sets, with its line, instead of the whole section."""

    def __init__(self, message: str, *keys: str):
        super().__init__(message)
        self.keys = keys


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class DatasetConfig(_Strict):
    data_yaml: Path
    """Ultralytics data.yaml of the labelled set (train and val splits required; test optional and frozen)."""
    pool_dir: Path | None = None
    """Optional folder of unlabelled images to mine from (mining_source: pool)."""
    pool_labels_dir: Path | None = None
    """Hidden YOLO labels of the pool images; only the `simulated` review source reads them."""
    mining_source: Literal["val", "pool"] = "val"
    """Where hard examples are mined: the validation split (seed 004) or the unlabelled pool. Never the test split."""
    combined_dir: Path | None = None
    """Folder where a human puts the reviewed YOLO export (seed 004's datasets/dataset_combined/)."""
    on_bad_data: Literal["refuse", "skip"] = "refuse"
    """What the dataset check does with an image or label file that training would drop as corrupt (a class id
    outside names, a negative or non-numeric value, NaN, a line without 5 fields, coordinates outside 0..1 or in
    pixels, an image Pillow cannot decode). The check runs at every start (--dry-run too) and on every merge of
    reviewed labels. refuse: stop before anything trains and list `file:line: what is wrong -> how to fix`.
    skip: leave those images out of training and validation alike, with a console warning and a count in the
    iteration report. Returned review label files with a bad line are always refused (fix them and --resume)."""


TEXT_ENCODER_STANDIN = "deterministic"
"""model.text_encoder value that embeds prompts with a local hashing encoder (not semantic; for tests and CI)."""


class ModelConfig(_Strict):
    baseline: str = "yolov8n.yaml"
    """Baseline model (iteration 0): an Ultralytics model YAML (trained from scratch) or a local .pt file."""
    initial_weights: Path | None = None
    """An already trained checkpoint adopted as iteration 0's model instead of training one: the loop verifies it,
    records its SHA-256 in iteration 0's train_result.json and validates it. For a baseline trained elsewhere, or one
    shared by several runs (the simulator's arms of a seed). Relative paths resolve against the config file's
    folder."""
    target: str | None = None
    """Seed 004's target: a YOLOE model that iterations 1+ fine-tune with the class prompts of prompt_versions/. A
    local YOLOE .pt (e.g. yoloe-26n-seg.pt; a -seg checkpoint is used as a detector: its mask branch is dropped) or
    a YOLOE YAML shipped with Ultralytics (e.g. yoloe-26n.yaml). Unset: every iteration fine-tunes the baseline's
    architecture. What transfers from the baseline is decided by the two architectures and written to the
    iteration's metadata (docs/YOLOE.md)."""
    type: str = "detect"
    """Free-text model description, recorded in metadata."""
    text_encoder: str | None = None
    """Local weights file of the text encoder that turns the class prompts into YOLOE's text embeddings (needed
    with model.target; never downloaded): mobileclip2_b.ts for YOLOE-26 (text_model mobileclip2:b),
    mobileclip_blt.ts for YOLOE-11/v8, or an OpenAI CLIP ViT-B/32 .pt. Relative paths resolve against the config
    file's folder. 'deterministic' embeds with a local hashing encoder instead: reproducible but NOT semantic
    (prompts only identify classes), for tests and machines without the weights; it is named in logs and
    metadata."""


class ActiveLearningConfig(_Strict):
    max_samples_per_iteration: int = Field(20, ge=1, le=100000)
    """Images picked for review per iteration."""
    budget_schedule: list[int] | None = None
    """Per-iteration budgets instead of one: entry k is iteration k's (the last entry repeats). It counts images, or
    boxes with max_boxes_per_iteration set (which it then replaces). E.g. [16, 32, 64] for rounds that grow."""
    max_boxes_per_iteration: int | None = Field(None, ge=1, le=10_000_000)
    """review_source simulated: a budget in boxes. The picks are revealed in rank order until their ground-truth
    boxes reach this (the pick that crosses it is labelled too: its boxes are known only once drawn); the rest go
    back to the pool. Keep max_samples_per_iteration large enough that the picks can fill it."""
    require_human_review: bool = True
    """Pause for a human between extract and retrain (ignored with --auto or review_source: simulated)."""
    review_source: Literal["manual", "simulated"] = "manual"
    """manual: humans label the picks through review.backend (a local annotation package, or Roboflow); a YOLO export
    in dataset.combined_dir is also accepted. simulated: reveal the hidden labels of the picks (for datasets whose
    ground truth is known: the demo and benchmarks)."""
    target_f1: float = Field(0.98, gt=0, le=1)
    """Stop when validation F1 reaches this."""
    plateau_threshold: float = Field(0.005, ge=0, le=1)
    """Stop when F1 improved by less than this (absolute) over the last `plateau_window` iterations."""
    plateau_window: int = Field(3, ge=1, le=100)
    """Iterations looked back over by the plateau rule."""
    overfit_gap: float = Field(0.05, ge=0, le=1)
    """Stop when train F1 minus validation F1 exceeds this."""
    max_iterations: int = Field(10, ge=1, le=1000)
    """Resource limit: the number of iterations evaluated at most."""
    pseudo_label_conf: float = Field(0.5, gt=0, lt=1)
    """--auto: predictions at or above this confidence become pseudo-labels."""
    pseudo_label_conf_per_class: dict[str, float] = Field(default_factory=dict)
    """--auto: per-class overrides of pseudo_label_conf, by class name."""
    train_f1_sample: int = Field(64, ge=0, le=100000)
    """Training images (a fixed sample) predicted each iteration to measure train F1 for the overfitting rule."""

    @field_validator("budget_schedule")
    @classmethod
    def _schedule(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(int(n) < 1 for n in v)):
            raise ValueError(f"{v} must list one budget (1 or more) per iteration, e.g. [16, 32, 64]")
        return v

    def picks_budget(self, k: int) -> int:
        """Images iteration k picks (with a box budget: candidates to rank, at least its box budget's worth)."""
        if self.budget_schedule and self.max_boxes_per_iteration is None:
            return self.budget_schedule[min(k, len(self.budget_schedule) - 1)]
        if self.budget_schedule:
            return max(self.max_samples_per_iteration, self.box_budget(k) or 0)
        return self.max_samples_per_iteration

    def box_budget(self, k: int) -> int | None:
        """Boxes iteration k's picks may add (None: no box budget)."""
        if self.max_boxes_per_iteration is None:
            return None
        if self.budget_schedule:
            return self.budget_schedule[min(k, len(self.budget_schedule) - 1)]
        return self.max_boxes_per_iteration


class SamplingConfig(_Strict):
    class_balance_weight: float = Field(0.3, ge=0)
    """Prefer under-represented classes."""
    size_diversity_weight: float = Field(0.3, ge=0)
    """Prefer rare sizes."""
    spatial_diversity_weight: float = Field(0.2, ge=0)
    """Prefer edge and corner cases."""
    uncertainty_weight: float = Field(0.2, ge=0)
    """Prefer low contrast / unusual aspect (visual difficulty)."""
    strategy: Literal["random", "entropy", "most_boxes", "diversity", "fn_weighted", "combined"] = "combined"
    """How images are picked. random: uniform draw (a control). entropy: the most uncertain images, judged from the
    detection head's class probabilities before NMS. most_boxes: the images where the current model predicts the
    most boxes at validation.conf (ties: the more uncertain, then a seeded random order), a control for a strategy
    that wins by picking busier images. diversity: embedding coverage alone, k-center greedy (farthest first, by
    cosine distance) on the backbone embeddings from the labelled images, no uncertainty. fn_weighted: seed 004's
    FN score (the four weights above). combined: uncertainty + diversity + class balance (the combined_* weights)
    plus hard negatives. All but fn_weighted work on either mining_source (pool images, or the validation split);
    only combined takes hard negatives. Left unset, it is combined for mining_source: pool and fn_weighted for
    mining_source: val."""
    uncertainty_measure: Literal["entropy", "margin"] = "entropy"
    """How a pre-NMS candidate's class confusion is measured: normalised entropy or 1 - (top1 - top2) margin."""
    candidate_conf: float = Field(0.05, gt=0, lt=1)
    """Pre-NMS anchors whose best class probability reaches this are uncertainty candidates."""
    uncertainty_top_k: int = Field(10, ge=1, le=10000)
    """An image's uncertainty is the mean of its top_k candidate uncertainties (missing ones count 0)."""
    combined_uncertainty_weight: float = Field(0.5, ge=0)
    """combined: weight of the image's uncertainty (divided by the pool's highest)."""
    combined_diversity_weight: float = Field(0.0, ge=0)
    """combined: weight of the backbone-embedding distance to the nearest labelled or already-picked image. 0 by
    default since the 480-batch ablation (docs/SIMULATE_MATCHED.md, from scratch: 0.3 cost 0.010 test mAP50-95 of
    AUC on five seeds); set it (e.g. 0.3) for a pool of near-duplicate frames, such as video, where a batch could
    take ten of one scene."""
    combined_class_balance_weight: float = Field(0.2, ge=0)
    """combined: weight of max over classes of P(image holds the class) x inverse labelled frequency."""
    combined_class_balance_update: bool = False
    """combined: count each pick's likely classes as labelled before the next pick of the same batch, so a batch
    spreads over the rare classes instead of every pick chasing the rarest one."""
    combined_difficulty_calibration: bool = False
    """combined: weigh each image's uncertainty by how hard the current model finds the classes it likely holds
    (1 - that class's AP50 on the validation split, relative to the mean over classes), so uncertain images of
    classes the model already detects well give way to those of classes it still fails on."""
    hard_negative_share: float = Field(0.2, ge=0, le=1)
    """combined: at most this share of each iteration's picks are hard negatives (confident false positives)."""
    hard_negative_conf: float = Field(0.5, gt=0, lt=1)
    """A false positive at or above this confidence makes its image a hard-negative candidate."""
    deployed_detections_dir: Path | None = None
    """Optional folder of a deployed model's detections: one <image stem>.txt per image, lines
    'cls xc yc w h conf' (normalised, as `yolo predict save_txt=True save_conf=True` writes). Relative paths
    resolve against the config file's folder."""

    def weights(self) -> dict[str, float]:
        """fn_weighted's four weights."""
        return {k: getattr(self, k) for k in ("class_balance_weight", "size_diversity_weight",
                                               "spatial_diversity_weight", "uncertainty_weight")}

    def combined_weights(self) -> dict[str, float]:
        """combined's three weights, keyed as al.selection.sampling.combined_select expects."""
        return {"uncertainty": self.combined_uncertainty_weight, "diversity": self.combined_diversity_weight,
                "class_balance": self.combined_class_balance_weight}


class TrainingConfig(_Strict):
    strategy: Literal["fine_tune"] = "fine_tune"
    """Iteration k >= 1 fine-tunes from iteration k-1's best.pt."""
    base_lr: float = Field(0.001, gt=0, le=1)
    """Learning rate of the baseline; iteration k uses base_lr * lr_decay_factor ** k."""
    lr_decay_factor: float = Field(0.5, gt=0, le=1)
    """Learning-rate decay per iteration."""
    optimizer: Literal["SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] = "AdamW"
    """Explicit optimizer (Ultralytics' 'auto' would ignore the learning rate)."""
    epochs_base: int = Field(150, ge=1, le=10000)
    """Epochs for the baseline (iteration 0)."""
    epochs_increment: int = Field(100, ge=1, le=10000)
    """Epochs for each fine-tune (iteration 1+)."""
    schedule: Literal["chained", "matched", "converged"] = "chained"
    """chained: iteration k+1 fine-tunes iteration k's model (or the champion: gate.fine_tune_from) for
    epochs_increment epochs, so a later model has also had more training. matched: every fine-tune starts from the
    baseline (iteration 0's best.pt) and runs matched_steps training batches (epochs = ceil(matched_steps /
    batches per epoch of its training set)), so a model's quality depends on its labels, not on the rounds before
    it: the label-efficiency protocol of `al-loop simulate` (docs/SIMULATE.md). converged: every model starts from
    the run's start weights (model.baseline when it is a .pt, such as a pretrained detector; else the baseline's
    best.pt for the fine-tunes) and trains until the validation fitness has not improved for `patience` epochs, at
    most epochs_base (iteration 0) or epochs_increment (later) epochs; its best epoch on the validation split is the
    model. Each model is then limited by its labels, not by its training (the simulator checks it)."""
    matched_steps: int | None = Field(None, ge=1, le=10_000_000)
    """schedule matched: training batches of every fine-tune. Unset: epochs_increment epochs of the baseline's
    training set (iteration 0's)."""
    patience: int = Field(20, ge=0, le=10000)
    """Early-stopping patience in epochs (0 disables)."""
    imgsz: int = Field(640, ge=32, le=8192)
    """Training and inference image size (multiple of 32)."""
    batch: int = Field(16, ge=1, le=4096)
    """Batch size."""
    device: str | list[int] = "auto"
    """'auto' (first GPU if any, else cpu), 'cpu', a CUDA device such as '0', or several CUDA devices, [0, 1]
    (or '0,1'), to train on them with Ultralytics' multi-GPU DDP (training.batch is then split across them).
    Inference (validate, the pool scan) uses the first of them. A device this machine does not have is refused
    before training starts."""
    workers: int = Field(2, ge=0, le=64)
    """Dataloader workers."""
    seed: int = 0
    """Training seed."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Further Ultralytics train options passed through as-is (e.g. nbs, fliplr, mosaic)."""

    @field_validator("device", mode="before")
    @classmethod
    def _device_list(cls, v: Any) -> Any:
        if isinstance(v, str) and "," in v:  # Ultralytics' own spelling of several devices
            parts = [s.strip() for s in v.split(",")]
            if not all(s.isdigit() for s in parts):
                raise ValueError(f"{v!r} is not a list of CUDA device numbers; use e.g. [0, 1] or '0,1'")
            return [int(s) for s in parts]
        return v

    @model_validator(mode="after")
    def _imgsz_stride(self):
        if isinstance(self.device, list):
            dev = self.device
            if not dev or any(d < 0 for d in dev) or len(set(dev)) != len(dev):
                raise KeyProblem(f"device {dev} must list distinct CUDA device numbers (0 or more), e.g. [0, 1]; or "
                                 f"use 'cpu' or 'auto'", "device")
        if self.imgsz % 32:
            raise KeyProblem(f"imgsz {self.imgsz} is not a multiple of 32; use e.g. {max(32, self.imgsz // 32 * 32)}",
                             "imgsz")
        if self.schedule == "converged" and self.patience < 1:
            raise KeyProblem("schedule 'converged' stops each training by its validation fitness: set patience to 1 "
                             "or more (e.g. 10)", "patience", "schedule")
        if self.schedule == "converged" and self.extra.get("val") is False:
            raise KeyProblem("schedule 'converged' validates every epoch to stop and keep the best one: remove "
                             "'val: false' from training.extra", "extra", "schedule")
        reserved = {"data", "epochs", "lr0", "imgsz", "batch", "project", "name", "exist_ok", "device", "resume",
                    "patience", "optimizer", "workers", "seed", "model"}
        clash = sorted(reserved & set(self.extra))
        if clash:
            raise KeyProblem(f"training.extra sets {clash}, which the loop controls; use the training.* keys instead",
                             *(f"extra.{k}" for k in clash))
        return self


class ValidationConfig(_Strict):
    conf: float = Field(0.25, gt=0, lt=1)
    """Confidence threshold for TP/FP/FN counting and F1."""
    iou: float = Field(0.5, gt=0, lt=1)
    """IoU needed to match a prediction to a ground-truth box."""
    nms_iou: float = Field(0.7, gt=0, le=1)
    """NMS IoU of the validator pass (Ultralytics' `iou`); mAP is the validator's at conf 0.001 (docs/METRICS.md)."""
    batch: int = Field(16, ge=1, le=4096)
    """Batch size of the validator pass. Its rect batches make mAP depend slightly on it: give `yolo val` the same."""


class GateConfig(_Strict):
    decision_set: Literal["auto", "test", "val_frozen"] = "auto"
    """The frozen set every decision is measured on (convergence rules, trend plots, the promotion gate), chosen
    once at iteration 0's validate and kept for the run (decision_set.json). test: the frozen test split.
    val_frozen: a seeded part of validation carved once; it stays in val and is never mined. auto: test when the
    dataset has a test split, else val_frozen."""
    val_frozen_fraction: float = Field(0.3, gt=0, lt=1)
    """val_frozen: the share of iteration 0's validation images frozen (at least one), drawn with training.seed."""
    metric: Literal["f1", "map50", "map50_95"] = "f1"
    """What the challenger must improve on the decision set: F1 at validation.conf and .iou, mAP50 or mAP50-95."""
    margin: float = Field(0.0, ge=-1, le=1)
    """The challenger is promoted only when its metric minus the champion's is above this (absolute points). A
    negative margin accepts a challenger that is at most that much worse."""
    require_significant: bool = False
    """Also require the bootstrap interval's lower bound to be above 0 (a significant improvement)."""
    confidence: float = Field(0.95, gt=0, lt=1)
    """Coverage of the paired bootstrap interval of the difference."""
    resamples: int = Field(1000, ge=10, le=100000)
    """Paired bootstrap resamples of the decision images (the same images for both models) with metric f1."""
    map_resamples: int = Field(200, ge=10, le=100000)
    """The same with metric map50 or map50_95: each resample recomputes every class's AP (F1's is one matrix
    product), so fewer keep the gate within a few percent of the validate step (measured in docs/GATE.md)."""
    max_class_drop: float = Field(0.10, ge=0, le=1)
    """A class whose AP50-95 drops by more than this raises an alarm and blocks the promotion."""
    min_class_instances: int = Field(5, ge=0, le=1000000)
    """Classes with fewer ground-truth boxes than this in the decision set raise no alarm (their AP is noise)."""
    fine_tune_from: Literal["champion", "latest"] = "champion"
    """What the next retrain fine-tunes: the champion's best.pt (a rejected challenger is kept, not built on) or
    the latest iteration's (the loop before the gate)."""


class PromptsConfig(_Strict):
    source: Path | None = None
    """Optional JSON file of initial per-class prompts ({"class name": "prompt text"}), versioned per iteration in
    prompt_versions/."""
    texts: dict[str, str] = Field(default_factory=dict)
    """Per-class prompt texts by class name. Seed 004 writes them directly under prompts: (`detail: "A detail
    callout..."`); both forms are accepted and every name must be a class of dataset.data_yaml (a typo is
    refused). They win over prompts.source."""

    @model_validator(mode="before")
    @classmethod
    def _class_keys(cls, raw: Any) -> Any:
        # seed 004's form: any key besides source/texts is a class name whose value is its prompt text
        if not isinstance(raw, dict):
            return raw
        extra = {k: v for k, v in raw.items() if k not in ("source", "texts")}
        if not extra:
            return raw
        bad = [str(k) for k, v in extra.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise KeyProblem(f"a per-class prompt must be a non-empty text (class name: \"prompt text\"); "
                             f"{bad} are not", *bad)
        texts = raw.get("texts") or {}
        if not isinstance(texts, dict):
            return raw  # the field's own validation names the bad value
        both = sorted(set(texts) & set(extra))
        if both:
            raise KeyProblem(f"prompts for {both} are given both under prompts.texts and directly under "
                             f"prompts; keep one", *both)
        return {**{k: raw[k] for k in ("source",) if k in raw}, "texts": {**texts, **extra}}


class AnalysisConfig(_Strict):
    crop_margin: float = Field(0.25, ge=0, le=5)
    """Context margin around FN crops, as a fraction of the box size on each side."""
    max_crops: int = Field(500, ge=0, le=1000000)
    """FN crops saved per iteration at most (hardest first)."""


_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_TRACKING_SCHEMES = (*_DB_SCHEMES, "http", "https", "databricks")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


def mlflow_installed() -> bool:
    """Whether the optional mlflow package can be imported (checked without importing it: it takes ~2 s)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # sys.modules["mlflow"] = None (import blocked) or a broken package
        return False


class MlflowConfig(_Strict):
    enabled: bool = False
    """Record the experiment history in MLflow (docs/TRACKING.md): one MLflow run per iteration, the champion in
    the model registry under the alias 'champion'. Needs the optional extra: pip install -e '.[mlflow]'."""
    tracking_uri: str | None = None
    """Where the history goes: a database URI (sqlite:////abs/mlflow.db, postgresql://...) or a tracking server
    (http(s)://host:5000, databricks). Unset: a SQLite store under the run directory, <run_dir>/mlflow/mlflow.db
    (browse it with `mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow/mlflow.db`). A relative sqlite path
    resolves against the config file's folder. A plain folder (file store) is refused: the model registry needs a
    database."""
    artifact_location: str | None = None
    """Where a new experiment keeps its artefacts: a folder (relative to the config file's folder) or a URI
    (s3://..., file:///...). Unset: <run_dir>/mlflow/artifacts with the default store, the server's choice with a
    tracking_uri. Used only when the experiment is created."""
    experiment: str | None = Field(None, min_length=1, max_length=250)
    """MLflow experiment name. Unset: the run directory's name (e.g. demo_run)."""
    registered_model: str | None = None
    """Model registry name the champion is registered under. Unset: '<experiment>-detector' (characters other than
    letters, digits, '_', '.' and '-' become '_')."""
    log_artifacts: bool = True
    """Attach each iteration's trend plots, error-analysis plots, iteration report, metadata.json, validation.json,
    promotion.json and prompt version to its run."""
    log_per_class: bool = True
    """Log per-class figures (validation F1 and FN per class, test AP per class, the gate's per-class AP change)."""
    log_training_curves: bool = True
    """Log the per-epoch figures of the training that made the iteration's model (from its train_progress.jsonl).
    Ultralytics' own MLflow callback is always switched off, so these are logged once."""
    register_champion: bool = True
    """On promotion, log the champion's best.pt, register it as a model version and move the alias 'champion'."""

    @model_validator(mode="after")
    def _checks(self):
        if not self.enabled:
            return self
        if not mlflow_installed():
            raise KeyProblem("tracking.mlflow.enabled is true but the mlflow package is not installed; install the "
                             "optional extra: pip install -e '.[mlflow]' (or set enabled: false)", "enabled")
        uri = self.tracking_uri
        if uri is not None:
            scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
            if scheme not in _TRACKING_SCHEMES:
                raise KeyProblem(f"tracking_uri {uri!r} is not a database or server URI; use sqlite:///<path>/"
                                 f"mlflow.db (the model registry needs a database, a folder store cannot hold it), "
                                 f"http(s)://<server>:5000 for a team server, or leave it unset for the run's own "
                                 f"store", "tracking_uri")
            if scheme == "sqlite" and not uri.startswith("sqlite:///"):
                raise KeyProblem(f"tracking_uri {uri!r}: a SQLite URI is sqlite:/// followed by the file's path "
                                 f"(sqlite:////abs/path/mlflow.db, or sqlite:///rel/mlflow.db beside the config)",
                                 "tracking_uri")
        if self.registered_model is not None and not _MODEL_NAME.match(self.registered_model):
            raise KeyProblem(f"registered_model {self.registered_model!r} must start with a letter or digit and "
                             f"hold only letters, digits, '_', '.' and '-' (at most 200)", "registered_model")
        return self


class TrackingConfig(_Strict):
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    """Experiment history in MLflow (optional; docs/TRACKING.md)."""


def _installed(*modules: str) -> bool:
    """Whether every top-level module can be imported (checked without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):  # sys.modules[m] = None (import blocked) or a broken package
        return False


class RayPoolConfig(_Strict):
    address: str | None = None
    """The Ray cluster to join: 'auto' (the cluster this machine belongs to, `ray start` ran here), host:6379 (the
    head node's GCS), or ray://host:10001 (Ray Client). Every node must have this package installed
    (pip install -e '.[ray]') and see the pool images and the run directory under the same paths. Unset: a local
    Ray runtime is started for the scan with num_cpus / num_gpus and shut down after it."""
    num_workers: int = Field(2, ge=1, le=100000)
    """Scoring actors: each loads the model once and scores one shard (pool.shard_size images) at a time."""
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    """CPUs Ray reserves for each actor; also its torch thread count (rounded down, at least 1)."""
    gpus_per_worker: float = Field(0.0, ge=0, le=64)
    """GPUs Ray reserves for each actor (e.g. 1, or 0.5 to put two actors on one GPU); 0 scores on CPU."""
    num_cpus: int | None = Field(None, ge=1, le=100000)
    """CPUs of the local runtime (without address). Unset: num_workers x cpus_per_worker, plus one for Ray Data's
    own tasks."""
    num_gpus: int | None = Field(None, ge=0, le=1024)
    """GPUs of the local runtime (without address). Unset: Ray's own count of this machine's GPUs."""
    object_store_mb: int | None = Field(None, ge=80, le=10_000_000)
    """Object store memory of the local runtime in MiB. Unset: 512 MiB (a shard's scores are ~0.3 MiB; the scan
    streams, so a small store is enough)."""
    temp_dir: Path | None = None
    """Where the local runtime keeps its sockets, logs (session_latest/logs) and spilled objects. Unset:
    /tmp/al-ray-<user id>. Relative paths resolve against the config file's folder; keep it short (Ray's socket
    paths must stay under 107 characters)."""
    max_retries: int = Field(3, ge=0, le=100)
    """How often Ray restarts a scoring actor that died (killed, out of memory, node lost) and retries its shard;
    the scan fails after that."""
    hash_on: Literal["auto", "driver", "ray"] = "auto"
    """Where the content hashes of images the run's hash cache does not know are computed. ray: Ray Data tasks on
    the cluster's nodes (worth it when the pool lives on a network file system). driver: in the loop's process, a
    few threads (no task start-up cost; on one machine the disks are the same). auto: ray with an address, driver
    for a local runtime."""


class PoolConfig(_Strict):
    engine: Literal["local", "ray"] = "local"
    """Where the pool scan runs (the content hashes, the one predict pass with its pre-NMS and embedding hooks, the
    per-image scores). local: in the loop's process. ray: a Ray Data pipeline over shards of the pool with a pool of
    actors that each load the model once (pool.ray); needs the optional extra: pip install -e '.[ray]'. Both write
    the same score cache (<run_dir>/cache/pool_scores), so a scan may be resumed with either, and both pick the
    same images."""
    shard_size: int = Field(256, ge=1, le=100000)
    """Images per shard: one cache file and one Ray task. The work lost when a scan is interrupted is at most one
    shard per worker."""
    batch: int | None = Field(None, ge=1, le=4096)
    """Inference batch size of the scan. Unset: validation.batch."""
    ray: RayPoolConfig = Field(default_factory=RayPoolConfig)

    @model_validator(mode="after")
    def _needs_ray(self):
        if self.engine == "ray" and not _installed("ray", "pyarrow"):
            raise KeyProblem("pool.engine is 'ray' but Ray Data is not installed; install the optional extra: "
                             "pip install -e '.[ray]' (or set engine: local)", "engine")
        return self


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_mapping(mapping: dict[str, str | None]) -> None:
    bad = [k for k, v in mapping.items() if not k or v == ""]
    if bad:
        raise KeyProblem(f"class_mapping has empty names at {bad}; map an export class to a project class "
                         f"name, or to null to drop it", *(f"class_mapping.{k}" for k in bad if k), "class_mapping")


class LocalReviewConfig(_Strict):
    import_from: Path | None = None
    """Where the reviewed labels come back from: a folder or zip of YOLO labels, a COCO JSON, or a YOLO dataset
    with data.yaml. Unset: the package's returned/ folder, else dataset.combined_dir (seed 004's export)."""
    make_zip: bool = True
    """Also write the annotation package as one zip (to send to an annotation service)."""
    thumbnails: bool = True
    """Write a thumbnail per image (pre-annotations drawn) and a contact sheet of all picks."""
    thumbnail_size: int = Field(256, ge=32, le=2048)
    """Longest side of each thumbnail in pixels."""
    guidelines: Path | None = None
    """Optional text file of project-specific annotation guidelines, appended to the package's GUIDELINES.md."""
    class_mapping: dict[str, str | None] = Field(default_factory=dict)
    """Class name in the returned labels (their data.yaml or classes.txt, COCO category names, the data.yaml of
    dataset.combined_dir) -> project class name; null drops that class. Names listed here and names equal to a
    project class are remapped by name. Unset: the names must equal the project's, in order, or the import is
    refused."""
    max_zip_bytes: int = Field(2 << 30, ge=1 << 20)
    """A returned zip whose members add up to more than this many bytes uncompressed is refused before anything is
    extracted (default 2 GiB)."""
    max_zip_members: int = Field(100_000, ge=1)
    """A returned zip with more members than this is refused before anything is extracted."""
    max_zip_ratio: float = Field(200.0, ge=1)
    """A returned zip member over 1 MiB that expands more than this many times its compressed size is refused as a
    zip bomb (label files and images compress far less)."""

    @model_validator(mode="after")
    def _checks(self):
        _check_mapping(self.class_mapping)
        return self


class RoboflowReviewConfig(_Strict):
    workspace: str | None = None
    """Roboflow workspace slug (from the project URL); unset: the API key's own workspace."""
    project: str | None = None
    """Roboflow project slug (from the project URL); required with review.backend: roboflow."""
    version: int | Literal["newest"] = "newest"
    """Dataset version to download after review: a number, or newest (the highest version number)."""
    api_url: str | None = None
    """Base URL of a Roboflow-compatible API; unset: the SDK's default (or the API_URL environment variable)."""
    api_key_env: str = "ROBOFLOW_API_KEY"
    """Environment variable that holds the API key (read first). The key is never written to any file or log."""
    secrets_file: Path | None = None
    """File holding the API key, used when the environment variable is unset: a bare key, or NAME=key lines
    where NAME is api_key_env. Keep it out of version control and readable only by you."""
    pre_annotations: bool = True
    """Upload the model's predictions with each image so reviewers correct instead of drawing from scratch."""
    as_predictions: bool = True
    """Upload pre-annotations as model predictions (shown as suggestions to accept or fix), not as finished labels."""
    upload_crops: bool = False
    """Also upload the false-negative crops of the picked images (seed 004); annotated crops return as extra
    training images."""
    batch_prefix: str = Field("al", min_length=1, max_length=40)
    """Upload batch name prefix; each iteration's batch is named '<prefix>-iteration-<k>'."""
    tags: list[str] = Field(default_factory=list)
    """Tags added to every uploaded image (besides '<prefix>-iteration-<k>')."""
    class_mapping: dict[str, str | None] = Field(default_factory=dict)
    """Export class name -> project class name, for exports whose names or order differ; null drops that class."""
    match_classes_by_name: bool = False
    """Accept an export whose class names equal the project's in another order (Roboflow sorts them) and remap by
    name. Without this or class_mapping any difference in names or order is refused."""
    use_original_images: bool = False
    """Train on the picked original image with the export's labels instead of the exported (re-encoded) image. Only
    correct when the Roboflow version's preprocessing keeps the geometry (none, or resize by stretching)."""
    keep_augmented: bool = False
    """Also merge the export's augmented copies of a picked image (Roboflow adds them to the train split)."""
    max_retries: int = Field(5, ge=0, le=50)
    """Retries per request on HTTP 429/5xx and connection errors."""
    retry_backoff_s: float = Field(2.0, ge=0, le=600)
    """First retry delay in seconds; doubled on every further retry (capped at 120 s)."""
    export_poll_s: float = Field(10.0, gt=0, le=3600)
    """Seconds between checks while Roboflow prepares the export (a countdown is shown)."""
    export_timeout_s: float = Field(1800.0, gt=0, le=86400)
    """Give up waiting for the export after this many seconds (the run stays resumable)."""

    @field_validator("api_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _checks(self):
        if not _ENV_NAME.match(self.api_key_env):
            raise KeyProblem(f"api_key_env {self.api_key_env!r} is not an environment variable name; use e.g. "
                             f"ROBOFLOW_API_KEY (the variable's name, never the key itself)", "api_key_env")
        if self.api_url is not None and not self.api_url.startswith(("http://", "https://")):
            raise KeyProblem(f"api_url {self.api_url!r} must start with http:// or https://", "api_url")
        for name in ("workspace", "project"):
            val = getattr(self, name)
            if val is not None and (not val or "/" in val or val != val.strip()):
                raise KeyProblem(f"{name} {val!r} must be the bare slug from the project URL, e.g. "
                                 f"app.roboflow.com/<workspace>/<project>", name)
        _check_mapping(self.class_mapping)
        if isinstance(self.version, int) and self.version < 1:
            raise KeyProblem(f"version {self.version} must be 1 or more, or newest", "version")
        return self


class LabelStudioReviewConfig(_Strict):
    url: str = "http://127.0.0.1:8080"
    """Base URL of the Label Studio server (`al-loop label-studio --config ...` starts a local one at this URL)."""
    api_key_env: str = "LABEL_STUDIO_API_KEY"
    """Environment variable that holds the API token (read first). The token is never written to any file or log."""
    secrets_file: Path | None = None
    """File holding the API token, used when the environment variable is unset: a bare token, or NAME=token lines
    where NAME is api_key_env. Keep it out of version control and readable only by you."""
    project: str | None = None
    """Title of the Label Studio project to create or reuse; unset: 'al-loop <run folder name>'. A reused project's
    labelling config must hold the dataset's classes."""
    pre_annotations: bool = True
    """Import the model's boxes (>= review.pre_annotation_conf) with each task as predictions, with their scores."""
    on_skipped: Literal["refuse", "keep"] = "refuse"
    """A task the reviewer skipped: refuse (continuing stops and names the tasks; annotate them, then continue) or
    keep (the image is not merged this round and stays where it is, so a later round can pick it again)."""
    poll_s: float = Field(5.0, ge=0.5, le=3600)
    """Seconds between the review screen's progress checks (annotated n of N)."""
    timeout_s: float = Field(60.0, gt=0, le=3600)
    """Timeout of one request to the server, in seconds."""
    max_retries: int = Field(5, ge=0, le=50)
    """Retries per request on HTTP 429/5xx and connection errors."""
    retry_backoff_s: float = Field(1.0, ge=0, le=600)
    """First retry delay in seconds; doubled on every further retry (capped at 60 s)."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise KeyProblem(f"url {v!r} must start with http:// or https:// (e.g. http://127.0.0.1:8080)", "url")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _checks(self):
        if not _ENV_NAME.match(self.api_key_env):
            raise KeyProblem(f"api_key_env {self.api_key_env!r} is not an environment variable name; use e.g. "
                             f"LABEL_STUDIO_API_KEY (the variable's name, never the token itself)", "api_key_env")
        if self.project is not None and (not self.project.strip() or len(self.project) > 50):
            raise KeyProblem(f"project {self.project!r} must be a non-empty title of at most 50 characters "
                             f"(Label Studio's limit)", "project")
        return self


class ReviewConfig(_Strict):
    backend: Literal["local", "roboflow", "label_studio"] = "local"
    """Where humans review the picks (active_learning.review_source: manual): local writes an annotation package
    and imports the labels back (works offline); roboflow uploads to a Roboflow project and downloads an export;
    label_studio imports the picks as tasks of a Label Studio project and exports the submitted annotations."""
    pre_annotation_conf: float | None = Field(None, gt=0, lt=1)
    """Predictions at or above this confidence become pre-annotations; unset: validation.conf."""
    near_duplicate_distance: int | None = Field(5, ge=0, le=32)
    """Warn when an image added to training is this close (Hamming distance of a 64-bit perceptual hash) to a
    validation or test image; null disables the check. Exact duplicates are always dropped by content hash."""
    relabel_match_distance: int | None = Field(4, ge=0, le=16)
    """A human-labelled image returned for a pseudo-labelled training image counts as its relabel (it replaces it,
    and the pseudo-labels are scored against it) when the bytes are equal, or, after an annotation tool re-encoded
    or resized it, when its perceptual hash is within this distance of exactly one pseudo-labelled image; null:
    equal bytes only."""
    local: LocalReviewConfig = Field(default_factory=LocalReviewConfig)
    roboflow: RoboflowReviewConfig = Field(default_factory=RoboflowReviewConfig)
    label_studio: LabelStudioReviewConfig = Field(default_factory=LabelStudioReviewConfig)

    @model_validator(mode="after")
    def _backend_needs(self):
        if self.backend == "roboflow" and not self.roboflow.project:
            raise KeyProblem("backend 'roboflow' needs review.roboflow.project (the project slug from its URL, "
                             "app.roboflow.com/<workspace>/<project>); or use backend: local", "roboflow.project",
                             "backend")
        return self


class Config(_Strict):
    run_dir: Path = Path("active_learning")
    """Where iterations/, metrics/ and prompt_versions/ are written."""
    dataset: DatasetConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    active_learning: ActiveLearningConfig = Field(default_factory=ActiveLearningConfig)
    sampling_strategy: SamplingConfig = Field(default_factory=SamplingConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    """How the pool scan runs: in this process or on a Ray cluster (docs/SCALING.md)."""

    source_path: Path | None = Field(None, exclude=True)
    """The config file this was read from (set by load_config)."""

    @model_validator(mode="after")
    def _strategy_for_source(self):
        # Mining the validation split (seed 004) scores the FNs its one validate pass already found; a strategy that
        # needs its own predict pass is used there only when asked for by name.
        sc = self.sampling_strategy
        if "strategy" not in sc.model_fields_set and self.dataset.mining_source == "val":
            sc.strategy = "fn_weighted"
        # only the weights of the strategy in effect are used, so only they must not all be 0
        if sc.strategy == "fn_weighted" and sum(sc.weights().values()) <= 0:
            raise KeyProblem("all four fn_weighted weights are 0; set at least one above 0",
                             *(f"sampling_strategy.{k}" for k in sc.weights()))
        if sc.strategy == "combined" and sum(sc.combined_weights().values()) <= 0:
            raise KeyProblem("strategy 'combined' with all three combined_* weights 0; set at least one above 0",
                             *(f"sampling_strategy.{k}" for k in ("combined_uncertainty_weight",
                                                                  "combined_diversity_weight",
                                                                  "combined_class_balance_weight", "strategy")))
        return self

    def digest(self) -> str:
        """Short hash of the effective config (recorded in metadata to spot config changes between iterations)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _line_of(text: str, loc: tuple, *, exact: bool = False) -> int | None:
    """Line (1-based) of the YAML key at `loc`, or of its nearest existing parent (None with exact=True)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return None if exact else line
        for k, v in node.value:
            if k.value == str(part):
                line, node = k.start_mark.line + 1, v
                break
        else:
            return None if exact else line
    return line


MAX_YAML_VALUES = 100_000
"""A YAML document whose aliases (*name) expand to more values than this is refused: a config holds hundreds, and
an alias bomb ("billion laughs") would otherwise hang validation and error reporting while it expands."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def parse_yaml(text: str, where: Path | str) -> Any:
    """yaml.safe_load, refusing what it accepts silently: a key given twice in one mapping (the later value would
    win) and aliases that expand to more than MAX_YAML_VALUES values or refer to themselves; and refusing, before
    anything is constructed, every tag but those of plain values. Raises ConfigError naming the file and the line
    to fix (al.core.yaml_problems)."""
    loader = yaml_problems.Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as e:
            raise ConfigError(yaml_problems.syntax_problem(e, text, where)) from None
        except RecursionError:
            raise ConfigError(f"{where}: nested too deeply to be read. Flatten the document.") from None
        if node is None:
            return None
        problems = (_alias_problems(node, where) or yaml_problems.tag_problems(text, where)
                    or _duplicate_keys(node, where))
        if problems:
            raise ConfigError("\n".join(problems))
        try:
            return loader.construct_document(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError) as e:  # `!!int abc`, a date 2024-13-01, `<<: 3`
            raise ConfigError(yaml_problems.construct_problem(e, where, loader.last)) from None
    finally:
        loader.dispose()


def _alias_problems(root: yaml.Node, where: Path | str) -> list[str]:
    """The key whose value expands beyond MAX_YAML_VALUES, or an alias inside its own anchor. Linear in the
    document's size: each node's expanded size is computed once, however many aliases point at it."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def children(n: yaml.Node) -> list[yaml.Node]:
        if isinstance(n, yaml.MappingNode):
            return [x for kv in n.value for x in kv]
        return list(n.value) if isinstance(n, yaml.SequenceNode) else []

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in open_:
            raise _SelfAlias(n)
        open_.add(id(n))
        total = 1 + sum(size(c) for c in children(n))
        open_.discard(id(n))
        sizes[id(n)] = total
        return total

    try:
        total = size(root)
    except _SelfAlias as e:
        return [f"{where}:{e.node.start_mark.line + 1}: a YAML alias refers to the anchor it is inside (a value that "
                f"contains itself). Write the value out instead."]
    except RecursionError:
        return [f"{where}: nested too deeply to be read. Flatten the document."]
    if total <= MAX_YAML_VALUES:
        return []
    node, keys, line = root, [], root.start_mark.line + 1
    while isinstance(node, yaml.MappingNode):  # walk down to the innermost key that alone is too big
        k, v = max(node.value, key=lambda kv: sizes[id(kv[1])])
        if sizes[id(v)] <= MAX_YAML_VALUES:
            break
        node, line = v, k.start_mark.line + 1
        keys.append(str(k.value))
    what = f"key '{'.'.join(keys)}'" if keys else "the document"
    return [f"{where}:{line}: {what} expands to {sizes[id(node)]:,} values through YAML aliases (*name), more than "
            f"the {MAX_YAML_VALUES:,} a config may hold (an alias bomb?). Write the values out, or nest fewer aliases."]


class _SelfAlias(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


def _duplicate_keys(root: yaml.Node, where: Path | str) -> list[str]:
    """One line per key given twice in the same mapping, naming both lines."""
    out: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while todo:
        node, path = todo.pop()
        if id(node) in seen_nodes:  # an alias: its mapping was checked where its anchor is
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo += [(c, path) for c in node.value]
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                ln = k.start_mark.line + 1
                if (k.tag, k.value) in first:
                    key = ".".join((*path, str(k.value)))
                    out.append((ln, f"{where}:{ln}: key '{key}' is given twice (lines {first[(k.tag, k.value)]} "
                                    f"and {ln}); YAML would silently keep only the last value. Remove one of them."))
                else:
                    first[(k.tag, k.value)] = ln
            todo.append((v, (*path, str(getattr(k, "value", "?")))))
    return [msg for _, msg in sorted(out)]


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 3


def _short(value: Any) -> str:
    """A bounded repr for error messages (a value may be a large nested structure)."""
    return _REPR.repr(value)


_MISSING = object()


def _value_at(raw: Any, loc: tuple) -> Any:
    for part in loc:
        if not isinstance(raw, dict) or part not in raw:
            return _MISSING
        raw = raw[part]
    return raw


def _error_line(path: Path, text: str, raw: dict, err: Any) -> str:
    """One pydantic error as `file:line: key 'a.b' = value: what is accepted`."""
    loc = tuple(err["loc"])
    exc = (err.get("ctx") or {}).get("error")
    if isinstance(exc, KeyProblem):
        # a model-level validator named the keys it is about: point at the first one the file sets
        cands = [loc + tuple(k.split(".")) for k in exc.keys] or [loc]
        loc = next((c for c in cands if _line_of(text, c, exact=True)), cands[0])
    key = ".".join(str(x) for x in loc) or "(top level)"
    ln = _line_of(text, loc)
    where = f"{path}:{ln}" if ln else str(path)
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key '{key}' (a typo?). Remove it or use one of the documented keys"
    if err["type"] == "missing":
        return f"{where}: key '{key}' is required"
    msg = str(exc) if isinstance(exc, ValueError) else err["msg"]
    val = _value_at(raw, loc) if isinstance(exc, KeyProblem) else err.get("input", _MISSING)
    if val is _MISSING or isinstance(val, dict):  # never dump a whole section: the message names what is wrong
        return f"{where}: key '{key}': {msg}"
    return f"{where}: key '{key}' = {_short(val)}: {msg}"


@overload
def _resolve(base: Path, p: Path) -> Path: ...
@overload
def _resolve(base: Path, p: Path | None) -> Path | None: ...
def _resolve(base: Path, p: Path | None) -> Path | None:
    if p is None:
        return None
    p = Path(p).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read, validate and resolve a config file. Relative paths resolve against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found. Pass an existing file with --config, e.g. "
                          f"--config config/al_config.yaml")
    text = path.read_text(encoding="utf-8")
    raw = parse_yaml(text, path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (dataset:, training:, ...), got "
                          f"{type(raw).__name__}.")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("\n".join(_error_line(path, text, raw, err) for err in e.errors())) from None

    base = path.resolve().parent
    ds = cfg.dataset
    ds.data_yaml = _resolve(base, ds.data_yaml)
    ds.pool_dir = _resolve(base, ds.pool_dir)
    ds.pool_labels_dir = _resolve(base, ds.pool_labels_dir)
    ds.combined_dir = _resolve(base, ds.combined_dir)
    cfg.run_dir = _resolve(base, cfg.run_dir)
    cfg.prompts.source = _resolve(base, cfg.prompts.source)
    cfg.sampling_strategy.deployed_detections_dir = _resolve(base, cfg.sampling_strategy.deployed_detections_dir)
    cfg.review.local.import_from = _resolve(base, cfg.review.local.import_from)
    cfg.review.local.guidelines = _resolve(base, cfg.review.local.guidelines)
    cfg.review.roboflow.secrets_file = _resolve(base, cfg.review.roboflow.secrets_file)
    cfg.review.label_studio.secrets_file = _resolve(base, cfg.review.label_studio.secrets_file)
    cfg.pool.ray.temp_dir = _resolve(base, cfg.pool.ray.temp_dir)
    _resolve_tracking(cfg.tracking.mlflow, base)
    if cfg.model.baseline.endswith(".pt"):
        cfg.model.baseline = str(_resolve(base, Path(cfg.model.baseline)))
    cfg.model.initial_weights = _resolve(base, cfg.model.initial_weights)
    if cfg.model.target and cfg.model.target.endswith(".pt"):
        cfg.model.target = str(_resolve(base, Path(cfg.model.target)))
    if cfg.model.text_encoder and cfg.model.text_encoder != TEXT_ENCODER_STANDIN:
        cfg.model.text_encoder = str(_resolve(base, Path(cfg.model.text_encoder)))
    cfg.source_path = path.resolve()
    if check_files:
        _check_files(cfg, path, text)
    return cfg


def _resolve_tracking(ml: MlflowConfig, base: Path) -> None:
    """A relative sqlite path and a relative artifact folder resolve against the config file's folder."""
    uri = ml.tracking_uri
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        ml.tracking_uri = f"sqlite:///{(base / uri[len('sqlite:///'):]).resolve()}"
    loc = ml.artifact_location
    if loc and not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", loc):
        ml.artifact_location = str(_resolve(base, Path(loc)))


def _check_files(cfg: Config, path: Path, text: str) -> None:
    problems = []

    def need(loc: tuple, p: Path | None, what: str, is_dir: bool = False):
        if p is None:
            return
        ok = p.is_dir() if is_dir else p.is_file()
        if not ok:
            ln = _line_of(text, loc)
            problems.append(f"{path}:{ln or ''}: key '{'.'.join(loc)}' = {str(p)!r}: {what} not found. "
                            f"Fix the path (relative paths resolve against {path.resolve().parent}).")

    need(("dataset", "data_yaml"), cfg.dataset.data_yaml, "file")
    need(("dataset", "pool_dir"), cfg.dataset.pool_dir, "folder", True)
    need(("dataset", "pool_labels_dir"), cfg.dataset.pool_labels_dir, "folder", True)
    need(("prompts", "source"), cfg.prompts.source, "file")
    need(("sampling_strategy", "deployed_detections_dir"), cfg.sampling_strategy.deployed_detections_dir, "folder",
         True)
    need(("review", "local", "guidelines"), cfg.review.local.guidelines, "file")
    if cfg.review.backend == "roboflow":
        need(("review", "roboflow", "secrets_file"), cfg.review.roboflow.secrets_file, "secrets file")
    if cfg.review.backend == "label_studio":
        need(("review", "label_studio", "secrets_file"), cfg.review.label_studio.secrets_file, "secrets file")
    need(("model", "initial_weights"), cfg.model.initial_weights, "weights file")
    if cfg.model.baseline.endswith(".pt"):
        need(("model", "baseline"), Path(cfg.model.baseline), "weights file")
    elif not cfg.model.baseline.endswith((".yaml", ".yml")):
        problems.append(f"{path}:{_line_of(text, ('model', 'baseline')) or ''}: key 'model.baseline' = "
                        f"{cfg.model.baseline!r}: expected a model YAML (e.g. yolov8n.yaml) or a local .pt file")
    problems += _model_target_problems(cfg, path, text)
    problems += _prompt_problems(cfg, path, text)
    if cfg.dataset.mining_source == "pool" and cfg.dataset.pool_dir is None:
        problems.append(f"{path}:{_line_of(text, ('dataset', 'mining_source')) or ''}: key 'dataset.mining_source' "
                        f"= 'pool' needs dataset.pool_dir; set it or use mining_source: val")
    if cfg.active_learning.review_source == "simulated" and cfg.dataset.mining_source == "pool" \
            and cfg.dataset.pool_labels_dir is None:
        problems.append(f"{path}:{_line_of(text, ('active_learning', 'review_source')) or ''}: key "
                        f"'active_learning.review_source' = 'simulated' with a pool needs dataset.pool_labels_dir")
    if problems:
        raise ConfigError("\n".join(problems))


ENCODER_DOWNLOADS = {
    "mobileclip2_b.ts": "https://github.com/ultralytics/assets/releases/download/v8.4.0/mobileclip2_b.ts",
    "mobileclip_blt.ts": "https://github.com/ultralytics/assets/releases/download/v8.4.0/mobileclip_blt.ts",
}
"""The text encoders Ultralytics' YOLOE models name (yaml text_model mobileclip2:b, mobileclip:blt) and where a
machine with internet gets them; the loop itself never downloads."""


def expected_encoder(target: str) -> str:
    """The encoder file a YOLOE model of this name was trained with: YOLOE-26 uses MobileCLIP2-B, earlier YOLOE
    (v8, 11) MobileCLIP-BLT."""
    stem = Path(target).name.lower()
    return "mobileclip2_b.ts" if ("yoloe-26" in stem or "yoloe26" in stem) else "mobileclip_blt.ts"


def encoder_advice(target: str) -> str:
    """How to obtain the text encoder of `target` (one sentence, used by every error about it)."""
    name = expected_encoder(target)
    return (f"Download {name} (the text encoder of {Path(target).name}) from {ENCODER_DOWNLOADS[name]} on a machine "
            f"with internet (or copy it from an Ultralytics weights folder, ~/.config/Ultralytics or "
            f"<ultralytics weights_dir>), put it next to the config file and set model.text_encoder: {name}; "
            f"model.text_encoder: {TEXT_ENCODER_STANDIN} uses a non-semantic local stand-in instead (tests only)")


def _model_target_problems(cfg: Config, path: Path, text: str) -> list[str]:
    """model.target and model.text_encoder: the YOLOE model and the local encoder file it needs (checked up front,
    --dry-run too, so that a run never stops at iteration 1 for a file it would have to download)."""
    m = cfg.model
    out: list[str] = []

    def at(key: str) -> str:
        return f"{path}:{_line_of(text, ('model', key)) or ''}"

    if m.target is None:
        if m.text_encoder is not None:
            out.append(f"{at('text_encoder')}: key 'model.text_encoder' is set but model.target is not; the "
                       f"encoder embeds the prompts of a YOLOE target. Set model.target (e.g. yoloe-26n.yaml) or "
                       f"remove model.text_encoder")
        return out
    if m.target.endswith(".pt"):
        if not Path(m.target).is_file():
            out.append(f"{at('target')}: key 'model.target' = {m.target!r}: weights file not found. Fix the path "
                       f"(relative paths resolve against {path.resolve().parent}) or name a YOLOE YAML shipped "
                       f"with Ultralytics, e.g. yoloe-26n.yaml")
    elif not m.target.endswith((".yaml", ".yml")) or "yoloe" not in Path(m.target).name.lower():
        out.append(f"{at('target')}: key 'model.target' = {m.target!r}: expected a YOLOE model YAML (e.g. "
                   f"yoloe-26n.yaml) or a local YOLOE .pt file (e.g. yoloe-26n-seg.pt)")
    enc = m.text_encoder
    if enc is None:
        out.append(f"{at('text_encoder')}: key 'model.text_encoder' is not set: model.target {Path(m.target).name} "
                   f"embeds the class prompts with a text encoder, and the loop never downloads one. "
                   f"{encoder_advice(m.target)}")
    elif enc != TEXT_ENCODER_STANDIN:
        if not Path(enc).is_file():
            out.append(f"{at('text_encoder')}: key 'model.text_encoder' = {enc!r}: text encoder weights not found "
                       f"(expected the file {enc}). {encoder_advice(m.target)}")
        elif Path(enc).suffix not in (".ts", ".pt"):
            out.append(f"{at('text_encoder')}: key 'model.text_encoder' = {enc!r}: expected a MobileCLIP "
                       f"TorchScript file (.ts) or an OpenAI CLIP checkpoint (.pt). {encoder_advice(m.target)}")
    return out


def _dataset_names(data_yaml: Path) -> list[str] | None:
    """Class names of a data.yaml (list or {id: name}); None when it cannot be read (the dataset check says why)."""
    try:
        names = parse_yaml(data_yaml.read_text(encoding="utf-8-sig"), data_yaml).get("names")
    except (OSError, UnicodeDecodeError, ConfigError, AttributeError):
        return None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names] if isinstance(names, list) else None


def _prompt_problems(cfg: Config, path: Path, text: str) -> list[str]:
    """Per-class prompts (config and prompts.source) must name classes of the dataset: a typo is refused."""
    from al.core.prompts import PromptError, read_source

    names = _dataset_names(cfg.dataset.data_yaml) if cfg.dataset.data_yaml.is_file() else None
    out: list[str] = []
    if names is not None:
        for k in cfg.prompts.texts:
            if k not in names:
                loc = ("prompts", k) if _line_of(text, ("prompts", k), exact=True) else ("prompts", "texts", k)
                out.append(f"{path}:{_line_of(text, loc) or ''}: key '{'.'.join(loc)}': not a class of "
                           f"{cfg.dataset.data_yaml} (its names: {names}). Fix the class name (a typo?) or remove "
                           f"the key; per-class prompts are keyed by class name")
    if cfg.prompts.source is not None and cfg.prompts.source.is_file():
        try:
            read_source(cfg.prompts.source, names)
        except PromptError as e:
            out.append(f"{path}:{_line_of(text, ('prompts', 'source')) or ''}: key 'prompts.source': {e}")
    return out
