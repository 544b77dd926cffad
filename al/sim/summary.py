"""What a simulation's rows say: per protocol, seed group and arm, the labels (images, boxes, annotator edits)
needed to reach 90 % and 95 % of the seed's upper bound, the labels needed at each of random's points, paired
AUC differences, the checks that make a comparison meaningful (the models learned, random's curve rises, the
points are not compute-limited) and a verdict per arm against each reference. The statistics are
al.metrics.efficiency's pure functions."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from al.metrics import efficiency
from al.sim.spec import UPPER, SimSpec

TARGETS = (0.90, 0.95)
"""Shares of the seed's upper-bound test mAP50-95 whose labels are reported."""
UNITS = ("edits", "boxes", "images")
"""What labels are counted in, the annotator's work first."""
REFERENCES = ("random", "entropy", "most_boxes", "diversity")
FLOOR = 0.1
"""A curve whose best test mAP50-95 stays below this (or below 20 % of the upper bound) has not learned: any
comparison with it is inconclusive."""


def curve(rows: Sequence[Mapping], unit: str) -> tuple[list[float], list[float | None]]:
    """One arm's curve of one seed, in round order: (labels in `unit`, test mAP50-95). Edits are cumulative: the
    seed set's boxes (drawn from scratch) plus every round's add + delete + fix on the pre-annotations."""
    pts = sorted(rows, key=lambda r: int(r["round"]))
    if unit == "edits":
        x, total = [], 0.0
        for r in pts:
            total += float(r["labelled_boxes"]) if int(r["round"]) == 0 else float(r["annotator_edits"])
            x.append(total)
    else:
        x = [float(r[f"labelled_{unit}"]) for r in pts]
    return x, [None if r["test_map50_95"] is None else float(r["test_map50_95"]) for r in pts]


def _ok_curve(y: Sequence[float | None]) -> bool:
    return bool(y) and all(v is not None for v in y)


def checks(state_units: Mapping[str, dict], spec: SimSpec, proto: str) -> dict:
    """The retraining noise and the compute check of a protocol, from its @check units (converged only)."""
    pairs, base, doubled, points = [], [], [], []
    for s in spec.check_seeds_list():
        arm = state_units.get(f"{s}/{proto}/random")
        if not arm:
            continue
        rows = sorted(arm["rows"], key=lambda r: int(r["round"]))
        for which, ref in (("first", rows[0]), ("last", rows[-1])):
            x1 = state_units.get(f"{s}/{proto}/@check_{which}_x1")
            x2 = state_units.get(f"{s}/{proto}/@check_{which}_x2")
            if not (x1 and x2) or None in (ref["test_map50_95"], x1["row"]["test_map50_95"],
                                              x2["row"]["test_map50_95"]):
                continue
            a, b, c = (float(v) for v in (ref["test_map50_95"], x1["row"]["test_map50_95"],
                                          x2["row"]["test_map50_95"]))
            pairs.append((a, b))
            base.append((a + b) / 2)
            doubled.append(c)
            points.append({"seed": s, "point": which, "labelled_images": ref["labelled_images"], "map": a,
                           "repeat": b, "doubled": c, "epochs": ref.get("train_epochs"),
                           "repeat_epochs": x1["row"].get("train_epochs"),
                           "doubled_epochs": x2["row"].get("train_epochs"),
                           "doubled_cap": x2["row"].get("epoch_cap")})
    if not pairs:
        return {"measured": False, "points": []}
    noise = efficiency.retrain_noise(pairs)
    comp = efficiency.compute_check(base, doubled, noise)
    # points that learned nothing are 'converged' at 0: the check then says nothing
    learned = max(max(p["map"], p["repeat"], p["doubled"]) for p in points) >= FLOOR
    return {"measured": True, "noise": noise, "compute": comp, "points": points, "learned": learned}


def _group_seeds(spec: SimSpec) -> dict[str, list[int]]:
    groups = {"tuning": list(spec.seeds)}
    if spec.confirm_seeds:
        groups["confirmation"] = list(spec.confirm_seeds)
        groups["all"] = spec.all_seeds
    return groups


