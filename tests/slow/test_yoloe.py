"""Seed 004's model path, really trained: a YOLO26 baseline, then a YOLOE-26 target (built from the YAML Ultralytics
ships) fine-tuned with the class prompts of prompt_versions/, a prompt edited during the review pause reaching the
next training, and predictions (post-NMS and pre-NMS) from the prompted model.

The text embeddings here come from the deterministic local hashing encoder (model.text_encoder: deterministic),
because the real MobileCLIP2 weights (mobileclip2_b.ts) are not on CI machines and the loop never downloads them:
the embeddings identify the classes but carry no meaning. test_real_text_encoder runs the real encoder when its
weights file is present (AL_TEXT_ENCODER, or mobileclip2_b.ts in Ultralytics' weights folder) and is skipped
otherwise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from al.core import artifacts, store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.paths import RunPaths
from al.data import dataset
from tests.conftest import make_config

pytestmark = pytest.mark.slow

PROMPTS = {"zero": "the handwritten digit zero", "one": "the digit one, a single stroke"}
EDITED = "an EDITED prompt: a round digit zero"


def _yoloe_config(tmp_path: Path, data_yaml: Path, **over) -> Path:
    return make_config(tmp_path, data_yaml,
                       model={"baseline": "yolo26n.yaml", "target": "yoloe-26n.yaml", "type": "yoloe-26-nano",
                              "text_encoder": "deterministic"},
                       prompts=dict(PROMPTS),
                       active_learning={"max_samples_per_iteration": 4, "review_source": "manual",
                                        "require_human_review": True, "target_f1": 0.99, "max_iterations": 3,
                                        "train_f1_sample": 4},
                       sampling_strategy={"strategy": "entropy"},
                       # fine-tune the latest model, not the gate's champion: these 1-epoch models are not promoted
                       gate={"fine_tune_from": "latest"}, **over)


def _human(edit_at: int, edited: list):
    """The human at each review pause: returns the picks' true labels (they come from the labelled validation
    split) and, at iteration `edit_at`, edits that iteration's prompt file."""
    def review(info: dict) -> bool:
        back = Path(info["returned_dir"])
        back.mkdir(parents=True, exist_ok=True)
        for p in info["picks"]:
            shutil.copy(dataset.label_path(p["image"]), back / f"{Path(p['image']).stem}.txt")
        if info["iteration"] == edit_at:
            f = Path(info["run_dir"]) / "prompt_versions" / f"prompts_iteration_{edit_at:02d}.json"
            raw = store.read_json(f)
            raw["texts"]["zero"] = EDITED
            store.write_json(f, raw)
            edited.append(f)
        return True
    return review


def _run(cfgp: Path, review, *, dry_run: bool = False, resume: bool = False, on_event=None) -> int:
    from al.app.api import open_run, run_loop

    cfg = load_config(cfgp)
    bus = Listeners(review=lambda info: review({**info, "run_dir": str(cfg.run_dir)}))
    if on_event:
        bus.subscribe(lambda ev: on_event(ev, bus))
    return run_loop(open_run(cfg, dry_run=dry_run, resume=resume, ui=bus))


def _model(path: Path):
    from ultralytics.utils.patches import torch_load

    return torch_load(str(path), map_location="cpu")["model"].float()


def _expected_pe(start_model, texts: list[str]):
    """What set_classes must hold for these prompt texts: the stand-in encoder's features through the head's own
    text projection."""
    import torch

    from al.yolo.yoloe import HashingTextEncoder, text_features

    with torch.no_grad():
        return start_model.model[-1].get_tpe(text_features(HashingTextEncoder(), texts))


