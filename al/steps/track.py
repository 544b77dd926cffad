"""Step 7: metadata.json and the iteration report (the trend plots are converge's)."""

from __future__ import annotations

import platform

from al import __version__
from al.core import artifacts, store
from al.core.context import StepContext
from al.core.events import Message
from al.data import dataset


def run(ctx: StepContext) -> str:
    k, paths, cfg, st = ctx.iteration, ctx.env.paths, ctx.env.cfg, ctx.state
    val = artifacts.load_validation(paths, k)
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    nxt = paths.dataset_version(k + 1)
    next_ver = dataset.read_snapshot(nxt)[0] if (nxt / "version.json").is_file() and not st.converged else None
    review = artifacts.load_review(paths, k) if paths.review(k).is_file() and not st.converged else None
    hard = artifacts.load_hard_examples(paths, k) if paths.hard_examples(k).is_file() and not st.converged else None
    trained = store.read_json(paths.train_result(k + 1)) if paths.train_result(k + 1).is_file() \
        and not st.converged else None
    meta = {
        "iteration": k, "tool_version": __version__, "python": platform.python_version(),
        "config_file": str(cfg.source_path), "config_digest": cfg.digest(),
        "dry_run": ctx.env.opts.dry_run, "auto": ctx.env.opts.auto,
        "dataset": {"version": ver["id"], "counts": ver["counts"], "next_version": next_ver["id"] if next_ver else None,
                    "next_counts": next_ver["counts"] if next_ver else None,
                    "manifest": str(man) if (man := paths.dataset_version(k) / "manifest.json").is_file() else None,
                    "next_manifest": next_ver.get("manifest") if next_ver else None,
                    # images mined from validation moved out of it: the validation set changed for iteration k+1
                    "val_changed": bool(review and review.removed_from_val),
                    "removed_from_val": review.removed_from_val if review else 0,
                    "review_origin": next_ver.get("origin") if next_ver else None},
        "model": {"evaluated": str(paths.best(k)),
                  "trained_next": str(paths.best(k + 1)) if trained else None,
                  "trained_next_from": trained["spec"]["model"] if trained else None,
                  "baseline_source": cfg.model.baseline if k == 0 else None,
                  **_model_of(paths, k)},
        "timings_s": st.timings.get(str(k), {}),
        "converged": st.converged, "reason": st.reason,
        "promotion": _promotion(paths, k),
    }
    store.write_json(paths.metadata(k), meta)
    first = dataset.read_snapshot(paths.dataset_version(0))[0]
    report = {
        "iteration": k, "metrics": val.model_dump(mode="json", include={"overall", "per_class", "map50", "map50_95",
                                                                        "train_f1", "test"}),
        "convergence": {"converged": st.converged, "reason": st.reason},
        # the frozen decision set and the gate's verdict on this iteration's model (docs/GATE.md)
        "decision": val.decision.model_dump(mode="json") if val.decision else None,
        "promotion": _promotion(paths, k),
        # the prompt version behind these metrics: the one iteration k's model was trained with (none: no prompts)
        "prompt_version": _model_of(paths, k).get("prompts"),
        "hard_examples": ({"count": len(hard.picks), "candidates": hard.candidates,
                           "source": hard.source} if hard else None),
        "review": review.to_json() if review else None, "training": trained, "dataset_version": ver["id"],
        "labelled_images": len(splits["train"]), "metadata": str(paths.metadata(k)),
        # images the dataset check left out (dataset.on_bad_data: skip): of the configured set, and of this review
        "bad_data_skipped": {"dataset": (first.get("data_check") or {}).get("skipped_images", 0),
                             "review": (review.model_extra or {}).get("bad_data_skipped", 0) if review else 0},
        # what the start-up check warned about in the configured dataset (repairs, near-duplicates, stray files)
        "dataset_warnings": first.get("warnings", []),
    }
    store.write_json(paths.iteration_report(k), report)
    if cfg.tracking.mlflow.enabled:
        _track_mlflow(ctx)
    ctx.ui.emit(Message(f"[ITERATION {k}] Complete!"))
    return "next"


def _promotion(paths, k: int) -> dict | None:
    """promotion.json of iteration k with the model the next retrain fine-tunes (None before the gate)."""
    if not paths.promotion(k).is_file():
        return None
    p = artifacts.load_promotion(paths, k)
    return {**p.to_json(), "champion_weights": str(paths.best(p.champion_after)),
            "challenger_weights": str(paths.best(p.challenger))}


def _model_of(paths, k: int) -> dict:
    """Architecture and prompts of the model evaluated in iteration k, from the training that made it: a YOLOE
    target names its prompt version, encoder and what came from the baseline (al.yolo.yoloe)."""
    try:
        done = store.read_json(paths.train_result(k))
    except store.StoreError:
        return {}
    y, rep = done.get("spec", {}).get("yoloe"), done.get("yoloe") or {}
    if not y:
        return {"arch": "baseline architecture", "prompts": None}
    return {"arch": rep.get("arch", "YOLOEModel"), "target": y["target"], "start": rep.get("start"),
            "from_baseline": rep.get("from_baseline"), "text_encoder": rep.get("encoder"),
            "prompts": {"version": y["prompt_version"], "file": y["prompt_file"], "digest": y["prompt_digest"],
                        "texts": dict(zip(y["names"], y["prompts"])), "from_class_name": y["prompts_from_name"]}}


def _track_mlflow(ctx: StepContext) -> None:
    """Iteration k becomes (or updates) one MLflow run; a promotion registers the champion (docs/TRACKING.md)."""
    from al.report import tracking  # imports mlflow (about 2 s): only when tracking is enabled

    k, env = ctx.iteration, ctx.env
    logged = tracking.log_iteration(env.cfg, env.paths, k, dry_run=env.opts.dry_run, auto=env.opts.auto)
    for note in logged.notes:
        ctx.ui.emit(Message(f"[MLFLOW] {note}", "warning"))
    champ = f"; alias '{tracking.CHAMPION_ALIAS}' -> version {logged.champion_version}" \
        if logged.champion_version else ""
    ctx.ui.emit(Message(f"[MLFLOW] iteration {k} {'logged as' if logged.created else 'updated in'} run "
                        f"{logged.run_id} ({logged.metrics} metrics, {logged.artifacts} artefacts) at "
                        f"{tracking.shown_uri(env.cfg.tracking.mlflow, env.paths)}{champ}"))
