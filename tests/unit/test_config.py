import pytest
import yaml

from al.cli import main
from al.core.config import ConfigError, load_config
from tests.conftest import make_config


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_valid_config_resolves_paths_against_its_folder(tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_config(make_config(tmp_path, tiny_data))
    assert cfg.run_dir == (tmp_path / "run").resolve()
    assert cfg.dataset.combined_dir == (tmp_path / "combined").resolve()


def test_training_values_from_the_file_reach_the_training_child(tmp_path, tiny_data):
    """What the training child hands Ultralytics (retrain.train_spec) is what the file says, per iteration."""
    from al.core.paths import RunPaths
    from al.steps.retrain import train_spec
    from tests.conftest import step_context

    training = {"epochs_base": 7, "epochs_increment": 3, "base_lr": 0.01, "lr_decay_factor": 0.25, "imgsz": 96,
                "batch": 4, "patience": 5, "optimizer": "SGD", "device": "cpu", "workers": 1, "seed": 11,
                "extra": {"mosaic": 0.0}}
    cfg = load_config(make_config(tmp_path, tiny_data, training=training))
    base, third = train_spec(step_context(cfg), 0), train_spec(step_context(cfg), 2)
    assert (base["epochs"], third["epochs"]) == (7, 3)
    assert base["lr0"] == 0.01 and third["lr0"] == pytest.approx(0.01 * 0.25 ** 2)
    for key in ("imgsz", "batch", "patience", "optimizer", "device", "workers", "seed", "extra"):
        assert base[key] == third[key] == training[key], key
    assert base["model"] == "yolov8n.yaml" and third["model"] == str(RunPaths(cfg.run_dir).best(1))


def test_unknown_key_names_file_line_and_key(tmp_path, tiny_data):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining:\n  epochs_bse: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:4:" in msg and "unknown key 'training.epochs_bse'" in msg and "\n" not in msg


@pytest.mark.parametrize("section,key,value,needle", [
    ("training", "batch", 0, "greater than or equal to 1"),
    ("training", "imgsz", 100, "not a multiple of 32"),
    ("active_learning", "target_f1", 1.5, "less than or equal to 1"),
    ("active_learning", "max_iterations", "many", "valid integer"),
    ("dataset", "mining_source", "test", "'val' or 'pool'"),
])
def test_bad_values_name_key_value_and_range(tmp_path, tiny_data, section, key, value, needle):
    cfg = yaml.safe_load(make_config(tmp_path, tiny_data).read_text())
    cfg[section][key] = value
    text = yaml.safe_dump(cfg)
    p = _write(tmp_path, text)
    lines = text.splitlines()
    line = next(i for i, ln in enumerate(lines, 1) if ln.startswith(f"  {key}:") and i > lines.index(f"{section}:"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: ") and needle in msg
    assert f"'{section}.{key}'" in msg and repr(value) in msg  # model-level validators name their key too


def test_missing_files_and_sections(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="key 'dataset' is required"):
        load_config(_write(tmp_path, "training: {}\n"))
    with pytest.raises(ConfigError, match=r"'dataset.data_yaml' = .*nope.yaml.*not found"):
        load_config(_write(tmp_path, "dataset:\n  data_yaml: nope.yaml\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: not valid YAML: the '\[' opened on this line is not closed"):
        load_config(_write(tmp_path, "dataset:\n  data_yaml: [oops\n"))
    with pytest.raises(ConfigError, match="mining_source' = 'pool' needs dataset.pool_dir"):
        load_config(_write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\n  mining_source: pool\n"))
    with pytest.raises(ConfigError, match="training.extra sets \\['epochs'\\]"):
        load_config(_write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining:\n  extra: {{epochs: 3}}\n"))


def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_data, capsys):
    cfg = yaml.safe_load(make_config(tmp_path, tiny_data).read_text())
    cfg["training"]["batchsize"] = 4
    p = _write(tmp_path, yaml.safe_dump(cfg))
    assert main(["--config", str(p), "--headless"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.batchsize" in err[0]
    assert not (tmp_path / "run").exists()


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in ("al_config.yaml", "demo.yaml"):
        cfg = load_config(root / "config" / name, check_files=False)
        assert cfg.dataset.data_yaml.name == "data.yaml"


def test_strategy_default_follows_mining_source(tmp_path, tiny_data):
    assert load_config(make_config(tmp_path, tiny_data)).sampling_strategy.strategy == "fn_weighted"
    pool = load_config(make_config(tmp_path, tiny_data, dataset__mining_source="pool"))
    assert pool.sampling_strategy.strategy == "combined"
    asked = load_config(make_config(tmp_path, tiny_data, sampling_strategy={"strategy": "entropy"}))
    assert asked.sampling_strategy.strategy == "entropy"


def test_duplicate_key_is_refused_naming_both_lines(tmp_path, tiny_data):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining:\n  epochs_base: 5\n  batch: 4\n"
                         f"  epochs_base: 7\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:6: key 'training.epochs_base' is given twice (lines 4 and 6)" in msg and "Remove one" in msg


def test_duplicate_top_level_section_is_refused(tmp_path, tiny_data):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining: {{batch: 4}}\ntraining: {{batch: 8}}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: key 'training' is given twice \(lines 3 and 4\)"):
        load_config(p)


def _bomb(depth: int = 9) -> str:
    """Nested aliases under a real key: 9**9 (~387 million) strings once expanded."""
    lines = ["    l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "\n".join(lines)


def test_alias_bomb_is_refused_quickly(tmp_path, tiny_data):
    import time

    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining:\n  extra:\n{_bomb()}\n"
                         f"model:\n  baseline: *a8\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert time.perf_counter() - t0 < 2
    msg = str(e.value)
    assert "training.extra.l8" in msg and "YAML aliases" in msg and f"{p}:" in msg and len(msg) < len(str(p)) + 300


def test_alias_inside_its_own_anchor_is_refused(tmp_path, tiny_data):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining:\n  extra: &x {{a: [*x]}}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: a YAML alias refers to the anchor it is inside"):
        load_config(p)


def test_plain_aliases_still_work(tmp_path, tiny_data):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\ntraining:\n  epochs_base: &n 3\n"
                         f"  epochs_increment: *n\n")
    cfg = load_config(p)
    assert cfg.training.epochs_base == cfg.training.epochs_increment == 3


@pytest.mark.parametrize("body,line,key,needle", [
    ("training:\n  batch: 4\n  imgsz: 100\n", 5, "training.imgsz", "imgsz 100 is not a multiple of 32"),
    ("training:\n  extra:\n    nbs: 8\n    lr0: 0.1\n", 6, "training.extra.lr0", "which the loop controls"),
    ("sampling_strategy:\n  class_balance_weight: 0\n  size_diversity_weight: 0\n  spatial_diversity_weight: 0\n"
     "  uncertainty_weight: 0\n", 4, "sampling_strategy.class_balance_weight", "all four fn_weighted weights"),
    ("review:\n  backend: roboflow\n", 4, "review.backend", "needs review.roboflow.project"),
    ("review:\n  roboflow:\n    api_key_env: my key\n", 5, "review.roboflow.api_key_env", "not an environment"),
    ("sampling_strategy:\n  strategy: combined\n  combined_uncertainty_weight: 0\n  combined_diversity_weight: 0\n"
     "  combined_class_balance_weight: 0\n", 5, "sampling_strategy.combined_uncertainty_weight",
     "all three combined_* weights 0"),
    ("  mining_source: pool\n  pool_dir: .\nsampling_strategy:\n  combined_diversity_weight: 0\n"  # pool: combined
     "  combined_uncertainty_weight: 0\n  combined_class_balance_weight: 0\n", 7,
     "sampling_strategy.combined_uncertainty_weight", "all three combined_* weights 0"),
    ("review:\n  local:\n    class_mapping:\n      cat: ''\n", 6, "review.local.class_mapping.cat",
     "class_mapping has empty names"),
    ("review:\n  roboflow:\n    project: p\n    class_mapping: {a: ''}\n", 6, "review.roboflow.class_mapping.a",
     "class_mapping has empty names"),
    ("review:\n  roboflow:\n    project: p\n    api_url: api.example.com\n", 6, "review.roboflow.api_url",
     "must start with http"),
    ("review:\n  roboflow:\n    workspace: me/ws\n", 5, "review.roboflow.workspace", "must be the bare slug"),
    ("review:\n  roboflow:\n    project: ws/p\n", 5, "review.roboflow.project", "must be the bare slug"),
    ("review:\n  roboflow:\n    project: p\n    version: 0\n", 6, "review.roboflow.version", "must be 1 or more"),
])
def test_model_validator_errors_name_the_key_and_its_line(tmp_path, tiny_data, body, line, key, needle):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\n{body}")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: key '{key}'") and needle in msg
    assert "{" not in msg.split(needle)[0]  # the section is not dumped


def test_error_values_are_shown_bounded(tmp_path, tiny_data):
    p = _write(tmp_path, f"dataset:\n  data_yaml: {tiny_data}\nmodel:\n  baseline: [{', '.join(['x' * 50] * 200)}]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "model.baseline" in str(e.value) and len(str(e.value)) < len(str(p)) + 300
