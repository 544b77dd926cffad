"""A minimal real simulation (1 seed, 2 arms, 1 round, imgsz 64): stopped after its first arm, run again, it
continues without redoing that arm and writes the results; the box budget and the matched schedule hold; the
converged protocol records each point's epochs, trains the upper bound and the compute check."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from al.core import store
from al.core.paths import RunPaths
from al.sim import SimSpec, simulate

pytestmark = pytest.mark.slow


def test_simulation_resumes_after_a_stop_and_reports(tmp_path, tiny_data):
    out = tmp_path / "sim"
    spec = dict(data=tiny_data, out=out, arms=["random", "entropy"], seeds=[0], protocols=["matched"], rounds=1,
                budget=8, budget_unit="boxes", seed_set=8, pool=12, imgsz=64, batch=8, epochs_base=1,
                epochs_round=1, matched_steps=3, upper_bound=False)
    lines: list[str] = []
    assert simulate(SimSpec(**spec), say=lines.append, stop_after_units=1) == {}
    assert any("stopped after 1 units; run the same command again" in ln for ln in lines)
    state = store.read_json(out / "simulation_state.json", schema=1)
    assert list(state["units"]) == ["0/matched/random"]
    first = RunPaths(out / "seed_0" / "matched" / "random" / "run")
    before = first.best(1).stat().st_mtime_ns
    assert (out / "seed_0" / "baseline.pt").is_file()

    lines.clear()
    summary = simulate(SimSpec(**spec), say=lines.append)
    assert any("1/2 units already done" in ln for ln in lines)
    assert not any("matched/random" in ln and "trains the shared baseline" in ln for ln in lines)
    assert first.best(1).stat().st_mtime_ns == before  # the finished arm was not redone
    second = RunPaths(out / "seed_0" / "matched" / "entropy" / "run")
    assert store.read_json(second.train_result(0))["adopted"] == str(out / "seed_0" / "baseline.pt")

    rows = list(csv.DictReader((out / "simulation.csv").open()))
    assert [(r["arm"], r["round"]) for r in rows] == [("random", "0"), ("random", "1"), ("entropy", "0"),
                                                      ("entropy", "1")]
    for r in rows:
        assert 0.0 <= float(r["test_map50_95"]) <= 1.0 and "ap50_95_zero" in r and "add_zero" in r
    for r in rows[1::2]:
        # the box budget: picks in rank order until their boxes reach it (the last one's are known once drawn)
        assert 8 <= int(r["added_boxes"]) < 8 + 6
        assert int(r["labelled_images"]) == 8 + int(r["added_images"])
        # matched: 3 batches from the baseline, as epochs of this training set
        assert int(r["train_epochs"]) == math.ceil(3 / math.ceil(int(r["labelled_images"]) / 8))
        assert int(r["annotator_edits"]) == int(r["boxes_to_add"]) + int(r["boxes_to_delete"]) + \
            int(r["boxes_to_fix"])
        assert int(r["boxes_to_add"]) + int(r["boxes_to_fix"]) <= int(r["added_boxes"])
        assert r["hard_negative_slots"] == r["hard_negative_given_back"] == "0"  # random, entropy reserve none
        assert int(r["train_batches"]) == int(r["train_epochs"]) * math.ceil(int(r["labelled_images"]) / 8)
    assert any(re.search(r"\] epoch \d+/\d+$", ln) for ln in lines)  # training progress reaches the terminal
    assert store.read_json(second.train_result(1))["spec"]["model"] == str(second.best(0))
    got = json.loads((out / "simulation_summary.json").read_text())
    assert set(got["protocols"]["matched"]["groups"]["tuning"]["arms"]) == {"random", "entropy"}
    assert "random" in summary["matched"]["groups"]["tuning"]["arms"]["entropy"]["vs"]
    assert (out / "simulation.png").stat().st_size > 1000
    md = (out / "simulation.md").read_text()
    assert "## matched protocol" in md and "| entropy |" in md and "| entropy vs random |" in md

    # a kill after an arm's loop finished but before the simulation recorded it: the arm is read, not redone
    state = store.read_json(out / "simulation_state.json", schema=1)
    recorded = state["units"].pop("0/matched/entropy")
    store.write_json(out / "simulation_state.json", state, schema=1)
    done_before = second.best(1).stat().st_mtime_ns
    lines.clear()
    simulate(SimSpec(**spec), say=lines.append)
    assert second.best(1).stat().st_mtime_ns == done_before
    again = store.read_json(out / "simulation_state.json", schema=1)["units"]["0/matched/entropy"]
    assert again["rows"] == recorded["rows"]

    # an ablation on the same work folder: only the arms asked for this time are in the results, the other finished
    # arm is kept (not redone, not reported), and nothing trains when every asked arm is done
    lines.clear()
    simulate(SimSpec(**{**spec, "arms": ["entropy"]}), say=lines.append)
    assert any("1/1 units already done" in ln for ln in lines)
    assert not any("trains the shared baseline" in ln for ln in lines)
    assert {r["arm"] for r in csv.DictReader((out / "simulation.csv").open())} == {"entropy"}
    assert json.loads((out / "simulation_summary.json").read_text())["settings"]["arms"] == ["entropy"]
    assert set(store.read_json(out / "simulation_state.json", schema=1)["units"]) == {"0/matched/random",
                                                                                      "0/matched/entropy"}


def test_seeds_side_by_side_draw_the_same_labels(tmp_path, tiny_data):
    # --jobs 2: arms in processes of their own, a seed's second arm after its first (which trains the shared
    # baseline); each seed draws and labels what a run one seed at a time does
    spec = dict(data=tiny_data, arms=["random", "entropy"], protocols=["matched"], rounds=1, budget=4, seed_set=8,
                pool=12, imgsz=64, batch=8, epochs_base=1, epochs_round=1, matched_steps=2, upper_bound=False)
    lines: list[str] = []
    par = SimSpec(**spec, out=tmp_path / "par", seeds=[0, 1], jobs=2)
    simulate(par, say=lines.append)
    assert any("2 units at a time (--jobs 2)" in ln for ln in lines)
    units = store.read_json(tmp_path / "par" / "simulation_state.json", schema=1)["units"]
    assert set(units) == {"0/matched/random", "1/matched/random", "0/matched/entropy", "1/matched/entropy"}
    done = [next(i for i, ln in enumerate(lines) if f"] {key} done in" in ln) for key in
            ("0/matched/random", "0/matched/entropy", "1/matched/random", "1/matched/entropy")]
    assert done[0] < done[1] and done[2] < done[3]  # the baseline-maker finished first
    for seed in (0, 1):  # both arms start from the one shared baseline
        r0 = [units[f"{seed}/matched/{arm}"]["rows"][0]["test_map50_95"] for arm in ("random", "entropy")]
        assert r0[0] == pytest.approx(r0[1], abs=1e-9)
    simulate(SimSpec(**{**spec, "arms": ["random"]}, out=tmp_path / "seq", seeds=[1]), say=lambda _: None)
    seq = store.read_json(tmp_path / "seq" / "simulation_state.json", schema=1)["units"]["1/matched/random"]

    def picks(rows):  # what was drawn and labelled (training itself is not bit-reproducible between processes)
        return [{k: r[k] for k in ("round", "labelled_images", "labelled_boxes", "added_images", "added_boxes")}
                for r in rows]

    assert picks(units["1/matched/random"]["rows"]) == picks(seq["rows"])
    assert picks(units["0/matched/random"]["rows"]) != picks(units["1/matched/random"]["rows"])  # seeds differ
    rows = list(csv.DictReader((tmp_path / "par" / "simulation.csv").open()))
    assert {r["seed"] for r in rows} == {"0", "1"}


def test_converged_points_record_their_epochs_the_upper_bound_and_the_compute_check(tmp_path, tiny_data):
    out = tmp_path / "conv"
    spec = SimSpec(data=tiny_data, out=out, arms=["random", "entropy"], seeds=[0], protocols=["converged"],
                   budgets=[4], seed_set=8, pool=12, imgsz=64, batch=8, max_epochs=3, patience=2, check_seeds=1)
    lines: list[str] = []
    summary = simulate(spec, say=lines.append)
    units = store.read_json(out / "simulation_state.json", schema=1)["units"]
    assert set(units) == {"0/converged/random", "0/converged/entropy", "0/converged/@upper",
                          *(f"0/converged/@check_{w}_x{m}" for w in ("first", "last") for m in (1, 2))}
    for arm in ("random", "entropy"):
        for r in units[f"0/converged/{arm}"]["rows"]:
            # every point trained from the start weights by early stopping: its epochs and best epoch recorded
            assert 1 <= r["train_epochs"] <= r["epoch_cap"] == 3 and 1 <= r["best_epoch"] <= r["train_epochs"]
            assert r["patience"] == 2
    # the entropy arm adopted the baseline the random arm trained: the same iteration-0 figures
    assert units["0/converged/entropy"]["rows"][0]["train_epochs"] == units["0/converged/random"]["rows"][0][
        "train_epochs"]
    assert units["0/converged/@upper"]["row"]["labelled_images"] == 8 + 12
    assert units["0/converged/@check_last_x2"]["row"]["epoch_cap"] == 6
    assert units["0/converged/@check_last_x1"]["row"]["labelled_images"] == units["0/converged/random"]["rows"][-1][
        "labelled_images"]
    chk = summary["converged"]["checks"]
    assert chk["measured"] and chk["noise"]["n"] == 2 and len(chk["points"]) == 2
    md = (out / "simulation.md").read_text()
    assert "## converged protocol" in md and "retrained with the same budget" in md and "Upper bound" in md
