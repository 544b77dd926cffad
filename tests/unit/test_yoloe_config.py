"""Seed 004's YOLOE keys (model.target, model.text_encoder, per-class prompts under prompts:), the prompt versions
(al.core.prompts) and the deterministic stand-in encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from al.core import prompts, store
from al.core.config import ConfigError, load_config

NAMES = ["detail", "elevation", "title"]


def _data(tmp_path: Path) -> Path:
    d = tmp_path / "data.yaml"
    d.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images", "names": NAMES}))
    return d


SEED_MODEL_AND_PROMPTS = """
dataset:
  data_yaml: data.yaml
model:
  baseline: yolo26n.yaml
  target: yoloe-26n.yaml
  type: yoloe-26-nano
{encoder}
training:
  strategy: fine_tune
prompts:
  source: prompts/ca_ncs.json       # Initial prompt file
  detail: "A detail callout..."
  elevation: "An elevation marker..."
  {title_key}: "A title block..."
"""


def _seed(tmp_path: Path, *, encoder: str = "  text_encoder: deterministic", title_key: str = "title") -> Path:
    _data(tmp_path)
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "ca_ncs.json").write_text(json.dumps({"detail": "a detail bubble"}))
    p = tmp_path / "al_config.yaml"
    p.write_text(SEED_MODEL_AND_PROMPTS.format(encoder=encoder, title_key=title_key))
    return p


def test_seed_keys_load_with_prompts_directly_under_prompts(tmp_path):
    cfg = load_config(_seed(tmp_path))
    assert cfg.model.target == "yoloe-26n.yaml" and cfg.model.type == "yoloe-26-nano"
    assert cfg.model.text_encoder == "deterministic" and cfg.training.strategy == "fine_tune"
    assert cfg.prompts.texts == {"detail": "A detail callout...", "elevation": "An elevation marker...",
                                 "title": "A title block..."}
    assert cfg.prompts.source == tmp_path / "prompts" / "ca_ncs.json"


def test_a_prompt_key_that_is_no_class_is_refused_with_its_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_seed(tmp_path, title_key="titel"))
    msg = str(e.value)
    assert ":15: key 'prompts.titel': not a class of" in msg and "'title'" in msg and "typo" in msg


def test_a_typo_elsewhere_in_model_stays_refused(tmp_path):
    p = _seed(tmp_path)
    p.write_text(p.read_text().replace("  target:", "  targt:"))
    with pytest.raises(ConfigError, match=r"unknown key 'model.targt'"):
        load_config(p)


def test_missing_text_encoder_names_the_key_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_seed(tmp_path, encoder=""))
    msg = str(e.value)
    assert "key 'model.text_encoder' is not set" in msg and "mobileclip2_b.ts" in msg
    assert "https://github.com/ultralytics/assets/releases/download/v8.4.0/mobileclip2_b.ts" in msg
    assert "never downloads" in msg and msg.count("\n") == 0


def test_a_text_encoder_file_that_is_absent_is_refused_with_its_resolved_path(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_seed(tmp_path, encoder="  text_encoder: enc/mobileclip2_b.ts"))
    msg = str(e.value)
    assert f"expected the file {tmp_path / 'enc' / 'mobileclip2_b.ts'}" in msg and "Download mobileclip2_b.ts" in msg


def test_yoloe_11_targets_name_their_own_encoder(tmp_path):
    p = _seed(tmp_path, encoder="")
    p.write_text(p.read_text().replace("yoloe-26n.yaml", "yoloe-11s.yaml"))
    with pytest.raises(ConfigError, match="mobileclip_blt.ts"):
        load_config(p)


def test_a_target_that_is_not_yoloe_is_refused(tmp_path):
    p = _seed(tmp_path)
    p.write_text(p.read_text().replace("yoloe-26n.yaml", "yolo26n.yaml"))
    with pytest.raises(ConfigError, match="expected a YOLOE model YAML"):
        load_config(p)


def test_prompts_source_with_an_unknown_class_is_refused(tmp_path):
    p = _seed(tmp_path)
    (tmp_path / "prompts" / "ca_ncs.json").write_text(json.dumps({"detial": "x"}))
    with pytest.raises(ConfigError, match=r"key 'prompts.source'.*\['detial'\] are not classes"):
        load_config(p)


def test_prompt_version_uses_class_names_for_missing_texts_and_refuses_bad_files(tmp_path):
    f = tmp_path / "prompts_iteration_00.json"
    store.write_json(f, {"iteration": 0, "texts": {"title": "a title block"}})
    v = prompts.load_version(f, NAMES)
    assert v["used"] == ["detail", "elevation", "a title block"] and v["from_name"] == ["detail", "elevation"]
    store.write_json(f, {"iteration": 0, "texts": {"titel": "a title block"}})
    with pytest.raises(prompts.PromptError, match=r"prompts_iteration_00.json: key 'texts': \['titel'\]"):
        prompts.load_version(f, NAMES)
    f.write_text("{not json")
    with pytest.raises(prompts.PromptError, match="not valid JSON"):
        prompts.load_version(f, NAMES)


def test_suggestions_propose_prompt_edits_and_accept_applies_one(tmp_path):
    errors = [{"kind": "fn", "cls": 2, "size": "small", "position": "center", "contrast": 0.5},
              {"kind": "fn", "cls": 2, "size": "small", "position": "edge", "contrast": 0.5},
              {"kind": "fn", "cls": 0, "size": "small", "position": "center", "contrast": 0.5},
              {"kind": "fn", "cls": 1, "size": "large", "position": "center", "contrast": 0.5}]
    texts = {"title": "a title block."}
    small = {"evidence": {"fn_small": 3, "fn_total": 4}}
    assert prompts.propose(small, errors, texts, NAMES) == {
        "title": "a title block, small, only a few pixels across", "detail": "detail, small, only a few pixels across"}
    fp = {"evidence": {"class": "elevation", "fp": 4, "precision": 0.2}}
    assert prompts.propose(fp, errors, texts, NAMES) == {
        "elevation": "elevation, not background clutter or look-alike shapes"}
    assert prompts.propose({"evidence": {"something": 1}}, errors, texts, NAMES) == {}
    f = tmp_path / "v.json"
    store.write_json(f, {"iteration": 1, "texts": texts, "suggestions": [
        {"finding": "x", "prompt_edit": {}}, {"finding": "y", "prompt_edit": {"elevation": "an elevation mark"}}]})
    with pytest.raises(prompts.PromptError, match="proposes no prompt edit"):
        prompts.accept(f, 0)
    assert prompts.accept(f, 1) == {"elevation": "an elevation mark"}
    out = store.read_json(f)
    assert out["texts"] == {"title": "a title block.", "elevation": "an elevation mark"}
    assert out["suggestions"][1]["accepted"] is True and "accepted" not in out["suggestions"][0]


def test_hashing_encoder_is_deterministic_unit_norm_and_separates_texts():
    torch = pytest.importorskip("torch")
    from al.yolo.yoloe import HashingTextEncoder, encoder_info

    enc = HashingTextEncoder()
    a = enc.encode_text(enc.tokenize(["A detail callout", "a title block", "A detail callout"]))
    assert a.shape == (3, 512) and torch.allclose(a.norm(dim=1), torch.ones(3))
    assert torch.equal(a[0], a[2]) and float(a[0] @ a[1]) < 0.5
    assert torch.equal(a, HashingTextEncoder().encode_text(enc.tokenize(["A detail callout", "a title block",
                                                                          "A detail callout"])))
    info = encoder_info(enc)
    assert info["semantic"] is False and "no language understanding" in info["note"]
