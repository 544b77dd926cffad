"""`al-loop release`: the champion as a release bundle, releases/<version>/ and releases/<version>.zip.

The bundle holds the champion's best.pt, its ONNX export (Ultralytics' exporter) verified with onnxruntime against
the PyTorch model (onnx_check.json), a model card (model_card.json and .md), the training dataset version's split
lists, manifest and a data.yaml that resolves inside the bundle, and SHA256SUMS of every file. It is built in
releases/.<version>.tmp and renamed into place when complete: the zip first, the folder last, so an existing folder
is always a whole release; a re-run after a crash removes the temp folder (and a zip without its folder).
The caller holds the run lock (the loop must not write the run tree meanwhile, nor remove the temp folder).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import numpy as np
import yaml

from al import __version__
from al.core import artifacts, store
from al.core.config import Config
from al.core.errors import UserError
from al.core.paths import RunPaths
from al.core.state import RunState
from al.core.store import StoreError
from al.data import dataset, manifest
from al.metrics.intervals import prf_intervals
from al.yolo import checkpoints, export

CARD_SCHEMA = 1
VERSION_RE = re.compile(r"v?\d+(\.\d+){0,2}([-+][0-9A-Za-z][0-9A-Za-z.]*)?")
"""Semver-like: v1.2.0, 1.2, v2.0.0-rc.1, v1.0.0+build.5 (safe as a folder and a zip name)."""
NAME_MAX = 200
BUNDLE_DATA = ("train.txt", "val.txt", "test.txt", "manifest.json", "version.json")
"""What the bundle's dataset/ folder copies from the champion's dataset version (those that exist)."""


class ReleaseError(UserError):
    """A release is refused or failed; the message says why and what to do."""


@dataclass
class Release:
    """What make_release wrote."""

    version: str
    folder: Path
    zip: Path
    champion_iteration: int
    onnx_check: export.OnnxCheck
    files: list[str]
    seconds: float
    timings: dict[str, float]
    """Seconds of the champion's checks (torch's import included), the export, the ONNX check, and the rest (copies,
    card, checksums, zip)."""


def check_version(version: str) -> str:
    """The version when it is semver-like (a safe folder name), else a ReleaseError saying what is accepted."""
    if not VERSION_RE.fullmatch(version or ""):
        raise ReleaseError(f"--version {version!r}: not a release version. Use a semver-like name such as v1.2.0, "
                           f"1.2 or v2.0.0-rc.1 (digits and dots, an optional leading 'v' and -/+ suffix; it becomes "
                           f"the folder releases/<version>).")
    return version


def make_release(cfg: Config, version: str, *, name: str | None = None, check_images: int = export.CHECK_IMAGES,
                 box_tol_px: float = export.BOX_TOL_PX, score_tol: float = export.SCORE_TOL,
                 say: Callable[[str], None] = lambda text: None) -> Release:
    """Build releases/<version>/ and releases/<version>.zip from the run's champion (see the module docstring)."""
    t0 = time.perf_counter()
    check_version(version)
    if name is not None and (not name.strip() or len(name) > NAME_MAX or any(ord(ch) < 32 for ch in name)):
        raise ReleaseError(f"--name {name!r}: give a one-line name of 1 to {NAME_MAX} characters.")
    if check_images < 1:
        raise ReleaseError(f"--check-images {check_images}: the ONNX check needs at least one image.")
    paths = RunPaths(cfg.run_dir)
    if not paths.root.is_dir():
        raise ReleaseError(f"Run directory {paths.root} (run_dir of {cfg.source_path}) does not exist: run the loop "
                           f"first (al-loop --config {cfg.source_path}), or point run_dir at an existing run.")
    final, final_zip = paths.release(version), paths.releases / f"{version}.zip"
    if final.exists():
        raise ReleaseError(f"Release {version} exists already ({final}). A release is never overwritten: choose "
                           f"another --version (or delete that folder and {final_zip.name} yourself).")
    if not paths.champion.is_file():
        raise ReleaseError(f"The run in {paths.root} has no champion ({paths.champion} not found): run the loop first "
                           f"(al-loop --config {cfg.source_path}); the promotion gate names the champion when "
                           f"iteration 0 is validated.")
    champ = artifacts.load_champion(paths)
    weights = Path(champ.weights)
    if not weights.is_absolute():  # a path relative to the run directory
        weights = paths.root / weights
    bad = checkpoints.problem(weights)
    if bad is not None:
        raise ReleaseError(f"The champion's weights {weights} (iteration {champ.iteration}, {paths.champion}) are "
                           f"{bad}: restore them, or redo that iteration with --start-iteration {champ.iteration}.")
    c = champ.iteration
    if not (paths.dataset_version(c) / "version.json").is_file():
        raise ReleaseError(f"Dataset version {c} of the champion (iteration {c}) is missing "
                           f"({paths.dataset_version(c)}): restore it, or redo iteration {c} with --start-iteration "
                           f"{c}.")

    tmp, tmp_zip = paths.releases / f".{version}.tmp", paths.releases / f".{version}.zip.tmp"
    failed = paths.releases / f"failed_{version}"
    for stale in (tmp, failed):
        shutil.rmtree(stale, ignore_errors=True)
    for stale_file in (tmp_zip, final_zip):  # a zip without its folder is a release that crashed before the end
        stale_file.unlink(missing_ok=True)
    tmp.mkdir(parents=True)
    timings: dict[str, float] = {"checks_s": time.perf_counter() - t0}
    try:
        say(f"[RELEASE] {version}: champion is iteration {c} ({weights})")
        shutil.copyfile(weights, tmp / "best.pt")
        if _sha256(tmp / "best.pt") != _sha256(weights):
            raise ReleaseError(f"Copying {weights} into the release changed its bytes: check the disk and run again.")
        check = _onnx(cfg, paths, tmp, c, check_images=check_images, box_tol_px=box_tol_px, score_tol=score_tol,
                      failed=failed, say=say, timings=timings)
        _dataset(paths, c, tmp)
        card = model_card(cfg, paths, champ, version=version, name=name, check=check, bundle=tmp)
        store.write_json(tmp / "model_card.json", card, schema=CARD_SCHEMA)
        store.write_text_atomic(tmp / "model_card.md", card_markdown(card))
        files = _checksums(tmp)
        _zip(tmp, tmp_zip, version)
        os.replace(tmp_zip, final_zip)
        os.replace(tmp, final)  # the commit: the folder exists only when the whole release does
        _fsync_dir(paths.releases)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp_zip.unlink(missing_ok=True)
        if not final.exists():
            final_zip.unlink(missing_ok=True)
        raise
    secs = time.perf_counter() - t0
    timings["rest_s"] = secs - timings["checks_s"] - timings["export_s"] - timings["check_s"]
    say(f"[RELEASE] {version} written: {final} and {final_zip} ({secs:.1f} s: champion checks "
        f"{timings['checks_s']:.1f} s, export {timings['export_s']:.1f} s, ONNX check {timings['check_s']:.1f} s, "
        f"card, checksums and zip {timings['rest_s']:.1f} s)")
    return Release(version=version, folder=final, zip=final_zip, champion_iteration=c, onnx_check=check,
                   files=files, seconds=secs, timings=timings)


