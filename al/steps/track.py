"""Step 7: metadata.json, the iteration report, refreshed plots."""

from __future__ import annotations

import platform

from al import __version__
from al.core import store
from al.core.context import StepContext
from al.core.events import Message
from al.data import dataset
from al.report import plots


def run(ctx: StepContext) -> str:
    k, paths, cfg, st = ctx.iteration, ctx.env.paths, ctx.env.cfg, ctx.state
    val = store.read_json(paths.validation(k), required=("overall",))
    ver, splits = dataset.read_snapshot(paths.dataset_version(k))
    nxt = paths.dataset_version(k + 1)
    next_ver = dataset.read_snapshot(nxt)[0] if (nxt / "version.json").is_file() and not st.converged else None
    review = store.read_json(paths.review(k)) if paths.review(k).is_file() and not st.converged else None
    hard = store.read_json(paths.hard_examples(k)) if paths.hard_examples(k).is_file() and not st.converged else None
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
                    "val_changed": bool(review and review.get("removed_from_val")),
                    "removed_from_val": review.get("removed_from_val", 0) if review else 0,
                    "review_origin": next_ver.get("origin") if next_ver else None},
        "model": {"evaluated": str(paths.best(k)),
                  "trained_next": str(paths.best(k + 1)) if trained else None,
                  "baseline_source": cfg.model.baseline if k == 0 else None},
        "timings_s": st.timings.get(str(k), {}),
        "converged": st.converged, "reason": st.reason,
    }
    store.write_json(paths.metadata(k), meta)
    report = {
        "iteration": k, "metrics": {"overall": val["overall"], "per_class": val["per_class"],
                                    "map50": val["map50"], "map50_95": val["map50_95"],
                                    "train_f1": val.get("train_f1"), "test": val.get("test")},
        "convergence": {"converged": st.converged, "reason": st.reason},
        "hard_examples": ({"count": len(hard["picks"]), "candidates": hard["candidates"],
                           "source": hard["source"]} if hard else None),
        "review": review, "training": trained, "dataset_version": ver["id"], "labelled_images": len(splits["train"]),
        "metadata": str(paths.metadata(k)),
    }
    store.write_json(paths.iteration_report(k), report)
    rows = store.read_csv(paths.convergence_csv)
    plots.plot_trends(rows, paths.convergence_plots, target_f1=cfg.active_learning.target_f1,
                      names=list(val["names"]))
    ctx.ui.emit(Message(f"[ITERATION {k}] Complete!"))
    return "next"
