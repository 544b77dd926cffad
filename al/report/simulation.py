"""The simulator's figure: test mAP50-95 against labels, per protocol, the median over seeds with its min-max band.

Drawn on an explicit Agg canvas (no pyplot), like al.report.plots."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from al.core import store


def plot_curves(rows: Sequence[Mapping], arms: Sequence[str], protocols: Sequence[str], path: Path, *,
                x_key: str = "labelled_images", x_label: str = "labelled images", title: str = "") -> Path:
    """One panel per protocol: per arm and round, the median over seeds of `x_key` and of test mAP50-95, with the
    band from the lowest to the highest seed. Written atomically; returns the path."""
    fig = Figure(figsize=(5.2 * max(1, len(protocols)), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(protocols)), squeeze=False)[0]
    for ax, proto in zip(axes, protocols):
        for arm in arms:
            by_round: dict[int, list[tuple[float, float]]] = {}
            for r in rows:
                if r["arm"] == arm and r["protocol"] == proto:
                    by_round.setdefault(int(r["round"]), []).append((float(r[x_key]), float(r["test_map50_95"])))
            if not by_round:
                continue
            rs = sorted(by_round)
            x = [statistics.median(p[0] for p in by_round[k]) for k in rs]
            med = [statistics.median(p[1] for p in by_round[k]) for k in rs]
            lo = [min(p[1] for p in by_round[k]) for k in rs]
            hi = [max(p[1] for p in by_round[k]) for k in rs]
            line, = ax.plot(x, med, marker="o", label=arm)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xlabel(x_label)
        ax.set_ylabel("test mAP50-95")
        ax.set_title(f"{proto} protocol" + (f": {title}" if title else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="median, min-max band", title_fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    store.write_bytes_atomic(path, buf.getvalue())
    return path
