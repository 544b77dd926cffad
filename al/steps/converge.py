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
           "per_class_f1", "per_class_fn", "converged", "reason",
           # the frozen decision set (docs/GATE.md): the figures the rules and the gate read; f1.. above are the
           # validation remainder, which mining_source val shrinks
           "decision_set", "decision_images", "decision_f1", "decision_map50", "decision_map50_95", "champion",
           "promoted", "gate_delta", "gate_ci_low", "gate_ci_high", "gate_alarms"]


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
        **gate_columns(ctx, k, val),
    }


def gate_columns(ctx: StepContext, k: int, val: artifacts.ValidationSummary) -> dict:
    """The decision-set and gate columns of iteration k's row (empty cells in a run made before the gate)."""
    d = val.decision
    paths = ctx.env.paths
    p = artifacts.load_promotion(paths, k) if d is not None and paths.promotion(k).is_file() else None
    r6 = lambda v: None if v is None else round(v, 6)  # noqa: E731
    return {"decision_set": d.set if d else None, "decision_images": d.images if d else None,
            "decision_f1": r6(d.f1) if d else None, "decision_map50": r6(d.map50) if d else None,
            "decision_map50_95": r6(d.map50_95) if d else None,
            "champion": p.champion_after if p else None, "promoted": int(p.promoted) if p else None,
            "gate_delta": r6(p.delta) if p else None, "gate_ci_low": r6(p.ci_low) if p else None,
            "gate_ci_high": r6(p.ci_high) if p else None, "gate_alarms": json.dumps(p.alarms) if p else None}


def decision_f1(row: dict) -> float:
    """The F1 the rules read: the decision set's, or the validation F1 in rows of a run made before the gate."""
    v = _num(row.get("decision_f1"))
    return float(row["f1"]) if v is None else v


def history_rows(ctx: StepContext, upto: int) -> list[dict]:
    """CSV rows of iterations before `upto` (later rows are stale after --start-iteration)."""
    return [r for r in store.read_csv(ctx.env.paths.convergence_csv) if int(r["iteration"]) < upto]


def run(ctx: StepContext) -> str:
    k, al = ctx.iteration, ctx.env.cfg.active_learning
    val = artifacts.load_validation(ctx.env.paths, k)
    row = build_row(ctx, k, val)
    rows = history_rows(ctx, k) + [row]
    hist = [{"iteration": int(r["iteration"]), "f1": decision_f1(r), "train_f1": _num(r["train_f1"])} for r in rows]
    verdict = convergence.check(hist, target_f1=al.target_f1, plateau_threshold=al.plateau_threshold,
                                plateau_window=al.plateau_window, overfit_gap=al.overfit_gap,
                                max_iterations=al.max_iterations,
                                f1_label="decision F1" if val.decision else "val F1")
    row["converged"] = int(verdict.converged)
    row["reason"] = verdict.reason
    store.write_csv(ctx.env.paths.convergence_csv, rows, COLUMNS)
    # the only place the trend plots are drawn: nothing else changes the CSV until the next converge
    plots.plot_trends(rows, ctx.env.paths.convergence_plots, target_f1=al.target_f1, names=val.names)
    ctx.state.converged = verdict.converged
    ctx.state.reason = verdict.reason
    ctx.ui.emit(MetricsRow(row))
    ctx.ui.emit(Message(convergence.format_console(verdict, decision_f1(row), al.target_f1)))
    return "next"
