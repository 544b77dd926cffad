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
                  "baseline_source": cfg.model.baseline if k == 0 else None},
        "timings_s": st.timings.get(str(k), {}),
        "converged": st.converged, "reason": st.reason,
    }
    store.write_json(paths.metadata(k), meta)
    report = {
        "iteration": k, "metrics": val.model_dump(mode="json", include={"overall", "per_class", "map50", "map50_95",
                                                                        "train_f1", "test"}),
        "convergence": {"converged": st.converged, "reason": st.reason},
        "hard_examples": ({"count": len(hard.picks), "candidates": hard.candidates,
                           "source": hard.source} if hard else None),
        "review": review.to_json() if review else None, "training": trained, "dataset_version": ver["id"],
        "labelled_images": len(splits["train"]), "metadata": str(paths.metadata(k)),
        # images the dataset check left out (dataset.on_bad_data: skip): of the configured set, and of this review
        "bad_data_skipped": {"dataset": (dataset.read_snapshot(paths.dataset_version(0))[0].get("data_check")
                                         or {}).get("skipped_images", 0),
                             "review": (review.model_extra or {}).get("bad_data_skipped", 0) if review else 0},
    }
    store.write_json(paths.iteration_report(k), report)
    ctx.ui.emit(Message(f"[ITERATION {k}] Complete!"))
    return "next"
