"""A simulation's results: simulation.csv (one row per seed, protocol, unit and round), simulation_summary.json,
simulation.md and simulation.png in the work folder."""

from __future__ import annotations

from collections.abc import Callable

from al.core import store
from al.sim import summary as summ
from al.sim.data import overlap
from al.sim.runner import machine
from al.sim.spec import SimSpec


def write_results(spec: SimSpec, state: dict, wall: float, *, say: Callable[[str], None]) -> dict:
    """Write the four result files of the units this call asked for; returns the summary."""
    from al.report.simulation import markdown, plot_curves

    out = spec.out
    keys = [k for k in [*spec.unit_keys(), *spec.extra_keys()] if k in state["units"]]
    mine = {k: state["units"][k] for k in keys}
    rows = [r for u in mine.values() for r in (u.get("rows") or [u["row"]])]
    timings = {k: u["seconds"] for k, u in mine.items()}
    columns = list(dict.fromkeys(c for r in rows for c in r))
    store.write_csv(out / "simulation.csv", rows, columns)
    summary = summ.summarize(mine, spec)
    infos = {}
    for s in spec.all_seeds:
        f = out / f"seed_{s}" / "data" / "seed_data.json"
        if f.is_file():
            infos[s] = store.read_json(f)
    seeds_info = {"overlap": overlap(infos),
                  "per_seed": {s: {k: i[k] for k in ("seed_set", "pool", "seed_boxes", "pool_boxes")}
                               for s, i in infos.items()}}
    doc = {"settings": spec.settings(), "wall_seconds_this_call": round(wall, 1), "unit_seconds": timings,
           "machine": machine(), "seeds": seeds_info, "protocols": summary}
    store.write_json(out / "simulation_summary.json", doc)
    md = markdown(doc, spec.arms)
    store.write_text_atomic(out / "simulation.md", md)
    unit = spec.budget_unit
    arm_rows = [r for r in rows if not str(r["arm"]).startswith("@")]
    upper = [r for r in rows if r["arm"] == "@upper"]
    plot_curves(arm_rows, spec.arms, spec.protocols, out / "simulation.png", x_key=f"labelled_{unit}",
                x_label=f"labelled {unit}", title=f"{len(spec.all_seeds)} seeds", upper=upper)
    say(f"results: {out / 'simulation.md'} (also .csv, _summary.json, .png)")
    say(md)
    return summary