def summarize(state_units: Mapping[str, dict], spec: SimSpec) -> dict:
    """The whole summary: {protocol: {"checks", "upper", "groups": {group: {"arms": {arm: ...}}}}}."""
    out: dict = {}
    for proto in spec.protocols:
        chk = checks(state_units, spec, proto)
        noise_thr = chk["noise"]["threshold"] if chk.get("measured") else 0.0
        compute_ok = not (chk.get("measured") and (chk["compute"]["limited"] or not chk["learned"]))
        upper = {s: state_units[f"{s}/{proto}/{UPPER}"]["row"] for s in spec.all_seeds
                 if f"{s}/{proto}/{UPPER}" in state_units}
        groups = {}
        for group, seeds in _group_seeds(spec).items():
            groups[group] = _group(state_units, spec, proto, seeds, upper, noise_thr, compute_ok,
                                   chk.get("measured", False))
        out[proto] = {"checks": chk, "upper": {s: {"test_map50_95": r["test_map50_95"],
                                                  "labelled_images": r["labelled_images"],
                                                  "labelled_boxes": r["labelled_boxes"],
                                                  "train_epochs": r.get("train_epochs")} for s, r in upper.items()},
                      "groups": groups}
    return out


def _group(units: Mapping[str, dict], spec: SimSpec, proto: str, seeds: list[int], upper: Mapping[int, dict],
           noise_thr: float, compute_ok: bool, noise_measured: bool) -> dict:
    arms_rows = {a: {s: units[f"{s}/{proto}/{a}"]["rows"] for s in seeds if f"{s}/{proto}/{a}" in units}
                 for a in spec.arms}
    missing = {a: [s for s in seeds if s not in arms_rows[a]] for a in spec.arms}
    bad_map = {a: [s for s, rows in per.items() if not _ok_curve(curve(rows, "images")[1])]
               for a, per in arms_rows.items()}
    res: dict = {"seeds": seeds, "missing": {a: m for a, m in missing.items() if m},
                 "missing_test_map": {a: m for a, m in bad_map.items() if m}, "arms": {}}
    usable = {a: {s: rows for s, rows in per.items() if s not in bad_map[a]} for a, per in arms_rows.items()}
    ub = {s: float(upper[s]["test_map50_95"]) for s in seeds if s in upper and upper[s]["test_map50_95"] is not None}
    rand = usable.get("random", {})
    rises = {s: efficiency.rises(curve(rows, "images")[1], noise_thr) for s, rows in rand.items()}
    res["random_rises"] = rises
    res["noise_measured"] = noise_measured
    for arm, per in usable.items():
        d: dict = {"n": len(per), "final_map50_95": _stats([curve(r, "images")[1][-1] for r in per.values()]),
                   "boxes_per_pick": _stats([_boxes_per_pick(r) for r in per.values()]),
                   "edits_per_pick": _stats([_edits_per_pick(r) for r in per.values()]),
                   "epochs": _stats([float(r["train_epochs"]) for rows in per.values() for r in rows
                                     if r.get("train_epochs") is not None]),
                   "stopped_early": sum(bool(r.get("stopped_early")) for rows in per.values() for r in rows),
                   "points": sum(len(rows) for rows in per.values())}
        d["learned"] = {s: efficiency.learned(curve(rows, "images")[1], ub.get(s, 0.0), floor=FLOOR)
                        for s, rows in per.items()}
        d["reach"] = {}
        for t in TARGETS:
            for unit in UNITS:
                d["reach"][f"{unit}@{t:.2f}"] = {
                    s: efficiency.labels_needed(*curve(rows, unit), t * ub[s]) for s, rows in per.items() if s in ub}
        d["vs"] = {}
        res["arms"][arm] = d
    for arm, d in res["arms"].items():
        for ref in REFERENCES:
            # every arm against random; the strategies also against the other references (not those among them)
            if ref == arm or ref not in res["arms"] or (arm in REFERENCES and ref != "random"):
                continue
            d["vs"][ref] = _compare(usable[arm], usable[ref], d, res["arms"][ref], ub, rises, compute_ok)
        if arm != "random" and "random" in res["arms"]:
            d["at_random_points"] = _at_random_points(usable[arm], rand)
    return res