def test_yolo26_baseline_then_yoloe_with_prompt_versions_and_an_edited_prompt(tmp_path, tiny_data):
    import torch
    from ultralytics.nn.tasks import DetectionModel, YOLOEModel

    cfgp = _yoloe_config(tmp_path, tiny_data)
    edited: list = []
    assert _run(cfgp, _human(edit_at=1, edited=edited)) == 0
    p = RunPaths(load_config(cfgp).run_dir)
    names = store.read_json(p.dataset_version(0) / "version.json")["names"]

    # iteration 0: a YOLO26 baseline (Detect head, NMS-free end2end), no prompts
    base = _model(p.best(0))
    assert type(base) is DetectionModel and type(base.model[-1]).__name__ == "Detect" and base.yaml["end2end"]
    assert "yoloe" not in store.read_json(p.train_spec(0))["spec"]

    # iteration 1: model.target built from yoloe-26n.yaml, the baseline's backbone and neck in it, prompts v0
    r1 = store.read_json(p.train_result(1))
    y1 = r1["spec"]["yoloe"]
    assert y1["prompt_file"] == str(p.prompts(0)) and y1["target"] == "yoloe-26n.yaml"
    assert y1["prompts"] == [PROMPTS.get(n, n) for n in names] and y1["prompts_from_name"] == names[2:]
    rep = r1["yoloe"]
    assert rep["start"] == "model.target" and rep["pretrained"] is False
    fb = rep["from_baseline"]
    assert fb["architecture"] == "DetectionModel" and max(fb["layers_whole"]) == 22  # backbone + neck
    assert fb["layers_partial"] == [23] and fb["layers_none"] == [] and 0.3 < fb["share"] < 1  # head: in part
    assert rep["encoder"] == {"kind": "deterministic-hashing", "semantic": False,
                              "note": rep["encoder"]["note"]} and "no language" in rep["encoder"]["note"]
    m1 = _model(p.best(1))
    assert isinstance(m1, YOLOEModel) and list(m1.names.values()) == names
    start1 = _model(p.yoloe_start(1))
    assert torch.allclose(m1.pe, _expected_pe(start1, y1["prompts"]), atol=1e-5)
    sd0 = base.state_dict()
    w = "model.0.conv.weight"
    assert torch.equal(start1.state_dict()[w], sd0[w]) and not torch.equal(m1.state_dict()[w], sd0[w])  # trained

    # iteration 2: fine-tuned from iteration 1's YOLOE with the prompt edited during iteration 1's review pause
    assert edited == [p.prompts(1)]
    y2 = store.read_json(p.train_result(2))["spec"]["yoloe"]
    assert y2["prompt_file"] == str(p.prompts(1)) and y2["prompts"][0] == EDITED
    assert store.read_json(p.train_result(2))["yoloe"]["start"] == "previous YOLOE model"
    m2 = _model(p.best(2))
    assert isinstance(m2, YOLOEModel)
    assert torch.allclose(m2.pe, _expected_pe(_model(p.yoloe_start(2)), y2["prompts"]), atol=1e-5)
    assert not torch.allclose(m2.pe[0, 0], m1.pe[0, 0]) and torch.allclose(m2.pe[0, 1:], m1.pe[0, 1:], atol=1e-5)
    # the next iteration's version carries the edit on
    assert store.read_json(p.prompts(2))["texts"]["zero"] == EDITED

    # validation, pre-NMS selection and review ran on the YOLOE models; each report names its prompt version
    for k in (1, 2):
        assert artifacts.load_validation(p, k).weights == str(p.best(k))
    hard = store.read_json(p.hard_examples(1))
    assert hard["strategy"] == "entropy" and hard["picks"] and hard["scan"]["images"] > 0
    reports = [store.read_json(p.iteration_report(k)) for k in (0, 1, 2)]
    assert reports[0]["prompt_version"] is None
    assert reports[1]["prompt_version"]["file"] == str(p.prompts(0))
    assert reports[2]["prompt_version"]["file"] == str(p.prompts(1))
    assert reports[2]["prompt_version"]["texts"]["zero"] == EDITED
    meta = store.read_json(p.metadata(1))["model"]
    assert meta["arch"] == "YOLOEModel" and meta["from_baseline"]["layers_partial"] == [23]
    hist = {v["iteration"]: v for v in store.read_json(p.prompt_history)["versions"]}
    assert hist[1]["trained"]["iteration"] == 2 and hist[1]["trained"]["used"][0] == EDITED
    assert hist[0]["trained"]["used"][0] == PROMPTS["zero"]
    assert "text encoder deterministic" in p.training_log(1).read_text() or \
        "NOT semantic" in p.training_log(1).read_text()


def test_an_interrupted_yoloe_training_resumes_with_its_prompts(tmp_path, tiny_data):
    """A quit during the YOLOE fine-tune's first epoch of two: --resume continues that training (Ultralytics'
    resume, through the loop's YOLOE trainer) and the model keeps the embeddings of its prompt version."""
    import torch

    from al.core.events import EpochEnd, Message

    cfgp = _yoloe_config(tmp_path, tiny_data)
    cfg = yaml.safe_load(cfgp.read_text())
    cfg["active_learning"]["max_iterations"] = 2
    cfg["training"]["epochs_increment"] = 2
    cfgp.write_text(yaml.safe_dump(cfg))
    seen = {"yoloe": False}

    def stop_in_yoloe_training(ev, bus):
        if isinstance(ev, Message) and "as YOLOE" in ev.text:
            seen["yoloe"] = True
        if seen["yoloe"] and isinstance(ev, EpochEnd) and ev.epoch == 1:
            bus.stop()

    assert _run(cfgp, _human(edit_at=-1, edited=[]), on_event=stop_in_yoloe_training) == 130
    p = RunPaths(load_config(cfgp).run_dir)
    assert p.last(1).is_file() and not p.train_result(1).is_file()
    assert _run(cfgp, _human(edit_at=-1, edited=[]), resume=True) == 0
    log = p.training_log(1).read_text()
    assert "resume =====" in log and "Resuming training" in log
    y1 = store.read_json(p.train_result(1))["spec"]["yoloe"]
    m1 = _model(p.best(1))
    assert type(m1).__name__ == "YOLOEModel" and m1.pe.shape[1] == len(y1["names"])
    assert torch.allclose(m1.pe, _expected_pe(_model(p.yoloe_start(1)), y1["prompts"]), atol=1e-5)
    assert [r["epoch"] for r in _results(p.iteration(1) / "results.csv")] == [1, 2]


