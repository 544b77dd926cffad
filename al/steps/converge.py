"""Step 3: one CSV row per iteration, seed 004's stopping rules, trend plots."""

from __future__ import annotations

import json

from al.core import artifacts, store
from al.core.context import StepContext
from al.core.events import Message, MetricsRow
from al.data import dataset
from al.metrics import convergence
from al.report import plots

COLUMNS = ["iteration", "precision", "recall", "f1", "map50", "map50_95", "tp", "fp", "fn", "train_f1",
           "test_map50", "test_map50_95", "test_f1", "labelled_images", "val_images", "dataset_version",
           "per_class_f1", "per_class_fn", "converged", "reason"]


def _num(v):
    if v in (None, ""):
        return None
    return float(v)


def build_row(ctx: StepContext, k: int, val: artifacts.ValidationSummary) -> dict:
    """Iteration k's CSV row from its validation summary and dataset version."""
    ver, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(k))
    o, t = val.overall, val.test
    return {
        "iteration": k, "precision": round(o.precision, 6), "recall": round(o.recall, 6),
        "f1": round(o.f1, 6), "map50": round(val.map50, 6), "map50_95": round(val.map50_95, 6),
        "tp": o.tp, "fp": o.fp, "fn": o.fn,
        "train_f1": None if val.train_f1 is None else round(val.train_f1, 6),
        "test_map50": round(t.map50, 6) if t else None, "test_map50_95": round(t.map50_95, 6) if t else None,
        "test_f1": round(t.f1, 6) if t else None,
        "labelled_images": len(splits["train"]), "val_images": len(splits["val"]), "dataset_version": ver["id"],
        "per_class_f1": json.dumps({n: round(c.f1, 6) for n, c in val.per_class.items()}),
        "per_class_fn": json.dumps({n: c.fn for n, c in val.per_class.items()}),
    }


def history_rows(ctx: StepContext, upto: int) -> list[dict]:
    """CSV rows of iterations before `upto` (later rows are stale after --start-iteration)."""
    return [r for r in store.read_csv(ctx.env.paths.convergence_csv) if int(r["iteration"]) < upto]


def run(ctx: StepContext) -> str:
    k, al = ctx.iteration, ctx.env.cfg.active_learning
    val = artifacts.load_validation(ctx.env.paths, k)
    row = build_row(ctx, k, val)
    rows = history_rows(ctx, k) + [row]
    hist = [{"iteration": int(r["iteration"]), "f1": float(r["f1"]), "train_f1": _num(r["train_f1"])} for r in rows]
    verdict = convergence.check(hist, target_f1=al.target_f1, plateau_threshold=al.plateau_threshold,
                                plateau_window=al.plateau_window, overfit_gap=al.overfit_gap,
                                max_iterations=al.max_iterations)
    row["converged"] = int(verdict.converged)
    row["reason"] = verdict.reason
    store.write_csv(ctx.env.paths.convergence_csv, rows, COLUMNS)
    # the only place the trend plots are drawn: nothing else changes the CSV until the next converge
    plots.plot_trends(rows, ctx.env.paths.convergence_plots, target_f1=al.target_f1, names=val.names)
    ctx.state.converged = verdict.converged
    ctx.state.reason = verdict.reason
    ctx.ui.emit(MetricsRow(row))
    ctx.ui.emit(Message(convergence.format_console(verdict, row["f1"], al.target_f1)))
    return "next"