def _boxes_per_pick(rows: Sequence[Mapping]) -> float | None:
    imgs = sum(int(r["added_images"]) for r in rows)
    return sum(int(r["added_boxes"]) for r in rows) / imgs if imgs else None


def _edits_per_pick(rows: Sequence[Mapping]) -> float | None:
    imgs = sum(int(r["added_images"]) for r in rows)
    return sum(int(r["annotator_edits"]) for r in rows) / imgs if imgs else None


def _stats(vals: Sequence[float | None]) -> dict:
    v = [float(x) for x in vals if x is not None]
    return {"median": statistics.median(v) if v else None, "min": min(v) if v else None,
            "max": max(v) if v else None, "n": len(v)}


def _compare(arm: Mapping[int, list], ref: Mapping[int, list], d_arm: dict, d_ref: dict, ub: Mapping[int, float],
             rises: Mapping[int, bool], compute_ok: bool) -> dict:
    """An arm against a reference on the seeds both ran: paired AUC (common label range per seed, in images and
    boxes), the label savings at each target with their paired intervals, and the verdicts."""
    seeds = sorted(set(arm) & set(ref))
    floor_ok = all(d_arm["learned"].get(s, False) and d_ref["learned"].get(s, False) for s in seeds)
    ref_rises = all(rises.get(s, True) for s in seeds)
    out: dict = {"seeds": seeds, "floor_ok": floor_ok, "random_rises": ref_rises, "compute_ok": compute_ok,
                 "auc": {}, "savings": {}}
    for unit in ("images", "boxes"):
        diffs = {}
        for s in seeds:
            a, r = curve(arm[s], unit), curve(ref[s], unit)
            try:
                auc = efficiency.auc_common_range({"a": a, "r": r})
            except ValueError:
                continue
            diffs[s] = auc["a"] - auc["r"]
        t = efficiency.paired_t_interval(list(diffs.values()))
        interval = {"low": t["low"], "high": t["high"], "n": t["n"]}
        out["auc"][unit] = {"per_seed": diffs, "t": t, "sign": efficiency.sign_test(list(diffs.values())),
                            **efficiency.verdict(interval, higher_is_better=True, floor_ok=floor_ok,
                                                 reference_rises=ref_rises, compute_ok=compute_ok)}
    for key, per_arm in d_arm["reach"].items():
        per_ref = d_ref["reach"].get(key, {})
        pr = efficiency.paired_label_ratio({s: per_arm[s] for s in seeds if s in per_arm},
                                           {s: per_ref[s] for s in seeds if s in per_ref})
        sv = pr["saving"]
        interval = {"low": sv["low"], "high": sv["high"], "n": sv["n"]}
        out["savings"][key] = {**pr, **efficiency.verdict(interval, higher_is_better=True, floor_ok=floor_ok,
                                                          reference_rises=ref_rises, compute_ok=compute_ok)}
    return out


def _at_random_points(arm: Mapping[int, list], rand: Mapping[int, list]) -> dict:
    """For each of random's rounds: the labels the arm needs to reach random's mAP there, against the labels random
    itself needed (its own curve's first crossing), per unit: the savings curve, not one target."""
    out: dict = {}
    for unit in UNITS:
        per_round: dict[int, dict] = {}
        for s in sorted(set(arm) & set(rand)):
            rx, ry = curve(rand[s], unit)
            ax, ay = curve(arm[s], unit)
            for k, m in enumerate(ry):
                if k == 0 or m is None:
                    continue  # round 0 is the shared baseline: every arm has it
                per_round.setdefault(k, {})
                per_round[k][s] = (efficiency.labels_needed(ax, ay, m), efficiency.labels_needed(rx, ry, m))
        out[unit] = {}
        for k, pairs in sorted(per_round.items()):
            pr = efficiency.paired_label_ratio({s: p[0] for s, p in pairs.items()},
                                               {s: p[1] for s, p in pairs.items()})
            out[unit][k] = {"saving": pr["saving"], "sign": pr["sign"], "seeds": pr["seeds"],
                            "random_labels": statistics.median(p[1]["bound"] for p in pairs.values())}
    return out
