"""The simulator's report: its figure (test mAP50-95 against labels, per protocol, the median over seeds with its
min-max band and the upper bound) and its markdown (al.sim.summary's figures and verdicts).

Drawn on an explicit Agg canvas (no pyplot), like al.report.plots."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from al.core import store


def plot_curves(rows: Sequence[Mapping], arms: Sequence[str], protocols: Sequence[str], path: Path, *,
                x_key: str = "labelled_images", x_label: str = "labelled images", title: str = "",
                upper: Sequence[Mapping] = ()) -> Path:
    """One panel per protocol: per arm and round, the median over seeds of `x_key` and of test mAP50-95, with the
    band from the lowest to the highest seed; the upper bound's median (the whole pool labelled) as a dashed line
    with 90 % and 95 % of it dotted. Written atomically; returns the path."""
    fig = Figure(figsize=(5.2 * max(1, len(protocols)), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(protocols)), squeeze=False)[0]
    for ax, proto in zip(axes, protocols):
        for arm in arms:
            by_round: dict[int, list[tuple[float, float]]] = {}
            for r in rows:
                if r["arm"] == arm and r["protocol"] == proto:
                    by_round.setdefault(int(r["round"]), []).append(
                        (float(r[x_key]), float("nan") if r["test_map50_95"] is None else float(r["test_map50_95"])))
            by_round = {k: [p for p in v if p[1] == p[1]] for k, v in by_round.items()}  # NaN: not measured
            by_round = {k: v for k, v in by_round.items() if v}
            if not by_round:
                continue
            rs = sorted(by_round)
            x = [statistics.median(p[0] for p in by_round[k]) for k in rs]
            med = [statistics.median(p[1] for p in by_round[k]) for k in rs]
            lo = [min(p[1] for p in by_round[k]) for k in rs]
            hi = [max(p[1] for p in by_round[k]) for k in rs]
            line, = ax.plot(x, med, marker="o", label=arm)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ub = [float(r["test_map50_95"]) for r in upper if r["protocol"] == proto and r["test_map50_95"] is not None]
        if ub:
            med_ub = statistics.median(ub)
            ax.axhline(med_ub, color="black", linestyle="--", linewidth=1, label="upper bound (whole pool)")
            for share in (0.9, 0.95):
                ax.axhline(share * med_ub, color="grey", linestyle=":", linewidth=0.8)
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


def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:+.0f}%"


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _med(d: Mapping) -> str:
    return "n/a" if d.get("median") is None else f"{d['median']:.3g}"


def _saving_cell(sv: Mapping) -> str:
    s = sv["saving"]
    seeds = sv["seeds"]
    parts = [f"{_pct(s['mean'])} [{_pct(s['low'])}, {_pct(s['high'])}] n={s['n']}"]
    if seeds.get("lower_bound"):
        parts.append(f"{len(seeds['lower_bound'])} lower bounds")
    if seeds.get("arm_not_reached"):
        parts.append(f"not reached on {len(seeds['arm_not_reached'])}")
    if seeds.get("neither_reached") or seeds.get("reference_at_start"):
        parts.append(f"undefined on {len(seeds.get('neither_reached', [])) + len(seeds.get('reference_at_start', []))}")
    return "; ".join(parts)


def _reach_cell(per_seed: Mapping) -> str:
    vals = [d["labels"] for d in per_seed.values() if not d["censored"]]
    n = len(per_seed)
    if not n:
        return "n/a"
    med = statistics.median(vals) if vals else None
    return f"{'n/a' if med is None else f'{med:.0f}'} ({len(vals)}/{n})"


def markdown(doc: Mapping, arms: Sequence[str]) -> str:
    """The simulation's report from its summary document (simulation_summary.json)."""
    import json

    st = doc["settings"]
    ov = doc["seeds"]["overlap"]
    lines = ["# Label-efficiency simulation\n", f"Data: `{st['data']}`  ", f"Settings: `{json.dumps(st)}`  ",
             f"Wall time: {doc['wall_seconds_this_call'] / 60:.1f} min (this invocation); the units took "
             f"{sum(doc['unit_seconds'].values()) / 60:.1f} min in all  ", f"Machine: {doc['machine']}  ",
             f"Seeds: tuning {st['seeds']}, confirmation {st['confirm_seeds'] or 'none'}; their drawn images "
             f"overlap by at most {ov['max']:.0%} (mean {ov['mean']:.0%}, {ov['pairs']} pairs)\n",
             "Labels are counted as annotator edits (the seed set's boxes drawn from scratch, then per pick the "
             "boxes to add, delete and fix on the picking model's pre-annotations), boxes and images. A target is "
             "a share of the seed's upper bound: the same training on the seed set and the whole pool. Savings are "
             "1 - arm / reference labels to reach it, per seed; their interval is a paired t-interval of the "
             "log-ratio over the seeds where both reached it (a reference that never did gives a lower bound), n "
             "seeds; seeds where the arm never reached it are counted apart. AUC differences are paired per seed "
             "over the label range both curves cover, with a t-interval and the sign test.\n"]
    for proto, res in doc["protocols"].items():
        lines.append(f"\n## {proto} protocol\n")
        chk = res["checks"]
        limited = bool(chk.get("measured") and (chk["compute"]["limited"] or not chk.get("learned", True)))
        if chk.get("measured"):
            comp, noise = chk["compute"], chk["noise"]
            word = ("COMPUTE-LIMITED" if comp["limited"] else "converged") if chk.get("learned", True) else \
                "UNTRAINED (under the floor, so the check says nothing)"
            lines += [f"**Points {word}.** Random's first and last points retrained with the same budget (the "
                      f"retraining noise: sd {noise['sd']:.4f} over {noise['n']} pairs, a difference above "
                      f"{noise['threshold']:.4f} is more than noise) and with twice the epoch cap and patience: "
                      f"{comp['reason']}." + (" No saving is reported as a verdict: every comparison below is "
                                              "inconclusive." if comp["limited"] or not chk.get("learned", True)
                                              else "") + "\n",
                      "| seed | point | images | mAP50-95 | repeat | doubled | epochs (repeat, doubled / cap) |",
                      "|---|---|---|---|---|---|---|"]
            for p in chk["points"]:
                lines.append(f"| {p['seed']} | {p['point']} | {p['labelled_images']} | {_f(p['map'])} | "
                             f"{_f(p['repeat'])} | {_f(p['doubled'])} | {p['epochs']} ({p['repeat_epochs']}, "
                             f"{p['doubled_epochs']} / {p['doubled_cap']}) |")
        else:
            lines.append("The compute check did not run for this protocol (no @check units): nothing shows that its "
                         "points are limited by labels rather than by training.\n")
        ub = [u["test_map50_95"] for u in res["upper"].values() if u["test_map50_95"] is not None]
        if ub:
            lines.append(f"\nUpper bound (whole pool, {len(ub)} seeds): test mAP50-95 median "
                         f"{statistics.median(ub):.3f} [{min(ub):.3f}, {max(ub):.3f}].\n")
        for group, g in res["groups"].items():
            lines += [f"\n### {group} seeds {g['seeds']}\n"]
            if g.get("missing"):
                lines.append(f"Not yet run: {g['missing']}.  ")
            if g.get("missing_test_map"):
                lines.append(f"**WARNING**: a point without a test mAP (left out): {g['missing_test_map']}.  ")
            flat = [s for s, ok in g.get("random_rises", {}).items() if not ok]
            if flat:
                lines.append(f"**WARNING**: random's curve does not rise above the noise on seeds {flat}: "
                             f"comparisons on them are inconclusive.  ")
            lines += ["", "| arm | seeds | final mAP50-95 | boxes / pick | edits / pick | epochs a point (early "
                      "stops) | to 90 %: edits, boxes, images (reached) | to 95 %: edits, boxes, images |",
                      "|---|---|---|---|---|---|---|---|"]
            ran = {arm: d for arm, d in g["arms"].items() if d["n"]}  # arms not yet run are listed above
            if not ran:
                lines.append("Nothing finished on these seeds yet.")
                continue
            for arm, d in ran.items():
                cells = []
                for t in ("0.90", "0.95"):
                    cells.append(", ".join(_reach_cell(d["reach"][f"{u}@{t}"]) for u in ("edits", "boxes", "images")))
                lines.append(f"| {arm} | {d['n']} | {_med(d['final_map50_95'])} | {_med(d['boxes_per_pick'])} | "
                             f"{_med(d['edits_per_pick'])} | {_med(d['epochs'])} ({d['stopped_early']}/"
                             f"{d['points']}) | {cells[0]} | {cells[1]} |")
            lines += ["", "| arm vs reference | verdict (AUC, images) | AUC - ref, images [t 95 %] (wins-losses, "
                      "sign p) | edits saved to 90 % | boxes saved to 90 % | images saved to 90 % | edits saved to "
                      "95 % | boxes saved to 95 % |", "|---|---|---|---|---|---|---|---|"]
            for arm, d in ran.items():
                for ref, c in d["vs"].items():
                    if not c["seeds"]:
                        continue
                    a = c["auc"]["images"]
                    t = a["t"]
                    sv = c["savings"]
                    lines.append(
                        f"| {arm} vs {ref} | {a['verdict']} | {_f(t['mean'], 4)} [{_f(t['low'], 4)}, "
                        f"{_f(t['high'], 4)}] ({a['sign']['wins']}-{a['sign']['losses']}, p {a['sign']['p']:.3f}) | "
                        + " | ".join("not a measurement (see the check above)" if limited else _saving_cell(sv[k])
                                     for k in ("edits@0.90", "boxes@0.90", "images@0.90", "edits@0.95",
                                               "boxes@0.95")) + " |")
            reasons = sorted({c["auc"]["images"]["reason"] for d in ran.values() for c in d["vs"].values()
                              if c["seeds"] and c["auc"]["images"]["verdict"] == "inconclusive"})
            lines += [f"- {r}" for r in reasons]
            rows = [(arm, d["at_random_points"]) for arm, d in ran.items() if d.get("at_random_points")]
            if rows:
                lines += ["", "Labels saved to reach random's mAP50-95 at each of its rounds (edits; boxes; images), "
                          "geometric mean over seeds with its t-interval:", ""]
                ks = sorted({int(k) for _, ap in rows for k in ap["edits"]})
                lines += ["| arm | " + " | ".join(f"round {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
                for arm, ap in rows:
                    cells = []
                    for k in ks:
                        vals = [ap[u].get(k) or ap[u].get(str(k)) for u in ("edits", "boxes", "images")]
                        cells.append("; ".join(_pct(v["saving"]["mean"]) if v else "n/a" for v in vals))
                    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