def _onnx(cfg: Config, paths: RunPaths, tmp: Path, c: int, *, check_images: int, box_tol_px: float,
          score_tol: float, failed: Path, say: Callable[[str], None], timings: dict[str, float]) -> export.OnnxCheck:
    """Export tmp/best.pt to tmp/model.onnx and verify it; on a failure keep the log and the check in `failed`."""
    log = tmp / "export_log.txt"
    imgsz = cfg.training.imgsz
    say(f"[RELEASE] exporting to ONNX (Ultralytics' exporter, imgsz {imgsz}, CPU)")
    t = time.perf_counter()
    try:
        onnx_path = export.export_onnx(tmp / "best.pt", imgsz=imgsz, log=log)
    except export.ExportError as e:
        kept = _keep_failure(tmp, failed, log)
        raise ReleaseError(f"No release: {str(e).replace(str(log), str(kept / log.name))}") from None
    os.replace(onnx_path, tmp / "model.onnx")
    timings["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    images, where = check_image_set(paths, c, check_images)
    say(f"[RELEASE] checking model.onnx with onnxruntime against best.pt on {len(images)} images ({where})")
    check = export.verify_onnx(tmp / "best.pt", tmp / "model.onnx", images, imgsz=imgsz,
                               conf=cfg.validation.conf, iou=cfg.validation.nms_iou, box_tol_px=box_tol_px,
                               score_tol=score_tol)
    timings["check_s"] = time.perf_counter() - t
    body = {**check.to_json(), "onnx": "model.onnx", "weights": "best.pt", "images_from": where}
    store.write_json(tmp / "onnx_check.json", body)
    if not check.passed:
        kept = _keep_failure(tmp, failed, log, tmp / "onnx_check.json")
        first = "; ".join(check.problems[:3]) + (f" (and {len(check.problems) - 3} more)"
                                                 if len(check.problems) > 3 else "")
        raise ReleaseError(f"No release: the ONNX export does not match the PyTorch model on {len(images)} images: "
                           f"{first}. The check and the exporter's log are in {kept}.")
    say(f"[RELEASE] ONNX check passed: {check.matched} detections matched, largest box difference "
        f"{check.max_box_diff_px:.2g} px, raw scores within {check.max_raw_score_diff:.2g}")
    return check


def _keep_failure(tmp: Path, failed: Path, *files: Path) -> Path:
    failed.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.is_file():
            shutil.copyfile(f, failed / f.name)
    return failed


def check_image_set(paths: RunPaths, c: int, n: int) -> tuple[list[str], str]:
    """Up to n images for the ONNX check: the decision set's when it exists, else the champion's dataset version's
    validation (then test, then train) split; the same ones every time (sorted)."""
    if paths.decision_set.is_file():
        ds = artifacts.load_decision_set(paths)
        imgs = [p for p in sorted(ds.images) if Path(p).is_file()]
        if imgs:
            return imgs[:n], f"decision set ({ds.set})"
    _, splits = dataset.read_snapshot(paths.dataset_version(c))
    for split in ("val", "test", "train"):
        imgs = [p for p in sorted(splits[split]) if Path(p).is_file()]
        if imgs:
            return imgs[:n], f"dataset version {c}, {split} split"
    raise ReleaseError(f"No image to check the ONNX export on: the decision set and dataset version {c} "
                       f"({paths.dataset_version(c)}) list no readable image. Restore the dataset images.")


def _dataset(paths: RunPaths, c: int, tmp: Path) -> None:
    """dataset/ (the champion's training dataset version: split lists, manifest, version.json) and a data.yaml
    whose split entries point at dataset/<split>.txt inside the bundle (Ultralytics resolves them against the
    yaml's folder; the lists hold the image paths of the machine that made the run)."""
    src = paths.dataset_version(c)
    (tmp / "dataset").mkdir()
    for f in BUNDLE_DATA:
        if (src / f).is_file():
            shutil.copyfile(src / f, tmp / "dataset" / f)
    ver = store.read_json(src / "version.json", required=("id", "counts"))
    names = list(ver.get("names") or _names_of(paths.dataset_yaml(c)))
    data: dict = {"names": dict(enumerate(names)), "nc": len(names)}
    for split in ("train", "val", "test"):
        if (tmp / "dataset" / f"{split}.txt").is_file() and (tmp / "dataset" / f"{split}.txt").read_text().strip():
            data[split] = f"dataset/{split}.txt"
    head = (f"# Dataset version {c} ({ver['id']}) the champion was trained on. The split lists in dataset/ hold the\n"
            f"# image paths of the machine that made the run; to train elsewhere, rewrite them. Inference needs only\n"
            f"# names.\n")
    store.write_text_atomic(tmp / "data.yaml", head + yaml.safe_dump(data, sort_keys=False))


def _names_of(data_yaml: Path) -> list[str]:
    raw = yaml.safe_load(data_yaml.read_text())["names"]
    return [raw[k] for k in sorted(raw)] if isinstance(raw, dict) else list(raw)


# --------------------------------------------------------------------------------------------------- model card

def model_card(cfg: Config, paths: RunPaths, champ: artifacts.Champion, *, version: str, name: str | None,
               check: export.OnnxCheck, bundle: Path) -> dict:
    """The model card's fields (model_card.json; model_card.md renders them)."""
    c = champ.iteration
    val = artifacts.load_validation(paths, c)
    state = _state(paths)
    ver = store.read_json(paths.dataset_version(c) / "version.json", required=("id", "counts"))
    man_file = paths.manifest(c)
    origins, man_hash = None, None
    if man_file.is_file():
        man_hash = _sha256(man_file)
        origins = manifest.load(man_file).counts()
    decision = None
    if paths.decision_set.is_file():
        ds = artifacts.load_decision_set(paths)
        decision = {"set": ds.set, "images": len(ds.images), "content_hash": ds.content_hash,
                    "created_iteration": ds.created_iteration}
    promo = artifacts.load_promotion(paths, champ.since_iteration) \
        if paths.promotion(champ.since_iteration).is_file() else None
    return {
        "release": {"version": version, "name": name, "created_utc": datetime.now(timezone.utc).isoformat(
            timespec="seconds"), "tool_version": __version__},
        "model": {"iteration": c, "since_iteration": champ.since_iteration, "gate_metric": champ.metric,
                  "gate_value": champ.value, "source_weights": champ.weights, "base_model": cfg.model.baseline,
                  "imgsz": cfg.training.imgsz, "names": val.names, "dry_run": state.dry_run if state else None,
                  "files": {"best.pt": _sha256(bundle / "best.pt"), "model.onnx": _sha256(bundle / "model.onnx")}},
        "metrics": _metrics(paths, c, val, cfg),
        "per_class_ap": _per_class_ap(val),
        "promotion": (promo.model_dump(mode="json") if promo else None),
        "decision_set": decision,
        "dataset": {"version": c, "id": ver["id"], "counts": ver["counts"], "manifest_sha256": man_hash,
                    "label_origins": origins},
        "config": {"digest": cfg.digest(), "file": str(cfg.source_path),
                   "run_digest": state.config_digest if state else None},
        "onnx_check": {k: v for k, v in check.to_json().items() if k not in ("images", "onnx", "weights")}
        | {"images": len(check.images)},
        "history": _history(paths),
    }


def _state(paths: RunPaths) -> RunState | None:
    try:
        return RunState.load(paths)
    except StoreError:
        return None


def _metrics(paths: RunPaths, c: int, val: artifacts.ValidationSummary, cfg: Config) -> dict:
    """The champion's figures: on the decision set (what the gate compared), on validation with bootstrap 95%
    intervals of P/R/F1 over images, and on the frozen test split."""
    out: dict = {"conf": val.conf, "iou": val.iou}
    if val.decision is not None:
        d = val.decision
        out["decision_set"] = {"set": d.set, "images": d.images, "map50": d.map50, "map50_95": d.map50_95,
                               "precision": d.precision, "recall": d.recall, "f1": d.f1}
    v: dict = {"images": None, "map50": val.map50, "map50_95": val.map50_95}
    if paths.validation_images(c).is_file():
        recs = artifacts.load_validation_records(paths, c).images
        v["images"] = len(recs)
        tp, fp, fn = (np.array([len(cast(list, r.get(key, []))) for r in recs]) for key in ("tp", "fp", "fn"))
        v["intervals"] = {"method": "percentile bootstrap over images, 1000 resamples, seed = training.seed",
                          "confidence": 0.95}
        v.update(prf_intervals(tp, fp, fn, resamples=1000, confidence=0.95, seed=cfg.training.seed))
    else:
        v.update({m: {"value": getattr(val.overall, m), "low": None, "high": None}
                  for m in ("precision", "recall", "f1")})
    out["val"] = v
    if val.test is not None:
        t = val.test
        out["test"] = {"images": t.images, "map50": t.map50, "map50_95": t.map50_95, "precision": t.precision,
                       "recall": t.recall, "f1": t.f1}
    return out


def _per_class_ap(val: artifacts.ValidationSummary) -> dict:
    """AP50 and AP50-95 per class, on the decision set when the summary has it, else on validation."""
    if val.decision is not None and val.decision.per_class_ap:
        return {"split": f"decision set ({val.decision.set})",
                "classes": {k: a.model_dump() for k, a in val.decision.per_class_ap.items()}}
    return {"split": val.split, "classes": {k: a.model_dump() for k, a in val.per_class_ap.items()}}


def _history(paths: RunPaths) -> dict:
    """The iteration history: the convergence CSV's rows, each iteration's gate verdict and its report file."""
    rows = store.read_csv(paths.convergence_csv)
    gates = []
    k = 0
    while paths.iteration(k).is_dir():
        if paths.promotion(k).is_file():
            p = artifacts.load_promotion(paths, k)
            gates.append({"iteration": k, "promoted": p.promoted, "champion_after": p.champion_after,
                          "delta": p.delta, "ci_low": p.ci_low, "ci_high": p.ci_high, "alarms": p.alarms})
        k += 1
    reports = [str(paths.iteration_report(i).relative_to(paths.root)) for i in range(k)
               if paths.iteration_report(i).is_file()]
    return {"convergence_csv": rows, "promotions": gates, "iteration_reports": reports}


def _fmt(x) -> str:
    return "-" if x is None or x == "" else (f"{x:.3f}" if isinstance(x, float) else str(x))


def card_markdown(card: dict) -> str:
    """model_card.md from the card's fields."""
    r, m, d, met = card["release"], card["model"], card["dataset"], card["metrics"]
    title = f"{r['name']} ({r['version']})" if r["name"] else r["version"]
    out = [f"# Model card: {title}", "",
           f"Released {r['created_utc']} by al-loop {r['tool_version']}.", ""]
    if m["dry_run"]:
        out += ["> **Dry run:** this run skipped training; the model is untrained.", ""]
    out += ["## Model", "",
            f"- Champion: iteration {m['iteration']} (champion since iteration {m['since_iteration']}; gate metric "
            f"{m['gate_metric']} = {_fmt(m['gate_value'])})",
            f"- Base model: {m['base_model']}; input size {m['imgsz']}; classes: {', '.join(m['names'])}",
            f"- Files: best.pt (sha256 {m['files']['best.pt'][:16]}…), model.onnx (sha256 "
            f"{m['files']['model.onnx'][:16]}…)", "",
            "## Metrics", "", f"At confidence {_fmt(met['conf'])}, match IoU {_fmt(met['iou'])}.", "",
            "| set | images | mAP50 | mAP50-95 | precision | recall | F1 |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    v = met["val"]

    def ci(x: dict) -> str:
        return _fmt(x["value"]) + (f" [{x['low']:.3f}, {x['high']:.3f}]" if x.get("low") is not None else "")

    if "decision_set" in met:
        s = met["decision_set"]
        out.append(f"| decision set ({s['set']}) | {s['images']} | {_fmt(s['map50'])} | {_fmt(s['map50_95'])} | "
                   f"{_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} |")
    out.append(f"| validation | {_fmt(v['images'])} | {_fmt(v['map50'])} | {_fmt(v['map50_95'])} | "
               f"{ci(v['precision'])} | {ci(v['recall'])} | {ci(v['f1'])} |")
    if "test" in met:
        s = met["test"]
        out.append(f"| test | {s['images']} | {_fmt(s['map50'])} | {_fmt(s['map50_95'])} | {_fmt(s['precision'])} | "
                   f"{_fmt(s['recall'])} | {_fmt(s['f1'])} |")
    if "intervals" in v:
        out += ["", f"Brackets: {v['intervals']['confidence']:.0%} intervals ({v['intervals']['method']})."]
    p = card["promotion"]
    if p:
        gap = f"; delta {_fmt(p['delta'])} [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}] at {p['confidence']:.0%}" \
            if p["delta"] is not None else ""
        out += ["", f"Promotion (iteration {p['iteration']}): {p['reason']}{gap}."
                + (f" Alarms: {', '.join(p['alarms'])}." if p["alarms"] else "")]
    ap = card["per_class_ap"]
    out += ["", f"## Per-class AP ({ap['split']})", "", "| class | AP50 | AP50-95 | instances |",
            "| --- | --- | --- | --- |"]
    out += [f"| {k} | {_fmt(a['ap50'])} | {_fmt(a['ap50_95'])} | {a['instances']} |" for k, a in ap["classes"].items()]
    ds = card["decision_set"]
    out += ["", "## Decision set", "",
            (f"{ds['set']}: {ds['images']} images, content hash {ds['content_hash']}, frozen at iteration "
             f"{ds['created_iteration']}." if ds else "None recorded (a run made before the promotion gate).")]
    out += ["", "## Dataset", "", f"Version {d['version']} (id {d['id']}), manifest sha256 "
            f"{_fmt(d['manifest_sha256'])}. Images per split: "
            + ", ".join(f"{k} {n}" for k, n in d["counts"].items()) + ".", "",
            "| split | label origin | images |", "| --- | --- | --- |"]
    for split, by in (d["label_origins"] or {}).items():
        out += [f"| {split} | {origin} | {n} |" for origin, n in sorted(by.items())]
    cfg = card["config"]
    out += ["", "## Config", "", f"Digest {cfg['digest']} ({cfg['file']})." + (
        f" The run recorded {cfg['run_digest']}." if cfg["run_digest"] and cfg["run_digest"] != cfg["digest"] else "")]
    oc = card["onnx_check"]
    out += ["", "## ONNX check", "",
            f"onnxruntime {oc['onnxruntime']} against best.pt on {oc['images']} images: {oc['matched']} of "
            f"{oc['detections_torch']} detections matched; largest box difference {oc['max_box_diff_px']:.3g} px "
            f"(tolerance {oc['box_tol_px']}), raw scores {oc['max_raw_score_diff']:.3g} (tolerance "
            f"{oc['score_tol']}). Details: onnx_check.json."]
    h = card["history"]
    out += ["", "## Iteration history", ""]
    rows = h["convergence_csv"]
    if rows:
        cols = [c for c in ("iteration", "f1", "map50", "map50_95", "labelled_images", "dataset_version")
                if c in rows[0]]
        out += ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
        out += ["| " + " | ".join(_num(row.get(c)) for c in cols) + " |" for row in rows]
    else:
        out.append("No convergence rows recorded.")
    for g in h["promotions"]:
        out.append(f"- iteration {g['iteration']}: {'promoted' if g['promoted'] else 'kept champion'} "
                   f"{g['champion_after']}" + (f", delta {_fmt(g['delta'])}" if g["delta"] is not None else ""))
    return "\n".join(out) + "\n"


def _num(text) -> str:
    try:
        return f"{float(text):.3f}" if text not in (None, "") and "." in str(text) else _fmt(text)
    except ValueError:
        return str(text)


# ------------------------------------------------------------------------------------------------ files, zip

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksums(folder: Path) -> list[str]:
    """SHA256SUMS in `sha256sum -c` format over every file of the bundle; returns the files listed."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = [f for f in files if f != "SHA256SUMS"]
    store.write_text_atomic(folder / "SHA256SUMS", "".join(f"{_sha256(folder / f)}  {f}\n" for f in files))
    for f in [*files, "SHA256SUMS"]:  # the atomic writers' temp files are private (0600); a release is for readers
        os.chmod(folder / f, 0o644)
    return files + ["SHA256SUMS"]


def verify_checksums(folder: Path) -> list[str]:
    """The files of a bundle whose SHA-256 does not match SHA256SUMS (or that are missing or unlisted)."""
    listed = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, _, rel = line.partition("  ")
        listed[rel] = digest
    bad = [f for f, h in listed.items() if not (folder / f).is_file() or _sha256(folder / f) != h]
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    return sorted(bad + [f"{f} (not listed)" for f in present - set(listed)])


def _zip(folder: Path, out: Path, version: str) -> None:
    """The bundle as a zip whose members sit under <version>/ (written to `out`, fsynced)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{version}/{p.relative_to(folder).as_posix()}")
    with open(out, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

