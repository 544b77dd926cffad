"""`al-loop simulate` without training: the seed's data (draw, disjoint blocks, hidden pool labels), the units' order,
the converged protocol's loop keys, every bad-input message, and the summary of known curves with its checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from al import cli
from al.core import store
from al.data import dataset
from al.sim import SimSpec, SimulationError, parse_list, simulate
from al.sim.data import prepare_seed_data
from al.sim.spec import check_spec


def _spec(data: Path, out: Path, **kw) -> SimSpec:
    base = {"arms": ["random", "entropy"], "seeds": [0], "protocols": ["matched"], "rounds": 1, "budget": 4,
            "seed_set": 8, "pool": 12, "imgsz": 64, "batch": 8, "epochs_base": 1, "epochs_round": 1}
    return SimSpec(data=data, out=out, **{**base, **kw})


def _without_test(tiny_data: Path, tmp_path: Path) -> Path:
    raw = yaml.safe_load(tiny_data.read_text())
    raw.pop("test")
    raw["path"] = str(tiny_data.parent)
    out = tmp_path / "no_test.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def test_seed_data_draws_a_seed_set_and_a_hidden_pool_from_train(tmp_path, tiny_data):
    spec = _spec(tiny_data, tmp_path / "out")
    info = prepare_seed_data(spec, 0, tmp_path / "s0")
    src = dataset.read_data_yaml(tiny_data)
    mine = dataset.read_data_yaml(tmp_path / "s0" / "data.yaml")
    assert info["seed_set"] == 8 and info["pool"] == 12
    assert set(mine.splits["train"]) <= set(src.splits["train"]) and len(mine.splits["train"]) == 8
    assert mine.splits["val"] == src.splits["val"] and mine.splits["test"] == src.splits["test"]
    pool_imgs = sorted((tmp_path / "s0" / "pool" / "images").iterdir())
    hidden = sorted((tmp_path / "s0" / "pool" / "labels_hidden").iterdir())
    assert len(pool_imgs) == 12 and [p.stem for p in pool_imgs] == [p.stem for p in hidden]
    assert not (tmp_path / "s0" / "pool" / "labels").exists()  # training can never see the pool's labels
    # the pool holds train images outside the seed set, and its hidden labels are theirs
    by_hash = {dataset.file_hash(p): p for p in src.splits["train"]}
    originals = [by_hash[dataset.file_hash(p)] for p in pool_imgs]
    assert not set(originals) & set(mine.splits["train"])
    assert hidden[0].read_text() == dataset.label_path(originals[0]).read_text()
    # seeded: the same seed draws the same sets, another seed others
    again = prepare_seed_data(spec, 0, tmp_path / "s0b")
    assert again == {**info} and (tmp_path / "s0b" / "seed_set.txt").read_text() == \
        (tmp_path / "s0" / "seed_set.txt").read_text()
    prepare_seed_data(spec, 1, tmp_path / "s1")
    assert (tmp_path / "s1" / "seed_set.txt").read_text() != (tmp_path / "s0" / "seed_set.txt").read_text()


def test_explicit_seed_and_pool_lists(tmp_path, tiny_data):
    train = dataset.read_data_yaml(tiny_data).splits["train"]
    (tmp_path / "seed.txt").write_text("\n".join(train[:10]))
    (tmp_path / "pool.txt").write_text("\n".join(train[10:20]))
    spec = _spec(tiny_data, tmp_path / "out", seed_list=tmp_path / "seed.txt", pool_list=tmp_path / "pool.txt")
    info = prepare_seed_data(spec, 0, tmp_path / "s")
    assert info["seed_set"] == 10 and info["pool"] == 10
    (tmp_path / "bad.txt").write_text("\n".join(train[:3] + dataset.read_data_yaml(tiny_data).splits["test"][:1]))
    with pytest.raises(SimulationError, match=r"--seed-list .*bad.txt: 1 images are not in the train split"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", seed_list=tmp_path / "bad.txt"), 0, tmp_path / "b")
    with pytest.raises(SimulationError, match=r"--pool-list .*: 10 images are in the seed set"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", seed_list=tmp_path / "seed.txt",
                                pool_list=tmp_path / "seed.txt"), 0, tmp_path / "c")


def test_bad_data_is_refused_with_the_fix(tmp_path, tiny_data):
    with pytest.raises(SimulationError, match=r"no_test.yaml: no test split.*add 'test:'"):
        prepare_seed_data(_spec(_without_test(tiny_data, tmp_path), tmp_path / "o"), 0, tmp_path / "a")
    with pytest.raises(SimulationError, match=r"holds 12 images, fewer than the rounds' budgets add up to \(16 "
                                              r"images\); raise --pool"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", rounds=2, budget=8), 0, tmp_path / "b")
    with pytest.raises(SimulationError, match=r"holds \d+ boxes, fewer than the rounds' budgets add up to \(100000"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", budget=100000, budget_unit="boxes"), 0, tmp_path / "c")
    with pytest.raises(SimulationError, match=r"classes \[.*\] have no box in seed 0's seed set of 1 images.*"
                                              r"Raise --seed-set, or give a --seed-list"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", seed_set=1), 0, tmp_path / "d")
    # unset, the pool is 300 or all the rest when train is smaller; 0 is all the rest
    assert prepare_seed_data(_spec(tiny_data, tmp_path / "o", pool=None), 0, tmp_path / "g")["pool"] == 16
    assert prepare_seed_data(_spec(tiny_data, tmp_path / "o", pool=0), 0, tmp_path / "h")["pool"] == 16
    with pytest.raises(SimulationError, match=r"--pool 100: only 16 train images are left"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", pool=100), 0, tmp_path / "e")
    with pytest.raises(SimulationError, match=r"--seed-set 24: the train split .* has 24 images"):
        prepare_seed_data(_spec(tiny_data, tmp_path / "o", seed_set=24), 0, tmp_path / "f")
    assert not {p.name for p in tmp_path.iterdir()} & set("abcdef")  # nothing half-written


def test_bad_options_are_refused(tmp_path, tiny_data):
    cases = [({"arms": ["random", "coreset"]}, r"--arms: \['coreset'\] unknown"),
             ({"protocols": ["epochs"]}, r"--protocol: \['epochs'\] unknown; choose from converged, matched, chained"),
             ({"confirm_seeds": [0, 9]}, r"--confirm-seeds \[0\] are also tuning seeds"),
             ({"budgets": [8, 0]}, r"--budgets \[8, 0\]: give one budget of 1 or more per round"),
             ({"patience": 0}, r"--patience 0: must be 1 or more"),
             ({"imgsz": 100}, r"--imgsz 100: must be a multiple of 32, e.g. 96"),
             ({"model": "yolov9000.yaml"}, r"--model 'yolov9000.yaml': use one of yolov8n.yaml, yolo11n.yaml"),
             ({"budget": 0}, r"--budget 0: must be 1 or more"),
             ({"pool": -1}, r"--pool -1: must be 0 \(all the rest of train\) or more")]
    for kw, msg in cases:
        with pytest.raises(SimulationError, match=msg):
            check_spec(_spec(tiny_data, tmp_path / "o", **kw))
    with pytest.raises(SimulationError, match=r"--seeds '0,x': every entry must be a whole number or a range"):
        parse_list("0,x", "seeds", int)
    assert parse_list("0-3,8", "seeds", int) == [0, 1, 2, 3, 8]
    with pytest.raises(SimulationError, match=r"lists an entry twice"):
        parse_list("0-3,2", "seeds", int)
    with pytest.raises(SimulationError, match=r"--arms 'random,,entropy': give a comma-separated list"):
        parse_list("random,,entropy", "arms")


def test_a_work_folder_of_other_settings_is_refused(tmp_path, tiny_data):
    spec = _spec(tiny_data, tmp_path / "out")
    store.write_json(tmp_path / "out" / "simulation_state.json",
                     {"spec": {**spec.identity(), "budget": 99}, "units": {}}, schema=1)
    with pytest.raises(SimulationError, match=r"holds a simulation with other settings \(budget differ\)"):
        simulate(spec, say=lambda _: None)


def test_a_work_folder_takes_more_arms_seeds_and_protocols(tmp_path, tiny_data):
    from al.sim.runner import _load_state

    spec = _spec(tiny_data, tmp_path / "out", arms=["random", "entropy"], seeds=[0, 1], protocols=["matched"])
    # a folder written before arms, seeds and protocols could grow holds them in its spec: still the same simulation
    old = {**spec.identity(), "arms": ["random"], "seeds": [0], "protocols": ["chained"]}
    store.write_json(tmp_path / "out" / "simulation_state.json", {"spec": old, "units": {"0/chained/random": {}}},
                     schema=1)
    assert _load_state(spec)["units"] == {"0/chained/random": {}}
    assert spec.settings()["arms"] == ["random", "entropy"] and "arms" not in spec.identity()
    assert spec.unit_keys() == ["0/matched/random", "0/matched/entropy", "1/matched/random", "1/matched/entropy"]


def test_auto_jobs_fits_the_trainings_to_the_cores(tmp_path, tiny_data):
    from al.sim import auto_jobs

    # an Ultralytics training on a CPU takes cores - 1 threads
    assert auto_jobs("cpu", 2) == 2 and auto_jobs("cpu", 1) == 1 and auto_jobs("cpu", 3) == 1
    assert auto_jobs("cpu", 16) == 1 and auto_jobs("0", 2) == 1 and auto_jobs("0,1", 2) == 1
    with pytest.raises(SimulationError, match=r"--jobs 0: must be 1 or more"):
        check_spec(_spec(tiny_data, tmp_path, jobs=0))
    assert "jobs" not in _spec(tiny_data, tmp_path, jobs=2).identity()  # not part of the identity


def test_units_start_with_the_baseline_makers_and_checks_wait_for_random(tmp_path, tiny_data):
    from al.sim.runner import Job, baseline_path, plan, ready

    spec = _spec(tiny_data, tmp_path / "out", arms=["random", "entropy"], seeds=[0, 1], protocols=["converged"],
                 check_seeds=1)
    spec.out = spec.out.resolve()
    todo = plan(spec, set())
    keys = [j.key for j in todo]
    # seed by seed: its arms, its upper bound, its compute checks (the first tuning seed's only)
    assert keys[:3] == ["0/converged/random", "0/converged/entropy", "0/converged/@upper"]
    assert keys[3:7] == [f"0/converged/@check_{w}_x{m}" for w in ("first", "last") for m in (1, 2)]
    assert keys[7:] == ["1/converged/random", "1/converged/entropy", "1/converged/@upper"]
    todo = [todo[0], todo[1], todo[7], todo[8]]  # the arms
    making: set = set()
    assert ready(spec, todo[0], set(), making) == "make"
    making.add((0, "converged"))
    assert ready(spec, todo[1], set(), making) is None  # waits for seed 0's baseline
    assert ready(spec, todo[2], set(), making) == "make"  # seed 1 has its own
    assert ready(spec, Job(0, "converged", "@check_last_x2"), set(), making) is None  # reads random's last set
    assert ready(spec, Job(0, "converged", "@check_last_x2"), {"0/converged/random"}, making) == "run"
    assert ready(spec, Job(0, "converged", "@upper"), set(), making) == "run"
    baseline_path(spec, 0, "converged").parent.mkdir(parents=True)
    baseline_path(spec, 0, "converged").write_bytes(b"x")
    assert ready(spec, todo[1], set(), making) == "run"
    # matched and chained share a baseline trained for epochs_base epochs; converged has its own
    assert baseline_path(spec, 0, "matched") == baseline_path(spec, 0, "chained") != baseline_path(spec, 0,
                                                                                                   "converged")
    assert [j.key for j in plan(spec, set(keys[:5]))] == keys[5:]
    assert not [j for j in plan(_spec(tiny_data, tmp_path, protocols=["matched"]), set()) if "@check" in j.key]


def test_disjoint_blocks_give_each_seed_its_own_images(tmp_path, tiny_data):
    from al.sim.data import blocks, overlap

    train = [f"/d/img_{i:03d}.jpg" for i in range(100)]
    bl = blocks(train, 30)
    assert len(bl) == 3 and all(len(b) == 30 for b in bl)
    assert len({p for b in bl for p in b}) == 90  # disjoint
    assert blocks(train, 30) == bl and blocks(list(reversed(train)), 30) == bl  # fixed, whatever the order given
    # tiny data: 24 train images hold two blocks of 6 + 6; seeds 0 and 1 draw from different ones, seed 2 wraps
    spec = _spec(tiny_data, tmp_path / "o", seed_set=6, pool=6, rounds=1, budget=2)
    infos = {s: prepare_seed_data(spec, s, tmp_path / f"s{s}") for s in (0, 1, 2)}
    assert not set(infos[0]["images"]) & set(infos[1]["images"])
    assert set(infos[2]["images"]) == set(infos[0]["images"])
    ov = overlap({0: infos[0], 1: infos[1]})
    assert ov["max"] == 0.0 and ov["pairs"] == 1
    assert overlap(infos)["max"] == 1.0
    # --overlapping draws from the whole split, as before
    wide = {s: prepare_seed_data(_spec(tiny_data, tmp_path / "o", seed_set=6, pool=6, rounds=1, budget=2,
                                       disjoint=False), s, tmp_path / f"w{s}") for s in (0, 1)}
    assert overlap(wide)["max"] > 0.0
    # the upper bound's set: the seed set and the whole pool, labelled
    full = dataset.read_data_yaml(tmp_path / "s0" / "full.yaml")
    assert len(full.splits["train"]) == 12
    assert all(dataset.label_path(p).is_file() for p in full.splits["train"])


def test_converged_protocol_trains_every_point_from_the_start_weights(tmp_path, tiny_data):
    from al.core.config import ConfigError, load_config
    from al.core.paths import RunPaths
    from al.sim.unit import point_config, unit_config
    from al.steps import retrain
    from tests.conftest import make_config, step_context

    learned_baseline = tmp_path / "start.pt"  # where the spec and the configs point; nothing loads it here
    learned_baseline.write_bytes(b"weights")
    spec = _spec(tiny_data, tmp_path, protocols=["converged"], budgets=[4, 8, 16], max_epochs=30, patience=5,
                 model=str(learned_baseline))
    cfg = unit_config(spec, tmp_path, tmp_path / "run", "entropy", "converged", 0, initial_weights=learned_baseline)
    tr = cfg["training"]
    assert tr["schedule"] == "converged" and tr["patience"] == 5 and tr["epochs_increment"] == 30
    assert tr["extra"]["val"] is True  # early stopping and the best epoch need the validation split
    assert cfg["active_learning"]["budget_schedule"] == [4, 8, 16] and cfg["active_learning"]["max_iterations"] == 4
    assert cfg["model"]["initial_weights"] == str(learned_baseline)
    doubled = point_config(spec, tmp_path / "full.yaml", tmp_path / "r", "converged", 0, mult=2)["training"]
    assert doubled["patience"] == 10 and doubled["epochs_base"] == 60
    # in the loop: every fine-tune starts from model.baseline's .pt, not from the round before
    loaded = load_config(make_config(tmp_path, tiny_data, model={"baseline": str(learned_baseline)},
                                     training__schedule="converged", training__patience=5,
                                     training__epochs_increment=30))
    ctx = step_context(loaded)
    store.write_json(RunPaths(loaded.run_dir).dataset_version(3) / "version.json", {"id": "3", "counts": {"train": 9}})
    assert retrain.start_weights(ctx) == learned_baseline
    sp = retrain.train_spec(ctx, 3)
    assert sp["model"] == str(learned_baseline) and sp["epochs"] == 30 and sp["patience"] == 5
    for over, msg in (({"training__patience": 0}, r"training.patience.*schedule 'converged' stops each training"),
                      ({"training__patience": 5, "training__extra": {"val": False}}, r"remove 'val: false'")):
        with pytest.raises(ConfigError, match=msg):
            load_config(make_config(tmp_path, tiny_data, training__schedule="converged", **over))


def test_budget_schedule_and_initial_weights_keys(tmp_path, tiny_data):
    from al.core.config import ConfigError, load_config
    from tests.conftest import make_config

    al = load_config(make_config(tmp_path, tiny_data, active_learning__budget_schedule=[4, 8])).active_learning
    assert [al.picks_budget(k) for k in range(4)] == [4, 8, 8, 8] and al.box_budget(1) is None
    boxes = load_config(make_config(tmp_path, tiny_data, active_learning__budget_schedule=[10, 30],
                                    active_learning__max_boxes_per_iteration=30)).active_learning
    assert boxes.box_budget(0) == 10 and boxes.box_budget(5) == 30 and boxes.picks_budget(0) >= 10
    with pytest.raises(ConfigError, match=r"budget_schedule"):
        load_config(make_config(tmp_path, tiny_data, active_learning__budget_schedule=[4, 0]))
    with pytest.raises(ConfigError, match=r"model.initial_weights' = .*nope.pt': weights file not found"):
        load_config(make_config(tmp_path, tiny_data, model={"baseline": "yolov8n.yaml", "initial_weights": "nope.pt"}))


def test_cli_says_what_is_wrong_and_exits_2(tmp_path, tiny_data, capsys):
    code = cli.main(["simulate", "--data", str(_without_test(tiny_data, tmp_path)), "--out", str(tmp_path / "o"),
                     "--seeds", "0", "--seed-set", "8", "--pool", "12", "--budget", "4", "--rounds", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("[ERROR] ") and "no test split" in err
    assert cli.main(["simulate", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--arms", "bogus"]) == 2
    assert "--arms: ['bogus'] unknown" in capsys.readouterr().err
    missing = cli.main(["simulate", "--data", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o2"),
                        "--seed-set", "8", "--pool", "12"])
    assert missing == 2 and "dataset file not found" in capsys.readouterr().err


def test_loop_keys_of_the_protocol_and_the_box_budget(tmp_path, tiny_data):
    from al.core.config import ConfigError, load_config
    from tests.conftest import make_config

    cfg = load_config(make_config(tmp_path, tiny_data, training__schedule="matched", training__matched_steps=40,
                                  active_learning__max_boxes_per_iteration=96))
    assert cfg.training.schedule == "matched" and cfg.training.matched_steps == 40
    assert cfg.active_learning.max_boxes_per_iteration == 96
    assert load_config(make_config(tmp_path, tiny_data)).training.schedule == "chained"
    for key, value, msg in (("training__schedule", "epochs", "training.schedule"),
                            ("training__matched_steps", 0, "training.matched_steps"),
                            ("active_learning__max_boxes_per_iteration", 0,
                             "active_learning.max_boxes_per_iteration")):
        with pytest.raises(ConfigError, match=msg):
            load_config(make_config(tmp_path, tiny_data, **{key: value}))


def test_ablation_arms_carry_their_own_sampling_keys(tmp_path, tiny_data):
    from al.sim.spec import arm_folder, arm_strategy
    from al.sim.unit import unit_config

    arm = "combined@combined_class_balance_weight=0+hard_negative_share=0"
    assert arm_strategy(arm) == ("combined", {"combined_class_balance_weight": 0, "hard_negative_share": 0})
    assert arm_strategy("entropy") == ("entropy", {})
    assert "/" not in arm_folder(arm) and "@" not in arm_folder(arm)
    cfg = unit_config(_spec(tiny_data, tmp_path), tmp_path, tmp_path / "run", arm, "matched", 0)
    assert cfg["sampling_strategy"] == {"strategy": "combined", "combined_class_balance_weight": 0,
                                        "hard_negative_share": 0}
    assert cfg["training"]["schedule"] == "matched" and cfg["gate"] == {"fine_tune_from": "latest"}
    # a point is the model after exactly its budget (the last epoch) unless --epoch-val asks for the best epoch
    assert cfg["training"]["extra"]["val"] is False
    assert unit_config(_spec(tiny_data, tmp_path, epoch_val=True), tmp_path, tmp_path / "run", arm, "matched",
                       0)["training"]["extra"]["val"] is True
    with pytest.raises(SimulationError, match=r"'hard_negative_share' is not key=value"):
        check_spec(_spec(tiny_data, tmp_path, arms=["random", "combined@hard_negative_share"]))
    with pytest.raises(SimulationError, match=r"--arms: \['coreset@x=1'\] unknown"):
        check_spec(_spec(tiny_data, tmp_path, arms=["coreset@x=1"]))


def test_matched_schedule_gives_every_fine_tune_the_same_batches_from_the_baseline(tmp_path, tiny_data):
    from al.core.config import load_config
    from al.core.paths import RunPaths
    from al.steps import retrain
    from tests.conftest import make_config, step_context

    def ctx_for(**kw):
        cfg = load_config(make_config(tmp_path, tiny_data, training__batch=16, training__epochs_increment=10, **kw))
        paths = RunPaths(cfg.run_dir)
        for v, n in ((0, 64), (2, 96), (3, 160)):
            store.write_json(paths.dataset_version(v) / "version.json", {"id": str(v), "counts": {"train": n}})
        return step_context(cfg)

    chained = ctx_for()
    assert retrain.fine_tune_epochs(chained, 3) == 10 and retrain.source_iteration(chained, 3) == 2
    matched = ctx_for(training__schedule="matched")
    assert retrain.matched_steps(matched) == 10 * 4  # epochs_increment epochs of the 64 seed images
    assert retrain.fine_tune_epochs(matched, 2) == 7  # 96 images: 6 batches an epoch, 40 batches -> 7 epochs
    assert retrain.fine_tune_epochs(matched, 3) == 4  # 160 images: 10 batches an epoch
    assert retrain.source_iteration(matched, 3) == 0  # from the baseline, not the previous round
    assert retrain.fine_tune_epochs(ctx_for(training__schedule="matched", training__matched_steps=30), 2) == 5




def _rows(seed, arm, maps, images=(16, 32, 64, 128), per_box=3, edits_per_pick=2):
    return [{"seed": seed, "protocol": "converged", "arm": arm, "round": k, "labelled_images": n,
             "labelled_boxes": n * per_box, "test_map50_95": m, "added_images": n - images[k - 1] if k else 0,
             "added_boxes": (n - images[k - 1]) * per_box if k else 0,
             "annotator_edits": (n - images[k - 1]) * edits_per_pick if k else 0, "train_epochs": 20,
             "stopped_early": True} for k, (n, m) in enumerate(zip(images, maps))]


def _units(arms: dict, seeds=(0, 1, 2), upper=0.5, checks=None):
    units = {}
    for s in seeds:
        for arm, maps in arms.items():
            units[f"{s}/converged/{arm}"] = {"rows": _rows(s, arm, maps), "seconds": 1.0}
        units[f"{s}/converged/@upper"] = {"row": {"test_map50_95": upper, "labelled_images": 316,
                                                 "labelled_boxes": 948, "train_epochs": 30}, "seconds": 1.0}
    for key, m in (checks or {}).items():
        units[key] = {"row": {"test_map50_95": m, "train_epochs": 20, "epoch_cap": 120}, "seconds": 1.0}
    return units


def test_summary_of_known_curves_gives_labels_to_the_upper_bound_and_verdicts(tmp_path, tiny_data):
    from al.report.simulation import markdown
    from al.sim.summary import summarize

    spec = _spec(tiny_data, tmp_path, arms=["random", "entropy", "diversity"], seeds=[0, 1, 2],
                 protocols=["converged"], budgets=[16, 32, 64], check_seeds=0)
    rand = [0.2, 0.3, 0.4, 0.46]
    units = _units({"random": rand, "entropy": [0.2, 0.35, 0.45, 0.48], "diversity": rand})
    g = summarize(units, spec)["converged"]["groups"]["tuning"]
    ent = g["arms"]["entropy"]
    # entropy reaches 90 % of the upper bound (0.45) at 64 images; random between 64 (0.40) and 128 (0.46)
    need_r = 64 + 0.05 / 0.06 * 64
    assert ent["reach"]["images@0.90"][0]["labels"] == pytest.approx(64)
    assert g["arms"]["random"]["reach"]["images@0.90"][0]["labels"] == pytest.approx(need_r)
    sv = ent["vs"]["random"]["savings"]["images@0.90"]
    assert sv["saving"]["mean"] == pytest.approx(1 - 64 / need_r) and sv["saving"]["n"] == 3
    # random never reaches 95 % (0.475): entropy's saving there is a lower bound, not a number made up
    assert ent["vs"]["random"]["savings"]["images@0.95"]["seeds"]["lower_bound"] == [0, 1, 2]
    auc = ent["vs"]["random"]["auc"]["images"]  # the same gain on every seed: an interval of one point above 0
    assert auc["verdict"] == "better" and auc["t"]["low"] == auc["t"]["high"] > 0 and auc["sign"]["wins"] == 3
    # the null check: an arm identical to random differs by exactly 0 and shows no difference
    div = g["arms"]["diversity"]["vs"]["random"]
    assert div["auc"]["images"]["t"]["mean"] == 0.0 and div["auc"]["images"]["verdict"] == "no difference"
    assert div["savings"]["images@0.90"]["saving"]["mean"] == pytest.approx(0.0)
    assert "entropy" not in g["arms"]["random"]["vs"]  # random is only the reference
    md = markdown({"settings": spec.settings(), "wall_seconds_this_call": 1.0, "unit_seconds": {"a": 1.0},
                   "machine": "m", "seeds": {"overlap": {"max": 0.0, "mean": 0.0, "pairs": 3}},
                   "protocols": summarize(units, spec)}, spec.arms)
    assert "| entropy vs random |" in md and "did not run for this protocol" in md
    assert "goal" not in md.lower() and "issue" not in md.lower()


def test_summary_is_inconclusive_for_untrained_flat_or_compute_limited_points(tmp_path, tiny_data):
    from al.sim.summary import summarize

    spec = _spec(tiny_data, tmp_path, arms=["random", "entropy"], seeds=[0, 1, 2], protocols=["converged"],
                 budgets=[16, 32, 64], check_seeds=2)
    # an arm that learned nothing: under the floor, whatever the differences
    low = _units({"random": [0.01, 0.012, 0.011, 0.013], "entropy": [0.01, 0.02, 0.03, 0.04]}, upper=0.03)
    got = summarize(low, spec)["converged"]["groups"]["tuning"]["arms"]["entropy"]["vs"]["random"]
    assert got["auc"]["images"]["verdict"] == "inconclusive" and "did not learn" in got["auc"]["images"]["reason"]
    # random flat: its last point is no higher than its first
    flat = _units({"random": [0.3, 0.31, 0.29, 0.3], "entropy": [0.3, 0.35, 0.4, 0.45]})
    got = summarize(flat, spec)["converged"]["groups"]["tuning"]["arms"]["entropy"]["vs"]["random"]
    assert got["auc"]["images"]["verdict"] == "inconclusive" and "flat" in got["auc"]["images"]["reason"]
    # twice the training raises random's points far past the retraining noise: compute-limited
    rand = [0.2, 0.3, 0.4, 0.46]
    checks = {}
    for s in (0, 1):
        for which, m in (("first", 0.2), ("last", 0.46)):
            checks[f"{s}/converged/@check_{which}_x1"] = m + 0.002
            checks[f"{s}/converged/@check_{which}_x2"] = m + 0.1
    limited = summarize(_units({"random": rand, "entropy": [0.2, 0.35, 0.45, 0.48]}, checks=checks), spec)
    chk = limited["converged"]["checks"]
    assert chk["measured"] and chk["compute"]["limited"] and chk["noise"]["n"] == 4
    got = limited["converged"]["groups"]["tuning"]["arms"]["entropy"]["vs"]["random"]
    assert got["auc"]["images"]["verdict"] == "inconclusive" and "compute-limited" in got["auc"]["images"]["reason"]
    # the same check with doubled training within the noise: converged, and the verdict stands
    for k in checks:
        if k.endswith("_x2"):
            checks[k] -= 0.099
    ok = summarize(_units({"random": rand, "entropy": [0.2, 0.35, 0.45, 0.48]}, checks=checks), spec)
    assert not ok["converged"]["checks"]["compute"]["limited"]
    assert ok["converged"]["groups"]["tuning"]["arms"]["entropy"]["vs"]["random"]["auc"]["images"]["verdict"] != \
        "inconclusive"


def test_a_drawn_seed_set_holds_every_class_the_block_has():
    import random as rnd
    import tempfile

    from al.sim.data import cover_classes
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "images"
        tmp.mkdir()
        (Path(d) / "labels").mkdir()
        def mk(name, classes):
            p = tmp / f"{name}.jpg"
            p.write_bytes(b"")
            (Path(d) / "labels" / f"{name}.txt").write_text("".join(f"{c} 0.5 0.5 0.1 0.1\n" for c in classes))
            return str(p)
        drawn = [mk("a", [0]), mk("b", [0, 1]), mk("c", [0])]
        rare = mk("r", [2])
        source = [*drawn, rare, mk("d", [1])]
        got = cover_classes(drawn, source, 3, rnd.Random(0))
        assert rare in got and len(got) == 3 and str(tmp / "b.jpg") in got  # b is the only holder of class 1
        assert cover_classes(drawn, drawn, 3, rnd.Random(0)) == sorted(drawn)  # the block lacks class 2
