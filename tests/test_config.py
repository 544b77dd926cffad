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
    assert cfg.training.imgsz == 64 and cfg.sampling_strategy.class_balance_weight == 0.3


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
    p = _write(tmp_path, yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and needle in msg
    if section != "training" or key != "imgsz":
        assert f"'{section}.{key}'" in msg and repr(value) in msg


def test_missing_files_and_sections(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="key 'dataset' is required"):
        load_config(_write(tmp_path, "training: {}\n"))
    with pytest.raises(ConfigError, match=r"'dataset.data_yaml' = .*nope.yaml.*not found"):
        load_config(_write(tmp_path, "dataset:\n  data_yaml: nope.yaml\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: not valid YAML"):
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

    root = Path(__file__).resolve().parent.parent
    for name in ("al_config.yaml", "demo.yaml"):
        cfg = load_config(root / "config" / name, check_files=False)
        assert cfg.dataset.data_yaml.name == "data.yaml"


def test_strategy_default_follows_mining_source(tmp_path, tiny_data):
    assert load_config(make_config(tmp_path, tiny_data)).sampling_strategy.strategy == "fn_weighted"
    pool = load_config(make_config(tmp_path, tiny_data, dataset__mining_source="pool"))
    assert pool.sampling_strategy.strategy == "combined"
    asked = load_config(make_config(tmp_path, tiny_data, sampling_strategy={"strategy": "entropy"}))
    assert asked.sampling_strategy.strategy == "entropy"