def _results(csv_file: Path) -> list[dict]:
    import csv

    with csv_file.open() as fh:
        return [{"epoch": int(float(r["epoch"]))} for r in csv.DictReader(fh)]


def test_yoloe_from_the_shipped_yaml_trains_and_predicts_with_its_prompt_embeddings(tmp_path, tiny_data):
    """yoloe-26n.yaml, prompted and trained (2 epochs) by the loop's YOLOE trainer, then re-prompted: its pre-NMS
    class scores follow the prompt embeddings (other text for class 0, other scores for class 0 only)."""
    import numpy as np
    from ultralytics import YOLO

    from al.yolo import detector, yoloe

    detector.disable_mlflow_callback()
    names = list(yaml.safe_load(tiny_data.read_text())["names"].values())
    base = detector.build_untrained("yolo26n.yaml", names, tmp_path / "base.pt")
    enc = yoloe.HashingTextEncoder()
    texts = [f"digit {n}" for n in names]
    a = yoloe.prepare_start(base, "yoloe-26n.yaml", names, texts, enc, tmp_path / "start.pt")
    assert a["arch"] == "YOLOEModel" and a["names"] == names and a["embed_dim"] == 512
    YOLO(str(tmp_path / "start.pt")).train(
        trainer=yoloe.trainer_class(), data=str(tiny_data), epochs=2, imgsz=64, batch=8, workers=0, device="cpu",
        lr0=0.01, optimizer="AdamW", nbs=8, plots=False, project=str(tmp_path), name="t", exist_ok=True,
        verbose=False)
    best = tmp_path / "t" / "weights" / "best.pt"
    # the trained model under its own prompts, and under another text for class 0
    yoloe.prepare_start(best, "yoloe-26n.yaml", names, texts, enc, tmp_path / "a.pt")
    yoloe.prepare_start(best, "yoloe-26n.yaml", names, ["a zero shaped sign"] + texts[1:], enc, tmp_path / "b.pt")
    images = sorted(str(x) for x in (tiny_data.parent / "images" / "val").iterdir())[:4]
    kw = dict(imgsz=64, conf=0.001, iou=0.7, batch=4, device="cpu", cand_conf=0.0)
    ra = list(detector.predict_raw(tmp_path / "a.pt", images, **kw))
    rb = list(detector.predict_raw(tmp_path / "b.pt", images, **kw))
    assert len(ra) == 4 and ra[0].class_max.shape == (len(names),) and ra[0].candidates.shape[1] == len(names)
    la = np.log(np.stack([r.class_max for r in ra]))
    lb = np.log(np.stack([r.class_max for r in rb]))
    assert np.abs(la[:, 0] - lb[:, 0]).max() > 1e-3 and np.allclose(la[:, 1:], lb[:, 1:], atol=1e-6)
    preds = list(detector.predict(best, images, imgsz=64, conf=0.001, iou=0.7, batch=4, device="cpu"))
    assert len(preds) == 4 and all(set(p.cls.tolist()) <= set(range(len(names))) for p in preds)


def _real_encoder() -> Path | None:
    env = os.environ.get("AL_TEXT_ENCODER")
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        from ultralytics.utils import SETTINGS

        cand = Path(SETTINGS["weights_dir"]) / "mobileclip2_b.ts"
    except Exception:
        return None
    return cand if cand.is_file() else None


def test_real_text_encoder(tmp_path, tiny_data):
    enc_file = _real_encoder()
    if enc_file is None:
        pytest.skip("the real YOLOE-26 text encoder mobileclip2_b.ts is not here (set AL_TEXT_ENCODER to its path, "
                    "or put it in Ultralytics' weights folder); the loop never downloads it")
    import torch

    from al.yolo import detector, yoloe

    enc = yoloe.build_encoder(str(enc_file), "yoloe-26n.yaml")
    f = yoloe.text_features(enc, ["a photo of a cat", "a cat", "a truck on a highway"])[0]
    assert f.shape == (3, 512) and torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-3)
    assert float(f[0] @ f[1]) > float(f[0] @ f[2])  # semantic: the stand-in makes no such promise
    names = list(yaml.safe_load(tiny_data.read_text())["names"].values())
    base = detector.build_untrained("yolo26n.yaml", names, tmp_path / "base.pt")
    rep = yoloe.prepare_start(base, "yoloe-26n.yaml", names, names, enc, tmp_path / "s.pt")
    assert rep["encoder"]["semantic"] is True and "warning" not in rep["encoder"]
