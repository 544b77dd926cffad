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


class ModelConfig(_Strict):
    baseline: str = "yolov8n.yaml"
    """Baseline model: an Ultralytics model YAML (trained from scratch) or a local .pt file."""
    type: str = "detect"
    """Free-text model description, recorded in metadata."""


class ActiveLearningConfig(_Strict):
    max_samples_per_iteration: int = Field(20, ge=1, le=100000)
    """Images picked for review per iteration."""
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


class SamplingConfig(_Strict):
    class_balance_weight: float = Field(0.3, ge=0)
    """Prefer under-represented classes."""
    size_diversity_weight: float = Field(0.3, ge=0)
    """Prefer rare sizes."""
    spatial_diversity_weight: float = Field(0.2, ge=0)
    """Prefer edge and corner cases."""
    uncertainty_weight: float = Field(0.2, ge=0)
    """Prefer low contrast / unusual aspect (visual difficulty)."""
    strategy: Literal["random", "entropy", "fn_weighted", "combined"] = "combined"
    """How images are picked. random: uniform draw (a control). entropy: the most uncertain images, judged from the
    detection head's class probabilities before NMS. fn_weighted: seed 004's FN score (the four weights above).
    combined: uncertainty + diversity + class balance (the combined_* weights) plus hard negatives.
    Left unset, it is combined for mining_source: pool and fn_weighted for mining_source: val."""
    uncertainty_measure: Literal["entropy", "margin"] = "entropy"
    """How a pre-NMS candidate's class confusion is measured: normalised entropy or 1 - (top1 - top2) margin."""
    candidate_conf: float = Field(0.05, gt=0, lt=1)
    """Pre-NMS anchors whose best class probability reaches this are uncertainty candidates."""
    uncertainty_top_k: int = Field(10, ge=1, le=10000)
    """An image's uncertainty is the mean of its top_k candidate uncertainties (missing ones count 0)."""
    combined_uncertainty_weight: float = Field(0.5, ge=0)
    """combined: weight of the image's uncertainty (divided by the pool's highest)."""
    combined_diversity_weight: float = Field(0.3, ge=0)
    """combined: weight of the backbone-embedding distance to the nearest labelled or already-picked image."""
    combined_class_balance_weight: float = Field(0.2, ge=0)
    """combined: weight of max over classes of P(image holds the class) x inverse labelled frequency."""
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
    patience: int = Field(20, ge=0, le=10000)
    """Early-stopping patience in epochs (0 disables)."""
    imgsz: int = Field(640, ge=32, le=8192)
    """Training and inference image size (multiple of 32)."""
    batch: int = Field(16, ge=1, le=4096)
    """Batch size."""
    device: str = "auto"
    """'auto' (first GPU if any, else cpu), 'cpu', or a CUDA device such as '0'."""
    workers: int = Field(2, ge=0, le=64)
    """Dataloader workers."""
    seed: int = 0
    """Training seed."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Further Ultralytics train options passed through as-is (e.g. nbs, fliplr, mosaic)."""

    @model_validator(mode="after")
    def _imgsz_stride(self):
        if self.imgsz % 32:
            raise KeyProblem(f"imgsz {self.imgsz} is not a multiple of 32; use e.g. {max(32, self.imgsz // 32 * 32)}",
                             "imgsz")
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
    """NMS IoU used at inference."""
    batch: int = Field(16, ge=1, le=4096)
    """Inference batch size."""


class PromptsConfig(_Strict):
    source: Path | None = None
    """Optional JSON file of initial per-class prompts / notes, versioned per iteration in prompt_versions/."""
    texts: dict[str, str] = Field(default_factory=dict)
    """Per-class free-text prompts or annotation notes, by class name."""


class AnalysisConfig(_Strict):
    crop_margin: float = Field(0.25, ge=0, le=5)
    """Context margin around FN crops, as a fraction of the box size on each side."""
    max_crops: int = Field(500, ge=0, le=1000000)
    """FN crops saved per iteration at most (hardest first)."""


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


class ReviewConfig(_Strict):
    backend: Literal["local", "roboflow"] = "local"
    """Where humans review the picks (active_learning.review_source: manual): local writes an annotation package
    and imports the labels back (works offline); roboflow uploads to a Roboflow project and downloads an export."""
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
    win) and aliases that expand to more than MAX_YAML_VALUES values or refer to themselves. Raises ConfigError
    naming the file and the line."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f"{where}:{mark.line + 1}" if mark else str(where)
            raise ConfigError(f"{at}: not valid YAML ({getattr(e, 'problem', e)}). Fix the syntax.") from None
        except RecursionError:
            raise ConfigError(f"{where}: nested too deeply to be read. Flatten the document.") from None
        if node is None:
            return None
        problems = _alias_problems(node, where) or _duplicate_keys(node, where)
        if problems:
            raise ConfigError("\n".join(problems))
        return loader.construct_document(node)
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
    if cfg.model.baseline.endswith(".pt"):
        cfg.model.baseline = str(_resolve(base, Path(cfg.model.baseline)))
    cfg.source_path = path.resolve()
    if check_files:
        _check_files(cfg, path, text)
    return cfg


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
    if cfg.model.baseline.endswith(".pt"):
        need(("model", "baseline"), Path(cfg.model.baseline), "weights file")
    elif not cfg.model.baseline.endswith((".yaml", ".yml")):
        problems.append(f"{path}:{_line_of(text, ('model', 'baseline')) or ''}: key 'model.baseline' = "
                        f"{cfg.model.baseline!r}: expected a model YAML (e.g. yolov8n.yaml) or a local .pt file")
    if cfg.dataset.mining_source == "pool" and cfg.dataset.pool_dir is None:
        problems.append(f"{path}:{_line_of(text, ('dataset', 'mining_source')) or ''}: key 'dataset.mining_source' "
                        f"= 'pool' needs dataset.pool_dir; set it or use mining_source: val")
    if cfg.active_learning.review_source == "simulated" and cfg.dataset.mining_source == "pool" \
            and cfg.dataset.pool_labels_dir is None:
        problems.append(f"{path}:{_line_of(text, ('active_learning', 'review_source')) or ''}: key "
                        f"'active_learning.review_source' = 'simulated' with a pool needs dataset.pool_labels_dir")
    if problems:
        raise ConfigError("\n".join(problems))
