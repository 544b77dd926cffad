"""The Label Studio backend's pure parts: the labelling config, pre-annotations in percent, annotations back to
normalised boxes (rotation, unknown classes), the token's sources, and the server's credentials."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from al.app import label_studio as server
from al.core.config import LabelStudioReviewConfig
from al.review import ReviewError
from al.review import label_studio as ls

NAMES = ["zero", "one", 'a "quoted" <class> & more']


def test_label_config_holds_the_classes_in_order_and_reads_back():
    xml = ls.label_config(NAMES)
    assert ls.config_classes(xml) == (ls.CONTROL, ls.IMAGE, NAMES)
    assert ls.config_classes("<View><Image name='i' value='$image'/></View>") is None
    assert ls.config_classes("<View><broken") is None


def test_prediction_is_in_percent_with_scores_and_drops_low_or_degenerate_boxes():
    rec = {"width": 200, "height": 100, "pred": [[1, 0.9, 20, 10, 60, 50], [0, 0.1, 0, 0, 10, 10],
                                                 [0, 0.8, 5, 5, 5, 9], [0, 0.7, -10, 90, 210, 120]]}
    [pred] = ls.prediction(rec, NAMES, 0.25, "v")
    res = pred["result"]
    assert len(res) == 2 and pred["score"] == pytest.approx((0.9 + 0.7) / 2)
    v = res[0]["value"]
    assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx((10, 10, 20, 40))
    assert v["rectanglelabels"] == ["one"] and res[0]["score"] == 0.9
    assert res[0]["original_width"] == 200 and res[0]["original_height"] == 100
    v = res[1]["value"]  # clipped to the image
    assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx((0, 90, 100, 10))
    assert ls.prediction(None, NAMES, 0.25, "v") == [] and ls.prediction({**rec, "pred": []}, NAMES, 0.2, "v") == []


def _box(label, x, y, w, h, rotation=0.0, ow=200, oh=100):
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": ow,
            "original_height": oh, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                                             "rectanglelabels": [label]}}


def test_annotation_results_become_normalised_boxes():
    task = {"id": 7, "data": {"al_name": "a.jpg"}}
    ann = {"id": 3, "result": [_box("one", 10, 20, 30, 40), _box("zero", 90, 90, 20, 20),
                               {"type": "relation", "from_id": "a", "to_id": "b"}, _box("zero", 120, 5, 5, 5)]}
    problems: list[str] = []
    boxes, rotated = ls._boxes(task, ann, NAMES, problems)
    assert problems == [] and rotated == 0
    np.testing.assert_allclose(boxes, [[1, 0.1, 0.2, 0.4, 0.6], [0, 0.9, 0.9, 1.0, 1.0]])


def test_a_rotated_box_becomes_its_upright_bounding_box():
    # 90 degrees around the top-left corner (pixels): a 40x20 box at (100, 40) covers x 80..100, y 40..80
    problems: list[str] = []
    boxes, rotated = ls._boxes({"id": 1}, {"id": 1, "result": [_box("zero", 50, 40, 20, 20, 90)]}, NAMES, problems)
    assert rotated == 1 and problems == []
    np.testing.assert_allclose(boxes, [[0, 0.4, 0.4, 0.5, 0.8]], atol=1e-9)


def test_unknown_labels_and_multi_label_boxes_are_problems_naming_the_task():
    problems: list[str] = []
    bad = _box("ten", 1, 1, 5, 5)
    two = _box("zero", 1, 1, 5, 5)
    two["value"]["rectanglelabels"] = ["zero", "one"]
    boxes, _ = ls._boxes({"id": 9, "data": {"al_name": "b.jpg"}}, {"id": 4, "result": [bad, two]}, NAMES, problems)
    assert len(boxes) == 0 and len(problems) == 2
    assert "task 9 (b.jpg)" in problems[0] and "'ten' is not a class" in problems[0]
    assert "2 labels" in problems[1]


def test_the_token_comes_from_the_variable_then_the_secrets_file(tmp_path, monkeypatch):
    monkeypatch.delenv("AL_TEST_LS", raising=False)
    f = tmp_path / "ls.env"
    f.write_text("# mine\nAL_TEST_LS=abc123secret\n")
    os.chmod(f, 0o600)
    cfg = LabelStudioReviewConfig(api_key_env="AL_TEST_LS", secrets_file=f)
    tok = ls.load_token(cfg)
    assert tok.value == "abc123secret" and "secrets file" in tok.where
    assert "abc123secret" not in repr(tok) and "abc123secret" not in str(tok)
    assert tok.scrub("x abc123secret y") == "x *** y"
    monkeypatch.setenv("AL_TEST_LS", "fromenv99")
    assert ls.load_token(cfg).value == "fromenv99"
    monkeypatch.delenv("AL_TEST_LS")
    f.write_text("OTHER=1\nMORE=2\n")
    with pytest.raises(ReviewError, match="no Label Studio token found"):
        ls.load_token(cfg)
    with pytest.raises(ReviewError, match="set the environment variable AL_TEST_LS"):
        ls.load_token(LabelStudioReviewConfig(api_key_env="AL_TEST_LS"))


def test_config_refuses_a_bad_url_env_name_or_title():
    for bad in ({"url": "127.0.0.1:8080"}, {"api_key_env": "my token"}, {"project": " "}, {"project": "x" * 51}):
        with pytest.raises(ValueError):
            LabelStudioReviewConfig(**bad)
    assert LabelStudioReviewConfig(url="http://h:1/").url == "http://h:1"


def test_server_credentials_generate_a_token_into_a_private_secrets_file(tmp_path, monkeypatch):
    monkeypatch.delenv("AL_TEST_LS", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_PASSWORD", raising=False)
    f = tmp_path / "secrets" / "ls.env"
    cfg = LabelStudioReviewConfig(api_key_env="AL_TEST_LS", secrets_file=f)
    c = server.credentials(cfg)
    assert c.token_generated and len(c.token) == 40 and c.password_generated and c.password
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.read_text() == f"AL_TEST_LS={c.token}\n"
    assert c.token not in repr(c) and c.password not in repr(c)
    again = server.credentials(cfg)  # the same token on the next start: the server keeps its first one
    assert again.token == c.token and not again.token_generated
    env = server.server_env(c, tmp_path / "data", cfg)
    assert env["LABEL_STUDIO_USER_TOKEN"] == c.token and env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_LATEST_VERSION_CHECK"] == "false" and env["LABEL_STUDIO_SENTRY_DSN"] == ""
    assert "AL_TEST_LS" not in env


def test_the_local_server_is_served_on_127_0_0_1_only():
    assert server.bind_address("http://127.0.0.1:8123") == ("127.0.0.1", 8123)
    assert server.bind_address("http://localhost:9000/") == ("127.0.0.1", 9000)
    for bad in ("https://127.0.0.1:8080", "http://0.0.0.0:8080", "http://example.com:8080", "http://127.0.0.1:8/x"):
        with pytest.raises(server.LabelStudioError, match="review.label_studio.url"):
            server.bind_address(bad)
