"""Step 2: categorise false negatives/positives, save FN crops and plots, derive prompt suggestions."""

from __future__ import annotations

from al.core import artifacts, prompts, store
from al.core.context import StepContext
from al.core.events import Message
from al.report import error_analysis


def _current_prompts(ctx: StepContext) -> dict[str, str]:
    """Prompts carried from the previous iteration's file (the user may have edited it), else from the config."""
    k, paths, pc = ctx.iteration, ctx.env.paths, ctx.env.cfg.prompts
    if k > 0 and paths.prompts(k - 1).is_file():
        return dict(prompts.read_file(paths.prompts(k - 1)).get("texts") or {})
    texts = dict(prompts.read_source(pc.source, None)) if pc.source else {}
    texts.update(pc.texts)
    return texts


def run(ctx: StepContext) -> str:
    k, paths, cfg = ctx.iteration, ctx.env.paths, ctx.env.cfg
    summary = artifacts.load_validation(paths, k)
    records = artifacts.load_validation_records(paths, k)
    val = {"iteration": k, "names": summary.names, "images": records.images}
    report = error_analysis.analyze(val, paths.error_analysis(k), crop_margin=cfg.analysis.crop_margin,
                                    max_crops=cfg.analysis.max_crops)
    suggestions = store.read_json(paths.prompt_suggestions(k)).get("suggestions", []) \
        if paths.prompt_suggestions(k).is_file() else []
    texts = _current_prompts(ctx)
    # each suggestion carries the prompt edit it proposes; the review screen's accept key applies one to this file
    suggestions = [{**sg, "prompt_edit": prompts.propose(sg, report["errors"], texts, summary.names)}
                   for sg in suggestions]
    store.write_json(paths.prompts(k), {"iteration": k, "texts": texts,
                                        "suggestions": suggestions,
                                        "read_by": f"retrain of iteration {k} (the model of iteration {k + 1})"})
    history = store.read_json(paths.prompt_history).get("versions", []) if paths.prompt_history.is_file() else []
    history = [h for h in history if h["iteration"] < k]
    history.append({"iteration": k, "file": str(paths.prompts(k)), "suggestions": len(suggestions),
                    "texts": texts})
    store.write_json(paths.prompt_history, {"versions": history})
    t = report["totals"]
    sizes = ", ".join(f"{b} {v['fn']}" for b, v in report["by_size"].items())
    ctx.ui.emit(Message(f"[ANALYZE] FN={t['fn']} FP={t['fp']} (FN by size: {sizes}); "
                         f"{len(suggestions)} prompt suggestions"))
    return "next"
