"""The review section of the config: its values reach the review step, path resolution, and cross-checks with
clear errors."""

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


def test_review_values_from_the_file_reach_the_review_step(tmp_path, tiny_data):
    """Without a review section a manual review asks for the local package; what the file sets reaches the step:
    the pre-annotation threshold (unset: validation.conf), the zip, the import folder."""
    from al.review import pre_annotation_conf
    from al.steps.review import review_info
    from tests.conftest import step_context

    plain = step_context(load_config(make_config(tmp_path, tiny_data, validation={"conf": 0.3})))
    info = review_info(plain, [])
    assert info["backend"] == "local" and "roboflow" not in info and info["package_zip"]
    assert pre_annotation_conf(plain) == 0.3
    p = make_config(tmp_path, tiny_data, validation={"conf": 0.3},
                    review={"pre_annotation_conf": 0.6, "local": {"make_zip": False, "import_from": "back"}})
    ctx = step_context(load_config(p))
    info = review_info(ctx, [])
    assert pre_annotation_conf(ctx) == 0.6 and info["package_zip"] is None
    assert info["import_from"] == str((tmp_path / "back").resolve())
    assert any(f"Put the corrected labels in {tmp_path.resolve() / 'back'}" in s for s in info["steps"])


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
