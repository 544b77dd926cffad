"""The review section of the config: defaults, path resolution, and cross-checks with clear errors."""

from __future__ import annotations

import pytest
import yaml

from al.core.config import ConfigError, load_config
from tests.conftest import make_config


def _load(tmp_path, tiny_data, review):
    cfg = yaml.safe_load(make_config(tmp_path, tiny_data).read_text())
    cfg["review"] = review
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p, load_config(p)


def test_defaults_are_local_and_offline(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data))
    r = cfg.review
    assert r.backend == "local" and r.pre_annotation_conf is None and r.near_duplicate_distance == 5
    assert r.local.make_zip and r.local.import_from is None
    assert r.roboflow.version == "newest" and r.roboflow.api_key_env == "ROBOFLOW_API_KEY"
    assert r.roboflow.secrets_file is None and r.roboflow.max_retries == 5


def test_paths_resolve_against_the_config_file(tmp_path, tiny_data):
    (tmp_path / "secrets").write_text("k\n")
    (tmp_path / "guide.md").write_text("Box the whole digit.\n")
    _, cfg = _load(tmp_path, tiny_data, {"backend": "roboflow", "local": {"import_from": "back", "guidelines":
                                                                          "guide.md"},
                                         "roboflow": {"project": "p", "secrets_file": "secrets", "version": 3,
                                                      "api_url": "http://127.0.0.1:1/"}})
    assert cfg.review.roboflow.secrets_file == (tmp_path / "secrets").resolve()
    assert cfg.review.local.import_from == (tmp_path / "back").resolve()
    assert cfg.review.roboflow.version == 3 and cfg.review.roboflow.api_url == "http://127.0.0.1:1"


@pytest.mark.parametrize("review,needle", [
    ({"backend": "roboflow"}, "backend 'roboflow' needs review.roboflow.project"),
    ({"backend": "cloud"}, "'review.backend' = 'cloud'"),
    ({"roboflow": {"project": "p", "api_key_env": "rf-ABC123secret"}}, "is not an environment variable name"),
    ({"roboflow": {"project": "ws/p"}}, "must be the bare slug"),
    ({"roboflow": {"project": "p", "api_url": "api.example.com"}}, "must start with http:// or https://"),
    ({"roboflow": {"project": "p", "version": 0}}, "version 0 must be 1 or more"),
    ({"roboflow": {"project": "p", "version": "latest"}}, "review.roboflow.version"),
    ({"roboflow": {"project": "p", "apikey": "x"}}, "unknown key 'review.roboflow.apikey'"),
    ({"roboflow": {"project": "p", "class_mapping": {"a": ""}}}, "class_mapping has empty names"),
    ({"backend": "roboflow", "roboflow": {"project": "p", "secrets_file": "absent.env"}},
     "'review.roboflow.secrets_file' = "),
    ({"near_duplicate_distance": 99}, "less than or equal to 32"),
])
def test_bad_review_settings_are_clear(tmp_path, tiny_data, review, needle):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, tiny_data, review)
    assert needle in str(e.value) and str(tmp_path / "c.yaml") in str(e.value)
