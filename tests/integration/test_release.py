"""`al-loop release`: the bundle of a real (dry) run's champion, with the real Ultralytics exporter and onnxruntime."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from al.app.release import ReleaseError, check_version, make_release, verify_checksums
from al.cli import main
from al.core import artifacts, store
from al.core.config import load_config
from al.core.paths import RunPaths
from al.data import manifest
from al.yolo import export
from tests.conftest import make_config, run_in_process

BUNDLE = {"best.pt", "model.onnx", "onnx_check.json", "export_log.txt", "model_card.json", "model_card.md",
          "data.yaml", "dataset/train.txt", "dataset/val.txt", "dataset/test.txt", "dataset/manifest.json",
          "dataset/version.json", "SHA256SUMS"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data):
    """A finished dry run (2 iterations, simulated review) whose gate promoted iteration 1 (gate.margin -1: the dry
    run's challenger is a copy of its champion), so the release is not of the baseline."""
    tmp = tmp_path_factory.mktemp("release_run")
    cfg = load_config(make_config(tmp, tiny_data, gate={"margin": -1.0}))
    code, _, _ = run_in_process(cfg)
    assert code == 0
    assert artifacts.load_champion(RunPaths(cfg.run_dir)).iteration == 1
    return cfg


@pytest.fixture(scope="module")
def released(run):
    """`al-loop release --config CFG --version v1.2.0 --name ...` through the CLI."""
    code = main(["release", "--config", str(run.source_path), "--version", "v1.2.0", "--name", "Digits demo"])
    assert code == 0
    return RunPaths(run.run_dir).release("v1.2.0")


def test_bundle_contents_and_checksums(run, released):
    paths = RunPaths(run.run_dir)
    files = {p.relative_to(released).as_posix() for p in released.rglob("*") if p.is_file()}
    assert files == BUNDLE
    assert verify_checksums(released) == []
    sums = dict(reversed(line.split("  ")) for line in (released / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == BUNDLE - {"SHA256SUMS"}
    assert all(_sha(released / f) == h for f, h in sums.items())
    champ = artifacts.load_champion(paths)
    assert _sha(released / "best.pt") == _sha(Path(champ.weights))
    # a changed byte is caught
    (released / "data.yaml").write_text((released / "data.yaml").read_text() + "# edited\n")
    try:
        assert verify_checksums(released) == ["data.yaml"]
    finally:
        (released / "data.yaml").write_text((released / "data.yaml").read_text().replace("# edited\n", ""))
    assert verify_checksums(released) == []
    # the zip holds the same bytes under v1.2.0/
    with zipfile.ZipFile(paths.releases / "v1.2.0.zip") as z:
        assert set(z.namelist()) == {f"v1.2.0/{f}" for f in BUNDLE}
        assert all(z.read(f"v1.2.0/{f}") == (released / f).read_bytes() for f in BUNDLE)
    assert not [p for p in paths.releases.iterdir() if p.name.startswith(".") or p.name.startswith("failed_")]


def test_onnx_verified_on_the_decision_set(run, released):
    check = store.read_json(released / "onnx_check.json")
    ds = artifacts.load_decision_set(RunPaths(run.run_dir))
    assert check["passed"] is True and check["problems"] == []
    assert check["images"] == sorted(ds.images)[:export.CHECK_IMAGES]
    assert check["images_from"] == "decision set (test)"
    assert check["imgsz"] == run.training.imgsz == 64
    assert check["max_raw_score_diff"] <= check["score_tol"] and check["max_raw_box_diff_px"] <= check["box_tol_px"]
    assert check["detections_torch"] == check["detections_onnx"] == check["matched"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(released / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 64, 64]
    assert yaml.safe_load(sess.get_modelmeta().custom_metadata_map["names"].replace("'", '"')) == \
        {i: n for i, n in enumerate(artifacts.load_validation(RunPaths(run.run_dir), 1).names)}


def test_model_card(run, released):
    paths = RunPaths(run.run_dir)
    card = store.read_json(released / "model_card.json")
    assert card["release"]["version"] == "v1.2.0" and card["release"]["name"] == "Digits demo"
    champ = artifacts.load_champion(paths)
    c = champ.iteration
    assert card["model"]["iteration"] == c and card["model"]["dry_run"] is True
    assert card["model"]["since_iteration"] == champ.since_iteration
    assert card["model"]["files"]["model.onnx"] == _sha(released / "model.onnx")
    assert card["config"]["digest"] == run.digest()
    ver = store.read_json(paths.dataset_version(c) / "version.json")
    assert card["dataset"]["id"] == ver["id"] and card["dataset"]["version"] == c
    assert card["dataset"]["manifest_sha256"] == _sha(paths.manifest(c))
    assert card["dataset"]["label_origins"] == manifest.load(paths.manifest(c)).counts()
    # version 1 holds iteration 0's 4 simulated-review picks
    assert card["dataset"]["label_origins"]["train"] == ({"dataset": 24, "simulated": 4} if c == 1 else {"dataset": 24})
    assert card["decision_set"]["content_hash"] == artifacts.load_decision_set(paths).content_hash
    assert [r["iteration"] for r in card["history"]["convergence_csv"]] == ["0", "1"]
    assert [g["iteration"] for g in card["history"]["promotions"]] == [0, 1]
    assert card["promotion"]["iteration"] == champ.since_iteration
    val = card["metrics"]["val"]
    recs = artifacts.load_validation_records(paths, c).images
    assert val["images"] == len(recs)
    for m in ("precision", "recall", "f1"):
        assert val[m]["low"] <= val[m]["value"] <= val[m]["high"]
    assert set(card["per_class_ap"]["classes"]) == set(artifacts.load_validation(paths, c).names)
    md = (released / "model_card.md").read_text()
    for text in ("# Model card: Digits demo (v1.2.0)", "Dry run", "## Per-class AP", "| train | dataset | 24 |",
                 run.digest(), card["dataset"]["id"], "## Iteration history", f"- Champion: iteration {c} "):
        assert text in md


def test_data_yaml_resolves_inside_the_bundle(released):
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(released / "data.yaml"))
    assert Path(data["train"]) == released / "dataset" / "train.txt"
    assert data["nc"] == 5


def test_refuses_an_existing_version(run, released, capsys):
    before = _sha(released / "SHA256SUMS"), _sha(RunPaths(run.run_dir).releases / "v1.2.0.zip")
    with pytest.raises(ReleaseError, match=r"Release v1.2.0 exists already \(.*releases/v1.2.0\).*another --version"):
        make_release(run, "v1.2.0")
    assert main(["release", "--config", str(run.source_path), "--version", "v1.2.0"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert (_sha(released / "SHA256SUMS"), _sha(RunPaths(run.run_dir).releases / "v1.2.0.zip")) == before


def test_refuses_while_a_loop_runs_and_bad_arguments(run, capsys):
    from filelock import FileLock

    paths = RunPaths(run.run_dir)
    with FileLock(str(paths.lock), timeout=0):
        assert main(["release", "--config", str(run.source_path), "--version", "v4.0.0"]) == 1
    assert "An al_loop is running on" in capsys.readouterr().err
    with pytest.raises(ReleaseError, match="--check-images 0: the ONNX check needs at least one image"):
        make_release(run, "v4.0.0", check_images=0)
    with pytest.raises(ReleaseError, match="--name '': give a one-line name"):
        make_release(run, "v4.0.0", name="")
    assert not paths.release("v4.0.0").exists() and not (paths.releases / "v4.0.0.zip").exists()


@pytest.mark.parametrize("bad", ["", "../v1", "v1/2", "latest", "v1.2.3.4", "v1.0 ", "v1..2"])
def test_refuses_unsafe_versions(bad):
    with pytest.raises(ReleaseError, match="semver-like"):
        check_version(bad)


@pytest.mark.parametrize("good", ["v1.2.0", "1.2", "v2.0.0-rc.1", "v1.0.0+build.5", "3"])
def test_accepts_semver_like_versions(good):
    assert check_version(good) == good


def test_cli_refuses_a_bad_version_before_anything(run, capsys):
    assert main(["release", "--config", str(run.source_path), "--version", "../escape"]) == 2
    assert "semver-like" in capsys.readouterr().err
    assert not (RunPaths(run.run_dir).root.parent / "escape").exists()


def test_refuses_a_run_without_champion_or_run_dir(tmp_path, tiny_data, capsys):
    cfg = load_config(make_config(tmp_path, tiny_data))
    with pytest.raises(ReleaseError, match="does not exist: run the loop first"):
        make_release(cfg, "v1.0.0")
    assert main(["release", "--config", str(cfg.source_path), "--version", "v1.0.0"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not cfg.run_dir.exists()  # the refusal creates nothing
    cfg.run_dir.mkdir()
    with pytest.raises(ReleaseError, match=r"has no champion \(.*champion.json not found\): run the loop first"):
        make_release(cfg, "v1.0.0")
    assert not RunPaths(cfg.run_dir).releases.exists()


def other_model(src: Path, out: Path) -> Path:
    """Another model of the same architecture and classes: src's weights plus seeded noise. (Two untrained models
    are no good here: their outputs are set by the head's bias initialisation, nearly independent of the weights.)"""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for prm in ckpt["model"].parameters():
            prm.add_((torch.randn(prm.shape, generator=gen) * 0.2).to(prm.dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out


def test_a_different_models_export_fails_the_check(run, tmp_path):
    """The check can fail: another model's ONNX (same architecture, classes and output shape, other weights)
    against the champion's best.pt; and that model against its own export passes with many detections compared."""
    paths = RunPaths(run.run_dir)
    other = other_model(paths.best(1), tmp_path / "other" / "best.pt")
    onnx_path = export.export_onnx(other, imgsz=64, log=tmp_path / "export.log")
    images = sorted(artifacts.load_decision_set(paths).images)[:4]
    res = export.verify_onnx(paths.best(1), onnx_path, images, imgsz=64, conf=0.25, iou=0.7)
    assert res.passed is False
    assert any("class scores before NMS differ" in p for p in res.problems)
    assert any("has no PyTorch detection of the same class" in p for p in res.problems)
    assert res.max_raw_score_diff > 0.5
    same = export.verify_onnx(other, onnx_path, images, imgsz=64, conf=0.25, iou=0.7)
    assert same.passed is True, same.problems
    assert same.matched == same.detections_torch == same.detections_onnx > 50
    assert same.max_box_diff_px <= export.BOX_TOL_PX


def test_a_failed_check_leaves_no_release(run):
    """Tolerance 0: the fused export's float rounding (about 1e-5) fails the check; the release is refused and
    the check and the exporter's log are kept for reading."""
    paths = RunPaths(run.run_dir)
    with pytest.raises(ReleaseError, match=r"the ONNX export does not match the PyTorch model on 8 images: .*"
                                           r"failed_v9.9.9"):
        make_release(run, "v9.9.9", box_tol_px=0.0, score_tol=0.0)
    assert not paths.release("v9.9.9").exists() and not (paths.releases / "v9.9.9.zip").exists()
    assert not [p for p in paths.releases.iterdir() if p.name.startswith(".")]
    kept = paths.releases / "failed_v9.9.9"
    assert store.read_json(kept / "onnx_check.json")["passed"] is False
    assert "ONNX: export success" in (kept / "export_log.txt").read_text()
    shutil.rmtree(kept)


def test_an_interrupted_release_leaves_nothing_and_a_rerun_cleans_up(run):
    paths = RunPaths(run.run_dir)

    def stop_at_check(text: str) -> None:
        if "checking model.onnx" in text:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_release(run, "v3.0.0", say=stop_at_check)
    assert not paths.release("v3.0.0").exists() and not (paths.releases / "v3.0.0.zip").exists()
    assert not [p for p in paths.releases.iterdir() if p.name.startswith(".")]
    # what a SIGKILL would leave: the temp folder, the temp zip, and a zip renamed before its folder
    (paths.releases / ".v3.0.0.tmp").mkdir()
    (paths.releases / ".v3.0.0.tmp" / "best.pt").write_bytes(b"half")
    (paths.releases / ".v3.0.0.zip.tmp").write_bytes(b"half")
    (paths.releases / "v3.0.0.zip").write_bytes(b"stale")
    rel = make_release(run, "v3.0.0")
    assert rel.onnx_check.passed and verify_checksums(rel.folder) == []
    assert not [p for p in paths.releases.iterdir() if p.name.startswith(".")]
    with zipfile.ZipFile(rel.zip) as z:
        assert z.read("v3.0.0/best.pt") == (rel.folder / "best.pt").read_bytes()


def test_damaged_champion_weights_are_refused(tmp_path, tiny_data):
    cfg = load_config(make_config(tmp_path, tiny_data))
    paths = RunPaths(cfg.run_dir)
    paths.weights(1).mkdir(parents=True)
    paths.best(1).write_bytes(b"PK\x03\x04 truncated")
    artifacts.save_champion(paths, artifacts.Champion(iteration=1, weights=str(paths.best(1)), since_iteration=1,
                                                      metric="f1", value=0.5))
    with pytest.raises(ReleaseError, match=r"champion's weights .*best.pt \(iteration 1, .*\) are truncated or "
                                           r"corrupt.*--start-iteration 1"):
        make_release(cfg, "v1.0.0")
    assert not paths.releases.exists()


def test_export_of_a_broken_checkpoint_fails_with_the_log(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(export.ExportError, match=r"ONNX export of .*best.pt failed: .*The exporter's log: .*x.log"):
        export.export_onnx(bad, imgsz=64, log=tmp_path / "x.log")
    assert (tmp_path / "x.log").is_file()
