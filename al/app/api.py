"""The small public API the frontends use: open a run, run the loop, and the few read-only views they show.
Frontends import this and al.core only (an import-linter contract in pyproject.toml)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from al.app.session import open_run as _open_run
from al.core.config import Config
from al.core.context import Frontend, StepContext
from al.core.errors import UserError
from al.core.machine import STEP_TITLES, STEPS, interrupt

__all__ = ["STEPS", "STEP_TITLES", "ImportPreview", "open_run", "run_loop", "interrupt", "read_history",
           "review_block", "preview_import"]


def open_run(cfg: Config, *, resume: bool = False, start_iteration: int | None = None, dry_run: bool = False,
             auto: bool = False, ui: Frontend) -> StepContext:
    """The step context of this invocation (fresh, --resume or --start-iteration). Caller holds the run lock."""
    from al.yolo.service import DetectorService

    env, state = _open_run(cfg, resume=resume, start_iteration=start_iteration, dry_run=dry_run, auto=auto, ui=ui)
    return StepContext(env=env, state=state, models=DetectorService(), ui=ui)


def run_loop(ctx: StepContext) -> int:
    """Run steps until done, a review pause, an error or a quit; the process exit code."""
    from al.core import artifacts, machine
    from al.steps import STEP_FUNCS

    def final_f1(c: StepContext) -> float | None:
        s = artifacts.load_validation(c.env.paths, c.state.iteration)
        return s.decision.f1 if s.decision else s.overall.f1  # the F1 the rules read (docs/GATE.md)

    return machine.run(ctx, STEP_FUNCS, final_f1=final_f1)


def read_history(ctx: StepContext) -> tuple[list[dict], str | None]:
    """The convergence CSV's rows (earlier iterations' metrics), and a warning when it cannot be read."""
    from al.core import store

    path = ctx.env.paths.convergence_csv
    try:
        return store.read_csv(path), None
    except (OSError, ValueError) as e:
        return [], f"[TUI] could not read {path}: {e}"


def review_block(info: dict) -> str:
    """The console block of a review pause (the log shows it; the TUI's review screen shows the same text)."""
    from al.steps.review import review_block as block

    return block(info)


def accept_prompt_suggestion(prompt_file: str, index: int) -> dict:
    """Accept suggestion `index` (0-based) of a prompt version during the review pause: its proposed edit goes
    into the texts the next training embeds. Returns the version as the review screen shows it (prompt_info)."""
    from pathlib import Path

    from al.core import prompts
    from al.steps.review import prompt_info

    prompts.accept(Path(prompt_file), index)
    return prompt_info(Path(prompt_file))


@dataclass(frozen=True)
class ImportPreview:
    """What continuing a review would import (preview_import). The counts carry review.json's names: the review
    step reports the same numbers when it imports the same labels."""

    picks: int = 0
    returned_labelled: int = 0
    """Picks that came back labelled (for a YOLO export: picked images found in it)."""
    negatives: int = 0
    unedited_pre_annotations: int = 0
    """Returned label files identical to the model's pre-annotations."""
    added_images: int = 0
    added_boxes: int = 0
    removed_from_val: int = 0
    relabelled: int = 0
    duplicates_dropped: int = 0
    skipped_test_duplicates: int = 0
    near_duplicates: int = 0
    source: str = ""
    """Where the labels come from (a YOLO dataset, returned label files, a zip, a COCO JSON)."""
    dataset_version: str = ""
    """The dataset version the labels are merged into."""
    train_images: int = 0
    error: str | None = None
    """Why the import would fail now (the review step raises the same message)."""
    unknown: bool = False
    """Nothing can be checked before continuing (Roboflow: the review step downloads the labels)."""

    @property
    def unreviewed(self) -> bool:
        """Every returned label file equals the model's pre-annotation."""
        return bool(self.returned_labelled) and self.unedited_pre_annotations >= self.returned_labelled

    @property
    def changed(self) -> bool:
        """Continuing brings reviewed labels into training."""
        if self.error is not None or self.unknown:
            return False
        return (self.added_images + self.relabelled) > 0 and not self.unreviewed

    def headline(self) -> str:
        """One line, e.g. '+2 images, +6 boxes from YOLO dataset combined/data.yaml (2 moved out of validation)'."""
        if self.error:
            return f"with nothing to import ({self.error.split('. ')[0]})"
        if self.unknown:
            return "(labels are downloaded from Roboflow)"
        extra = [f"{n} {what}" for n, what in ((self.removed_from_val, "moved out of validation"),
                                               (self.relabelled, "relabelled"),
                                               (self.duplicates_dropped, "duplicates dropped"),
                                               (self.skipped_test_duplicates, "test images refused")) if n]
        return (f"+{self.added_images} images, +{self.added_boxes} boxes from {self.source}"
                + (f" ({', '.join(extra)})" if extra else ""))

    def summary(self) -> str:
        """A few lines for the review screen."""
        if self.error:
            return f"{self.error}\n\nContinuing now fails the review step; the run stays resumable."
        if self.unknown:
            return ("Roboflow: the reviewed labels are downloaded when you continue; the import then reports what "
                    "came back.")
        lines = [f"From {self.source}:",
                 f"{self.returned_labelled}/{self.picks} picks came back labelled ({self.negatives} without objects)",
                 f"New for training: +{self.added_images} images, +{self.added_boxes} boxes",
                 f"{self.removed_from_val} move out of validation, {self.relabelled} relabelled, "
                 f"{self.duplicates_dropped} exact duplicates dropped"]
        if self.skipped_test_duplicates:
            lines.append(f"{self.skipped_test_duplicates} equal test images and are not added (the test split is "
                         f"frozen)")
        if self.near_duplicates:
            lines.append(f"{self.near_duplicates} near-duplicates of validation/test images (added, with a warning)")
        if self.unedited_pre_annotations:
            lines.append(f"{self.unedited_pre_annotations} returned label files equal the model's pre-annotations "
                         f"(unreviewed?)")
        lines.append(f"Training set now (dataset version {self.dataset_version}): {self.train_images} images")
        return "\n".join(lines)


def preview_import(ctx: StepContext) -> ImportPreview:
    """What continuing the review of ctx's iteration would import: the review step's own import, run dry (nothing
    is written, nothing emitted). It hashes the candidates: call it off the UI thread."""
    from al.steps.review import preview

    try:
        got = preview(ctx)
    except (UserError, OSError) as e:
        return ImportPreview(error=str(e))
    except Exception as e:  # a bug: the preview is advice, the import itself reports properly; keep the traceback
        logging.getLogger("al").exception("import preview failed")
        return ImportPreview(error=f"The preview failed ({type(e).__name__}: {e}); see {ctx.env.paths.events_log}")
    known = {f.name for f in fields(ImportPreview)}
    return ImportPreview(**{k: v for k, v in got.items() if k in known})

