"""Every path of the run tree, derived in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def good_copy(checkpoint: Path) -> Path:
    """The loop's own verified copy of a checkpoint Ultralytics rewrites in place: weights/best.pt ->
    weights/best.good.pt (al.yolo.checkpoints writes and restores it)."""
    return checkpoint.with_name(f"{checkpoint.stem}.good{checkpoint.suffix}")


@dataclass(frozen=True)
class RunPaths:
    """The run tree under `root` (seed 004's output structure plus the run's own state)."""

    root: Path

    # run-level state
    @property
    def state(self) -> Path:
        return self.root / "run_state.json"

    def state_backup(self, stamp: str) -> Path:
        """Where --repair keeps the run_state.json it replaced."""
        return self.root / f"run_state.json.{stamp}.bak"

    @property
    def lock(self) -> Path:
        return self.root / ".al_loop.lock"

    @property
    def reserve(self) -> Path:
        """Disk-space ballast: deleted on a full disk so that the failed state can still be saved."""
        return self.root / ".al_reserve"

    @property
    def events_log(self) -> Path:
        return self.root / "al_loop.log"

    @property
    def dataset_root(self) -> Path:
        return self.root / "dataset"

    def dataset_version(self, v: int) -> Path:
        return self.dataset_root / f"v{v:03d}"

    def dataset_yaml(self, v: int) -> Path:
        return self.dataset_version(v) / "data.yaml"

    def manifest(self, v: int) -> Path:
        return self.dataset_version(v) / "manifest.json"

    def manifest_diff(self, v: int) -> Path:
        return self.dataset_version(v) / "manifest_diff.json"

    def added_images(self, iteration: int) -> Path:
        return self.dataset_root / "added" / f"iteration_{iteration}" / "images"

    def added_labels(self, iteration: int) -> Path:
        return self.dataset_root / "added" / f"iteration_{iteration}" / "labels"

    @property
    def hash_cache(self) -> Path:
        """Content hashes of files by (path, size, mtime_ns), shared by every step (al.data.hashing)."""
        return self.root / "cache" / "hashes.json"

    @property
    def pool_score_cache(self) -> Path:
        """Pool scores cached per (model, image content) so --resume does not recompute them."""
        return self.root / "cache" / "pool_scores"

    @property
    def data_check_cache(self) -> Path:
        """The dataset check's result per image and label file by (path, size, mtime): a resume re-checks only what
        changed (al.data.check)."""
        return self.root / "cache" / "data_check.json"

    @property
    def data_check_report(self) -> Path:
        """Every problem the latest dataset check found (its message lists only the first ones)."""
        return self.root / "dataset_check.json"

    # iterations/
    @property
    def iterations(self) -> Path:
        return self.root / "iterations"

    def iteration(self, k: int) -> Path:
        return self.iterations / f"iteration_{k}"

    def weights(self, k: int) -> Path:
        return self.iteration(k) / "weights"

    def best(self, k: int) -> Path:
        return self.weights(k) / "best.pt"

    def last(self, k: int) -> Path:
        return self.weights(k) / "last.pt"

    def best_good(self, k: int) -> Path:
        return good_copy(self.best(k))

    def last_good(self, k: int) -> Path:
        return good_copy(self.last(k))

    def validation(self, k: int) -> Path:
        """The validation summary: metrics only (al.core.artifacts.ValidationSummary)."""
        return self.iteration(k) / "validation.json"

    def validation_images(self, k: int) -> Path:
        """The validation's per-image records: boxes and matches (al.core.artifacts.ValidationRecords)."""
        return self.iteration(k) / "validation_images.json"

    def error_analysis(self, k: int) -> Path:
        return self.iteration(k) / "error_analysis"

    def error_report(self, k: int) -> Path:
        return self.error_analysis(k) / "error_report.json"

    def fn_crops(self, k: int) -> Path:
        return self.error_analysis(k) / "fn_crops"

    def prompt_suggestions(self, k: int) -> Path:
        return self.error_analysis(k) / "prompt_suggestions.json"

    def hard_examples(self, k: int) -> Path:
        return self.iteration(k) / "hard_examples.json"

    def pool_predictions(self, k: int) -> Path:
        return self.iteration(k) / "pool_predictions.json"

    def review(self, k: int) -> Path:
        return self.iteration(k) / "review.json"

    def review_request(self, k: int) -> Path:
        """Written when the human was asked to review iteration k (the step resumes into the import after it)."""
        return self.iteration(k) / "review_request.json"

    def package(self, k: int) -> Path:
        return self.iteration(k) / "review_package"

    def package_zip(self, k: int) -> Path:
        return self.iteration(k) / f"review_package_iteration_{k}.zip"

    def returned(self, k: int) -> Path:
        return self.package(k) / "returned"

    def unpacked(self, k: int) -> Path:
        """Where a returned zip is extracted (after its member names were checked)."""
        return self.iteration(k) / "review_returned_unpacked"

    def roboflow_upload(self, k: int) -> Path:
        return self.iteration(k) / "roboflow_upload.json"

    def roboflow_export(self, k: int, version: int) -> Path:
        return self.iteration(k) / f"roboflow_export_v{version}"

    def label_studio_tasks(self, k: int) -> Path:
        """Iteration k's Label Studio project and the task of each pick (written as the picks are imported)."""
        return self.iteration(k) / "label_studio_tasks.json"

    def label_studio_export(self, k: int) -> Path:
        """The project's JSON export of iteration k's tasks, as the import read it (token-free)."""
        return self.iteration(k) / "label_studio_export.json"

    @property
    def label_studio_data(self) -> Path:
        """Data folder of the local Label Studio server `al-loop label-studio` starts for this run."""
        return self.root / "label_studio"

    def metadata(self, k: int) -> Path:
        return self.iteration(k) / "metadata.json"

    def training_log(self, k: int) -> Path:
        return self.iteration(k) / "training_log.txt"

    def train_spec(self, k: int) -> Path:
        return self.iteration(k) / "train_spec.json"

    def train_progress(self, k: int) -> Path:
        return self.iteration(k) / "train_progress.jsonl"

    def train_result(self, k: int) -> Path:
        return self.iteration(k) / "train_result.json"

    # YOLOE target (al.yolo.yoloe): the prompted model a training of iteration k starts from, and its report
    def yoloe_dir(self, k: int) -> Path:
        return self.iteration(k) / "yoloe"

    def yoloe_start(self, k: int) -> Path:
        return self.yoloe_dir(k) / "start.pt"

    def yoloe_report(self, k: int) -> Path:
        """What the YOLOE start model is: its source, what transferred from the baseline, the prompts, the
        encoder."""
        return self.yoloe_dir(k) / "start.json"

    # the promotion gate (al.core.artifacts.DecisionSet, Promotion, Champion)
    @property
    def decision_set(self) -> Path:
        """The frozen set every decision reads (convergence, trend plots, the gate): chosen once, at iteration 0."""
        return self.root / "decision_set.json"

    def decision_eval(self, k: int) -> Path:
        """Iteration k's model on the decision set, per image (the arrays the gate's paired bootstrap resamples)."""
        return self.iteration(k) / "decision_eval.npz"

    def promotion(self, k: int) -> Path:
        """The gate's verdict on iteration k's model (the challenger) against the champion before it."""
        return self.iteration(k) / "promotion.json"

    @property
    def champion(self) -> Path:
        """Which iteration's model is the champion now (rewritten by the gate; derivable from promotion.json)."""
        return self.root / "champion.json"

    # releases/ and the experiment history
    @property
    def releases(self) -> Path:
        return self.root / "releases"

    def release(self, version: str) -> Path:
        return self.releases / version

    @property
    def mlflow_store(self) -> Path:
        """The default local MLflow store (tracking.mlflow without a tracking_uri)."""
        return self.root / "mlflow"

    # metrics/
    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def convergence_csv(self) -> Path:
        return self.metrics / "convergence_tracking.csv"

    @property
    def convergence_plots(self) -> Path:
        return self.metrics / "convergence_plots"

    def iteration_report(self, k: int) -> Path:
        return self.metrics / "iteration_reports" / f"iteration_{k:02d}_report.json"

    # prompt_versions/
    @property
    def prompt_versions(self) -> Path:
        return self.root / "prompt_versions"

    @property
    def prompt_history(self) -> Path:
        return self.prompt_versions / "prompt_history.json"

    def prompts(self, k: int) -> Path:
        return self.prompt_versions / f"prompts_iteration_{k:02d}.json"
