"""The local review backend: write the annotation package when the human is asked, then import the labels from
review.local.import_from, the package's returned/ folder, or seed 004's YOLO export in dataset.combined_dir."""

from __future__ import annotations

from pathlib import Path

from al.core.context import StepContext
from al.core.events import Message
from al.review import (
    Labelled,
    ReviewError,
    imports,
    package,
    pick_predictions,
    pre_annotation_conf,
)


def prepare(ctx: StepContext, picks: list[dict], names: list[str]) -> dict:
    """Write the annotation package (folder + zip) for the picks; returns what the review screen shows."""
    k, lc = ctx.iteration, ctx.env.cfg.review.local
    rp = ctx.env.paths
    extra = lc.guidelines.read_text(encoding="utf-8") if lc.guidelines else None
    res = package.build(rp.package(k), rp.package_zip(k) if lc.make_zip else None, picks, pick_predictions(ctx),
                        names, iteration=k, conf=pre_annotation_conf(ctx), thumbnails=lc.thumbnails,
                        thumb_size=lc.thumbnail_size, extra_guidelines=extra)
    ctx.ui.emit(Message(f"[REVIEW] Annotation package: {res['dir']} ({res['images']} images, "
                         f"{res['pre_annotations']} pre-annotations)" + (f"; zip: {res['zip']}" if res["zip"] else "")))
    return {"backend_status": f"local annotation package {res['dir']} ({res['images']} images); return labels in "
                              f"{ctx.env.cfg.review.local.import_from or res['returned_dir']}", "package": res}


def label_source(import_from: Path | None, returned: Path, combined: Path | None) -> tuple[str, Path | None]:
    """Where the human's labels are taken from, in this order: review.local.import_from ('import_from'), the
    package's returned/ folder when it holds labels ('returned'), else the YOLO export in dataset.combined_dir
    ('combined'; the path may be None or hold nothing yet). The review screen's preview uses the same answer."""
    if import_from is not None:
        return "import_from", Path(import_from)
    if package.has_returned(Path(returned)):
        return "returned", Path(returned)
    return "combined", Path(combined) if combined else None


def _find(ctx: StepContext, picks: list[dict], names: list[str], dry: bool,
          unpack_dir: Path | None) -> tuple[list[Labelled], dict]:
    """The human's labels, from where label_source() says."""
    k, cfg = ctx.iteration, ctx.env.cfg
    rp = ctx.env.paths
    kind, src = label_source(cfg.review.local.import_from, rp.returned(k), cfg.dataset.combined_dir)
    rules = imports.Rules.local(cfg.review.local, names)
    if kind != "combined":
        if src is None:
            raise RuntimeError(f"label_source() gave no path for {kind!r}")  # only 'combined' may lack one
        if not (rp.package(k) / "package.json").is_file():
            if dry:
                raise ReviewError(f"{rp.package(k)}: no annotation package yet; the review step writes it when it "
                                  f"asks for the review.")
            prepare(ctx, picks, names)  # the package maps the returned files back to the picks
        if not Path(src).exists():
            raise ReviewError(f"Dataset not found: {src} (review.local.import_from) does not exist. Put the "
                              f"reviewed labels there, then run again with --resume.")
        cands, summary = package.import_returned(Path(src), rp.package(k), names, unpack_dir or rp.unpacked(k),
                                                 rules=rules)
        if not cands:
            raise ReviewError(f"{src}: none of the returned labels belongs to an image of the package "
                              f"{rp.package(k)} (they are matched by file name, Roboflow's renaming undone, or by "
                              f"image content). Keep the image names, then run again with --resume.")
        unedited = summary["unedited_pre_annotations"]
        if unedited and unedited == summary["returned_labelled"] and not dry:
            ctx.ui.emit(Message("[REVIEW] WARNING: every returned label file equals the model's pre-annotation; "
                                 "were they reviewed? They are imported as human labels.", "warning"))
        return cands, summary
    combined = cfg.dataset.combined_dir
    if combined is None:
        raise ReviewError(f"No reviewed labels: {rp.returned(k)} is empty and key 'dataset.combined_dir' is not set "
                          f"in {cfg.source_path}. Put the corrected labels in {rp.returned(k)}, set "
                          f"review.local.import_from, or use --auto / review_source: simulated.")
    yml = combined / "data.yaml"
    if not yml.is_file():
        raise ReviewError(f"Dataset not found: no reviewed labels in {rp.returned(k)} and no export at {yml}. Put "
                          f"the corrected labels in {rp.returned(k)} (YOLO .txt files, a COCO JSON or a zip), or "
                          f"export the reviewed dataset in YOLO format to {combined} (images/, labels/, data.yaml), "
                          f"then run again with --resume.")
    wanted = imports.wanted_picks(picks)
    return imports.labelled(imports.yolo_dataset(yml, imports.Matcher(wanted), rules, extras=True), wanted, "combined")


def collect(ctx: StepContext, picks: list[dict], names: list[str], *, dry: bool = False,
            unpack_dir: Path | None = None) -> tuple[list[Labelled], dict]:
    """The reviewed picks as Labelled records, and how many came back. A returned zip is unpacked into
    `unpack_dir` (default: the iteration's review_returned_unpacked/; the merge may copy images from there). `dry`
    (the import preview): no package is written and nothing is said; give an unpack_dir outside the run tree."""
    cands, summary = _find(ctx, picks, names, dry, unpack_dir)
    if dry:
        return cands, summary
    back = summary["not_returned"]
    ctx.ui.emit(Message(f"[REVIEW] {summary['source']}: {summary['returned_labelled']} of {len(picks)} picks came "
                         f"back labelled ({summary['negatives']} without objects, kept as negatives)"
                         + (f"; not back: {', '.join(back[:5])}{' ...' if len(back) > 5 else ''}" if back else "")))
    return cands, summary
