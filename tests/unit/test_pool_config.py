"""The pool: section (pool.engine local | ray) and its errors."""

from __future__ import annotations

import sys

import pytest

from al.core.config import ConfigError, load_config
from tests.conftest import make_config


def test_pool_defaults_and_relative_temp_dir(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data))
    assert cfg.pool.engine == "local" and cfg.pool.shard_size == 256 and cfg.pool.batch is None
    assert cfg.pool.ray.address is None and cfg.pool.ray.num_workers == 2 and cfg.pool.ray.hash_on == "auto"
    cfg = load_config(make_config(tmp_path, tiny_data, pool={"ray": {"temp_dir": "r"}}))
    assert cfg.pool.ray.temp_dir == (tmp_path / "r").resolve()


def test_pool_keys_are_checked_with_file_and_line(tmp_path, tiny_data):
    path = make_config(tmp_path, tiny_data, pool={"engine": "dask"})
    with pytest.raises(ConfigError, match=r"key 'pool.engine' = 'dask'") as e:
        load_config(path)
    assert f"{path}:" in str(e.value)
    with pytest.raises(ConfigError, match=r"unknown key 'pool.ray.workers'"):
        load_config(make_config(tmp_path, tiny_data, pool={"ray": {"workers": 4}}))
    with pytest.raises(ConfigError, match=r"key 'pool.ray.num_workers' = 0"):
        load_config(make_config(tmp_path, tiny_data, pool={"ray": {"num_workers": 0}}))


def test_engine_ray_without_ray_installed_names_the_key_and_the_install(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like to find_spec
    path = make_config(tmp_path, tiny_data, pool={"engine": "ray"})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "pool.engine" in msg and "pip install -e '.[ray]'" in msg and f"{path}:" in msg
    assert load_config(make_config(tmp_path, tiny_data, pool={"engine": "local"})).pool.engine == "local"


def test_engine_ray_with_ray_installed_loads(tmp_path, tiny_data):
    pytest.importorskip("ray")
    assert load_config(make_config(tmp_path, tiny_data, pool={"engine": "ray"})).pool.engine == "ray"
