"""Convergence trend plots from the rows of metrics/convergence_tracking.csv.

Figures are drawn on an explicit Agg canvas without pyplot: no global backend switch, no pyplot figure registry
to leak into (nothing to close), and safe to call from a worker thread.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)

PLOT_FILES = ("f1_trend.png", "metrics_trend.png", "counts_trend.png", "per_class_f1_trend.png",
              "per_class_fn_trend.png")
DPI = 100
FIGSIZE = (8.0, 4.5)


def plot_trends(rows: Sequence[Mapping], out_dir: Path, *, target_f1: float | None,
                names: Sequence[str]) -> list[Path]:
    """Write the five trend PNGs of seed 004 into `out_dir` (each atomically) and return their paths in
    PLOT_FILES order. Rows may hold numbers or CSV strings; "" and None mean "not measured"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbered = sorted(((it, r) for r in rows if (it := _num(r.get("iteration"))) is not None), key=lambda p: p[0])
    rows = [r for _, r in numbered]
    its = [int(it) for it, _ in numbered]
    col = lambda key: [_num(r.get(key)) for r in rows]  # noqa: E731

    decision = decision_label(rows)
    f1_series = [(decision, col("decision_f1"))] if decision else []
    remainder = "val remainder F1 (shrinks)" if decision and _mined_val(rows) else "val F1"
    f1_series += [(remainder, col("f1")), ("train F1", col("train_f1"))]
    if not decision or not str(rows[-1].get("decision_set")) == "test":  # else the decision line is test F1
        f1_series.insert(len(f1_series) - 1, ("test F1", col("test_f1")))
    figs = {
        "f1_trend.png": lambda: _lines(
            its, f1_series, title="F1 over iterations" + (" (the rules read the decision set)" if decision else ""),
            ylabel="F1", target=target_f1, main=0 if decision else None),
        "metrics_trend.png": lambda: _lines(
            its, [("precision", col("precision")), ("recall", col("recall")), ("F1", col("f1"))]
            + ([(f"{decision}: mAP50-95", col("decision_map50_95"))] if decision else []),
            title=("Validation remainder (shrinks)" if decision and _mined_val(rows) else "Validation")
            + " precision / recall / F1", ylabel="score", target=target_f1),
        "counts_trend.png": lambda: _lines(
            its, [("TP", col("tp")), ("FP", col("fp")), ("FN", col("fn"))],
            title="Validation TP / FP / FN counts", ylabel="boxes"),
        "per_class_f1_trend.png": lambda: _lines(
            its, _per_class(rows, "per_class_f1", names), title="Per-class validation F1", ylabel="F1", many=True),
        "per_class_fn_trend.png": lambda: _lines(
            its, _per_class(rows, "per_class_fn", names), title="Per-class false negatives", ylabel="FN boxes",
            many=True),
    }
    paths = []
    for name in PLOT_FILES:
        path = out_dir / name
        fig = figs[name]()  # one figure alive at a time
        try:
            _save_atomic(fig, path)
        finally:
            fig.clear()
        paths.append(path)
    return paths


def decision_label(rows: Sequence[Mapping]) -> str | None:
    """'decision F1: test (12 images)' from the rows' decision_set and decision_images (the latest row that has
    them); None for rows of a run made before the gate."""
    for r in reversed(rows):
        if r.get("decision_set") not in (None, ""):
            n = _num(r.get("decision_images"))
            return f"decision F1: {r['decision_set']} ({int(n) if n is not None else '?'} images)"
    return None


def _mined_val(rows: Sequence[Mapping]) -> bool:
    """Whether the validation split lost images over these rows (mining_source val moves the picks out)."""
    sizes = [n for r in rows if (n := _num(r.get("val_images"))) is not None]
    return len(set(sizes)) > 1


def _lines(its: list[int], series: list[tuple[str, list[float | None]]], *, title: str, ylabel: str,
           target: float | None = None, many: bool = False, main: int | None = None) -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = 0
    for i, (label, values) in enumerate(series):
        pts = [(x, y) for x, y in zip(its, values) if y is not None]
        if not pts:
            continue  # e.g. no test split: leave the series out rather than draw an empty legend entry
        xs, ys = zip(*pts)
        color = f"C{i % 10}" if not many or len(series) <= 10 else matplotlib.colormaps["tab20"](i % 20)
        width, style = (2.8, "-") if i == main else (1.5, "-" if main is None else "--")
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=width, linestyle=style, label=label, color=color)
        drawn += 1
    if target is not None:
        ax.axhline(target, linestyle="--", color="gray", linewidth=1, label=f"target {target:.4g}")
    if not drawn:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    if its:
        ax.set_xlim(min(its) - 0.5, max(its) + 0.5)
    if its and max(its) - min(its) < 20:
        ax.set_xticks(range(min(its), max(its) + 1))  # MaxNLocator(integer=True) gives up on a span below 1
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if drawn or target is not None:
        if many and drawn > 6:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                      ncol=max(1, math.ceil(drawn / 20)), frameon=False)
        else:
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def _per_class(rows: Sequence[Mapping], key: str, names: Sequence[str]) -> list[tuple[str, list[float | None]]]:
    """One series per class: `names` order first, then any other class name found in the rows."""
    maps = [_as_dict(r.get(key), key, r.get("iteration")) for r in rows]
    order = list(names) + sorted({k for m in maps for k in m} - set(names))
    series = [(n, [_num(m.get(n)) for m in maps]) for n in order]
    return [(n, v) for n, v in series if any(x is not None for x in v)]


def _as_dict(value, key: str, iteration) -> dict:
    """A per-class cell is a dict or its JSON text; anything unreadable is logged and plotted as missing."""
    if value is None or isinstance(value, Mapping):
        return dict(value or {})
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    log.warning("iteration %s: %s is not a JSON object (%.60r); left out of the plot", iteration, key, value)
    return {}


def _num(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _save_atomic(fig: Figure, path: Path) -> None:
    """Save beside the target, then os.replace. The temp file is named as the store names its own
    (.NAME.XXXXXXXX.tmp, the format given explicitly), so a kill mid-save leaves one the next start removes."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
