"""Seed 004's own config file, pointed at a dataset (and at local copies of the weights it names), through
--dry-run: refused up front for the text encoder it cannot have, then accepted and run through the switch from
the YOLO26 baseline to the YOLOE-26 target at iteration 1 (built, prompted, not trained: dry-run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from al.cli import EXIT_USAGE, main
from al.core import artifacts, store
from al.core.config import load_config
from al.core.context import Listeners
from al.core.paths import RunPaths
from al.data import dataset

# seed 004's "Required Configuration File", verbatim
SEED_CONFIG = """\
# Model Configuration
model:
  baseline: yolo26n.pt              # YOLO-26 baseline model
  target: yoloe-26n-seg.pt          # Target YOLOE-26 model
  type: yoloe-26-nano

# Active Learning Parameters
active_learning:
  max_samples_per_iteration: 20     # Hard examples per iteration
  require_human_review: true        # Pause for manual review
  target_f1: 0.98                   # Stop when achieved
  plateau_threshold: 0.005          # Stop if < 0.5% improvement
  max_iterations: 10                # Resource limit

# Sampling Strategy
sampling_strategy:
  class_balance_weight: 0.3
  size_diversity_weight: 0.3
  spatial_diversity_weight: 0.2
  uncertainty_weight: 0.2

# Training Configuration
training:
  strategy: fine_tune
  base_lr: 0.001                    # Initial learning rate
  lr_decay_factor: 0.5              # LR decay per iteration
  epochs_base: 150                  # Epochs for iteration 0
  epochs_increment: 100             # Epochs for iteration 1+
  patience: 20                      # Early stopping patience
  imgsz: 2560                       # Image size
  batch: 2                          # Batch size

# Text Prompts
prompts:
  source: prompts/ca_ncs.json       # Initial prompt file
  detail: "A detail callout..."
  elevation: "An elevation marker..."
  title: "A title block..."
"""

NAMES = ["detail", "elevation", "title", "section", "north_arrow"]


@pytest.fixture(autouse=True, scope="module")
def _ultralytics_logs_outside_capsys():
    import ultralytics  # noqa: F401


@pytest.fixture
def seed_dir(tmp_path, tiny_data) -> Path:
    """The seed's folder layout: the config, prompts/ca_ncs.json, local yolo26n.pt and yoloe-26n-seg.pt (built from
    the YAMLs Ultralytics ships: nothing is downloaded), and a dataset with the seed's class names."""
    import torch
    from ultralytics.nn.tasks import YOLOESegModel

    from al.yolo import detector

    data = tmp_path / "datasets" / "dataset_base" / "data.yaml"
    data.parent.mkdir(parents=True)
    src = yaml.safe_load(tiny_data.read_text())
    data.write_text(yaml.safe_dump({**src, "names": dict(enumerate(NAMES))}))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ca_ncs.json").write_text(json.dumps({"section": "A section cut symbol"}))
    detector.build_untrained("yolo26n.yaml", NAMES, tmp_path / "yolo26n.pt")
    torch.manual_seed(0)
    seg = YOLOESegModel("yoloe-26n-seg.yaml", nc=80, verbose=False)
    torch.save({"model": seg, "ema": None}, tmp_path / "yoloe-26n-seg.pt")
    # pointed at the dataset, small enough for a CPU: the only keys changed or added
    cfg = yaml.safe_load(SEED_CONFIG)
    text = SEED_CONFIG.replace("  imgsz: 2560 ", "  imgsz: 64   ").replace("  batch: 2  ", "  batch: 8  ")
    text += ("\nrun_dir: active_learning\ndataset:\n  data_yaml: datasets/dataset_base/data.yaml\n"
             "validation:\n  batch: 16\n")
    assert yaml.safe_load(text)["prompts"] == cfg["prompts"]
    (tmp_path / "al_config.yaml").write_text(text)
    return tmp_path


def test_seed_config_without_a_text_encoder_is_refused_by_dry_run_before_anything_runs(seed_dir, capsys):
    code = main(["--config", str(seed_dir / "al_config.yaml"), "--dry-run", "--headless"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == EXIT_USAGE and "Traceback" not in text
    err = [ln for ln in text.splitlines() if ln.startswith("[ERROR]")]
    assert len(err) == 1 and "key 'model.text_encoder' is not set" in err[0]
    assert "mobileclip2_b.ts" in err[0] and "releases/download/v8.4.0/mobileclip2_b.ts" in err[0]
    assert not (seed_dir / "active_learning").exists()


def test_seed_config_with_the_encoder_set_passes_dry_run_and_switches_to_yoloe_at_iteration_1(seed_dir):
    from ultralytics.nn.tasks import YOLOEModel
    from ultralytics.utils.patches import torch_load

    from al.app.api import open_run, run_loop

    cfgp = seed_dir / "al_config.yaml"
    text = cfgp.read_text().replace("  type: yoloe-26-nano", "  type: yoloe-26-nano\n  text_encoder: deterministic")
    text = text.replace("max_iterations: 10 ", "max_iterations: 2  ")
    cfgp.write_text(text)
    cfg = load_config(cfgp)
    assert cfg.prompts.texts["detail"] == "A detail callout..."

    def human(info: dict) -> bool:  # returns the picks' labels (they come from the labelled validation split)
        back = Path(info["returned_dir"])
        for p in info["picks"]:
            shutil.copy(dataset.label_path(p["image"]), back / f"{Path(p['image']).stem}.txt")
        return True

    assert run_loop(open_run(cfg, dry_run=True, ui=Listeners(review=human))) == 0
    p = RunPaths(cfg.run_dir)
    v0 = store.read_json(p.prompts(0))
    assert v0["texts"] == {"section": "A section cut symbol", "detail": "A detail callout...",
                           "elevation": "An elevation marker...", "title": "A title block..."}
    r1 = store.read_json(p.train_result(1))
    assert r1["dry_run"] is True and r1["spec"]["yoloe"]["prompt_file"] == str(p.prompts(0))
    assert r1["spec"]["yoloe"]["prompts"] == ["A detail callout...", "An elevation marker...", "A title block...",
                                              "A section cut symbol", "north_arrow"]
    rep = r1["yoloe"]
    assert rep["start"] == "model.target" and rep["pretrained"] is True
    assert rep["source"] == str(seed_dir / "yoloe-26n-seg.pt") and rep["from_target_checkpoint"]["share"] > 0.9
    fb = rep["from_baseline"]  # backbone and neck whole (the layers with weights), the head in part
    assert max(fb["layers_whole"]) == 22 and fb["layers_partial"] == [23] and fb["layers_none"] == []
    m = torch_load(str(p.best(1)), map_location="cpu")["model"]
    assert isinstance(m, YOLOEModel) and type(m.model[-1]).__name__ == "YOLOEDetect"  # the mask branch dropped
    assert list(m.names.values()) == NAMES and tuple(m.pe.shape) == (1, 5, 512)
    assert artifacts.load_validation(p, 1).weights == str(p.best(1))  # validated as a YOLOE model
    assert store.read_json(p.iteration_report(1))["prompt_version"]["file"] == str(p.prompts(0))
