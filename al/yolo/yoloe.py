"""YOLOE, seed 004's target: the text-prompted model that iterations 1+ fine-tune (docs/YOLOE.md).

Three parts, all through Ultralytics' own YOLOE API (YOLOEModel, its head's text path, set_classes):
- text encoders with the interface of Ultralytics' TextModel (tokenize / encode_text), built from a LOCAL file only:
  MobileCLIP TorchScript (.ts), OpenAI CLIP (.pt), or the deterministic hashing stand-in (not semantic);
- `prepare_start`: the model a YOLOE training starts from: the previous YOLOE best.pt, or (the first YOLOE
  iteration) model.target with whatever the YOLO26 baseline's tensors fit, and this iteration's prompt version
  embedded as its classes;
- `trainer_class`: a DetectionTrainer that builds and keeps that prompted YOLOEModel (Ultralytics' YOLOETrainer
  would re-create the model without its prompt embeddings, and its text validator would fetch an encoder).
Ultralytics is imported inside the functions: the training child imports this module after prepare_offline.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from al.core.config import TEXT_ENCODER_STANDIN, encoder_advice, expected_encoder
from al.yolo.detector import DetectorError

EMBED_DIM = 512
"""Text embedding width of every YOLOE head Ultralytics ships (YOLOEDetect(nc, 512, ...))."""


# --- text encoders -----------------------------------------------------------------------------------------

class HashingTextEncoder:
    """Deterministic local stand-in for a CLIP text encoder, with the same interface (tokenize, encode_text):
    words, word pairs and character trigrams hashed (SHA-256) into signed buckets of a unit vector. Equal texts get
    equal embeddings and different texts nearly orthogonal ones, so each class prompt identifies its class, but
    there is NO semantics: 'a small detail callout' is no closer to 'detail' than to 'title' beyond shared words.
    Used only when model.text_encoder is 'deterministic'."""

    kind = "deterministic-hashing"
    semantic = False

    def __init__(self, dim: int = EMBED_DIM):
        self.dim = dim

    def tokenize(self, texts: list[str]) -> list[str]:
        return [" ".join(re.findall(r"[a-z0-9]+", t.lower())) for t in texts]

    def encode_text(self, tokens: list[str], dtype: Any = None) -> Any:
        import torch

        out = torch.zeros(len(tokens), self.dim, dtype=torch.float32)
        for i, text in enumerate(tokens):
            words = text.split()
            feats = [("w", w, 1.0) for w in words] + [("b", f"{a} {b}", 0.7) for a, b in zip(words, words[1:])]
            padded = f" {text} "
            feats += [("c", padded[j:j + 3], 0.3) for j in range(len(padded) - 2)]
            for tag, f, weight in feats:
                h = hashlib.sha256(f"{tag}:{f}".encode()).digest()
                idx = int.from_bytes(h[:4], "little") % self.dim
                out[i, idx] += weight if h[4] & 1 else -weight
            norm = out[i].norm()
            if norm == 0:
                raise DetectorError(f"prompt {text!r} has no letters or digits to embed; give it a text")
            out[i] /= norm
        return out.to(dtype or torch.float32)


class TorchScriptTextEncoder:
    """MobileCLIP / MobileCLIP2 text encoder in TorchScript (Ultralytics' MobileCLIPTS), loaded from a local file
    with no download; CLIP's BPE tokenizer (context 77)."""

    semantic = True

    def __init__(self, path: Path, device: str = "cpu"):
        import torch

        self.kind = f"mobileclip-torchscript:{path.name}"
        self.path = path
        self.encoder = torch.jit.load(str(path), map_location=device)
        self.device = device
        self._tokenize = _clip_tokenizer(path)

    def tokenize(self, texts: list[str]) -> Any:
        return self._tokenize(texts).to(self.device)

    def encode_text(self, tokens: Any, dtype: Any = None) -> Any:
        import torch

        with torch.inference_mode():
            return self.encoder(tokens).to(dtype or torch.float32)  # MobileCLIPTS normalises inside the graph


class OpenAIClipTextEncoder:
    """OpenAI CLIP (Ultralytics' CLIP text model) from a local checkpoint file such as ViT-B-32.pt."""

    semantic = True

    def __init__(self, path: Path, device: str = "cpu"):
        try:
            import clip
        except ImportError:
            raise DetectorError(f"model.text_encoder {path} is an OpenAI CLIP checkpoint, which needs the 'clip' "
                                f"package: pip install git+https://github.com/ultralytics/CLIP.git (or use a "
                                f"MobileCLIP .ts file)") from None
        self.kind = f"openai-clip:{path.name}"
        self.model = clip.load(str(path), device=device)[0].eval()
        self._tokenize = clip.tokenize
        self.device = device

    def tokenize(self, texts: list[str]) -> Any:
        return self._tokenize(texts, truncate=True).to(self.device)

    def encode_text(self, tokens: Any, dtype: Any = None) -> Any:
        import torch

        with torch.inference_mode():
            f = self.model.encode_text(tokens).float()
            return (f / f.norm(dim=-1, keepdim=True)).to(dtype or torch.float32)


def _clip_tokenizer(path: Path):
    """CLIP's tokenizer, from the `clip` package Ultralytics uses, else open_clip's copy of the same BPE."""
    try:
        import clip

        return lambda texts: clip.tokenize(texts, truncate=True)
    except ImportError:
        pass
    try:
        import open_clip

        return lambda texts: open_clip.tokenize(texts)
    except ImportError:
        raise DetectorError(f"model.text_encoder {path} needs CLIP's tokenizer: pip install "
                            f"git+https://github.com/ultralytics/CLIP.git (or pip install open_clip_torch)") from None


def build_encoder(setting: str | None, target: str, device: str = "cpu"):
    """The text encoder model.text_encoder names. A missing setting or file raises DetectorError naming the key,
    the file and how to obtain it (the config check says the same before anything runs)."""
    if setting == TEXT_ENCODER_STANDIN:
        return HashingTextEncoder()
    if not setting:
        raise DetectorError(f"key 'model.text_encoder' is not set: the YOLOE target {Path(target).name} needs a "
                            f"local text encoder. {encoder_advice(target)}")
    path = Path(setting)
    if not path.is_file():
        raise DetectorError(f"key 'model.text_encoder' = {setting!r}: text encoder weights not found (expected the "
                            f"file {path}). {encoder_advice(target)}")
    if path.suffix == ".ts":
        return TorchScriptTextEncoder(path, device)
    return OpenAIClipTextEncoder(path, device)


def encoder_info(enc) -> dict:
    """What metadata and logs say about an encoder (the stand-in is named as not semantic)."""
    info: dict[str, Any] = {"kind": enc.kind, "semantic": enc.semantic}
    p = getattr(enc, "path", None)
    if p is not None:
        info["file"] = str(p)
    if not enc.semantic:
        info["note"] = ("deterministic hashing stand-in (model.text_encoder: deterministic): prompts only identify "
                        "classes; no language understanding")
    return info


def text_features(enc, texts: list[str]):
    """(1, n, D) float32 text features, as YOLOEModel.get_text_pe(without_reprta=True) returns them."""
    feats = enc.encode_text(enc.tokenize(texts))
    if feats.ndim != 2 or feats.shape[0] != len(texts):
        raise DetectorError(f"text encoder {enc.kind} returned features of shape {tuple(feats.shape)} for "
                            f"{len(texts)} prompts")
    return feats.float()[None]


# --- the model a YOLOE training starts from ----------------------------------------------------------------

def _detect_yaml(cfg: dict) -> dict:
    """A YOLOE model dict as a detector: a -seg head (YOLOESegment / YOLOESegment26) becomes YOLOEDetect with the
    same classes and embedding width; the mask branch is dropped (the loop trains boxes)."""
    cfg = copy.deepcopy(cfg)
    head = cfg["head"][-1]
    if head[2].startswith("YOLOESegment"):
        args = head[3]
        head[2], head[3] = "YOLOEDetect", [args[0], args[3], args[4]] if len(args) >= 5 else [args[0], EMBED_DIM,
                                                                                                True]
    if head[2] != "YOLOEDetect":
        raise DetectorError(f"model.target's last layer is {head[2]}, not a YOLOE head (YOLOEDetect or "
                            f"YOLOESegment); use a YOLOE YAML (e.g. yoloe-26n.yaml) or a YOLOE .pt")
    return cfg


def _target_model(target: str):
    """An untrained-or-pretrained YOLOEModel (detection head) from model.target, and what it came from."""
    import torch
    from ultralytics.nn.tasks import YOLOEModel, yaml_model_load

    if target.endswith(".pt"):
        from ultralytics.utils.patches import torch_load

        try:
            ck = torch_load(target, map_location="cpu")
        except Exception as e:  # a truncated or foreign file
            raise DetectorError(f"model.target {target}: cannot load ({e}). Use an Ultralytics YOLOE checkpoint.") \
                from e
        src: Any = (ck.get("ema") or ck.get("model")) if isinstance(ck, dict) else None
        if not isinstance(src, YOLOEModel):
            raise DetectorError(f"model.target {target} holds {type(src).__name__}, not a YOLOE model; use a YOLOE "
                                f"checkpoint (e.g. yoloe-26n-seg.pt) or a YOLOE YAML (yoloe-26n.yaml)")
        net: Any = src  # Ultralytics types its module attributes as Tensor | Module
        if hasattr(net.model[-1], "lrpc") or getattr(net.model[-1], "is_fused", False):
            raise DetectorError(f"model.target {target} is a prompt-free (-pf) or fused YOLOE model, which cannot take "
                                f"new text prompts; use the text-prompt checkpoint (e.g. yoloe-26n-seg.pt)")
        cfg = _detect_yaml(net.yaml)
        torch.manual_seed(0)
        model = YOLOEModel(cfg, nc=cfg["nc"], verbose=False)
        moved = _transfer(model, net.float())
        return model, {"source": target, "pretrained": True, "from_target_checkpoint": moved,
                       "text_model": net.yaml.get("text_model")}
    try:
        cfg = _detect_yaml(yaml_model_load(target))
    except (FileNotFoundError, OSError) as e:
        raise DetectorError(f"model.target {target}: no such model YAML ({e}); name one Ultralytics ships (e.g. "
                            f"yoloe-26n.yaml) or a local file") from None
    torch.manual_seed(0)
    model = YOLOEModel(cfg, nc=cfg["nc"], verbose=False)
    return model, {"source": target, "pretrained": False, "text_model": cfg.get("text_model")}


def _transfer(dst, src) -> dict:
    """Copy every tensor of `src` whose name and shape exist in `dst`; report it per layer (by the layer's index
    and module type in dst): which layers came over whole, in part, or not at all."""
    dsd, ssd = dst.state_dict(), src.state_dict()
    hit = {k: v for k, v in ssd.items() if k in dsd and dsd[k].shape == v.shape}
    dst.load_state_dict(hit, strict=False)
    per: dict[int, list[int]] = {}
    for k, v in dsd.items():
        parts = k.split(".")
        if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit():
            c = per.setdefault(int(parts[1]), [0, 0])
            c[1] += v.numel()
            if k in hit:
                c[0] += v.numel()
    full = [i for i, (a, b) in sorted(per.items()) if a == b]
    part = [i for i, (a, b) in sorted(per.items()) if 0 < a < b]
    none = [i for i, (a, b) in sorted(per.items()) if a == 0]
    total = sum(v.numel() for v in dsd.values())
    moved = sum(v.numel() for v in hit.values())
    return {"tensors": len(hit), "tensors_total": len(dsd), "values": moved, "values_total": total,
            "share": round(moved / total, 4) if total else 0.0, "layers_whole": full, "layers_partial": part,
            "layers_none": none,
            "layer_types": {str(i): type(dst.model[i]).__name__ for i in sorted(per) if i in part + none}}


def _load_checkpoint_model(path: Path) -> Any:
    from ultralytics.utils.patches import torch_load

    ck = torch_load(str(path), map_location="cpu")
    m = (ck.get("ema") or ck.get("model")) if isinstance(ck, dict) else None
    if m is None:
        raise DetectorError(f"{path}: no model inside; re-make it with --start-iteration")
    return m.float()


def prepare_start(source: Path, target: str, names: list[str], prompts: list[str], encoder, out: Path) -> dict:
    """Write `out`: the YOLOE checkpoint a training starts from, with `names` as its classes and the embeddings of
    `prompts` (one text per class, this iteration's prompt version) set through YOLOEModel.set_classes. `source`
    is the model being fine-tuned: a YOLOE best.pt is used as it is; any other (the YOLO26 baseline) gives its
    fitting tensors to a fresh model.target. Returns the report for metadata."""
    import torch
    from ultralytics.nn.tasks import YOLOEModel

    src = _load_checkpoint_model(source)
    model: Any
    if isinstance(src, YOLOEModel):
        model = src
        report: dict[str, Any] = {"start": "previous YOLOE model", "source": str(source)}
    else:
        model, report = _target_model(target)
        report = {"start": "model.target", **report,
                  "from_baseline": {"source": str(source), "architecture": type(src).__name__,
                                    "head": type(src.model[-1]).__name__, **_transfer(model, src)}}
    head: Any = model.model[-1]
    feats = text_features(encoder, prompts).to(next(model.parameters()).dtype)
    if feats.shape[-1] != head.embed:
        raise DetectorError(f"text encoder {encoder.kind} gives {feats.shape[-1]}-d embeddings, the YOLOE head "
                            f"expects {head.embed}-d. {encoder_advice(target)}")
    model.eval()
    with torch.no_grad():
        pe = head.get_tpe(feats)  # the head's own text projection (reprta), as YOLOEModel.get_text_pe does
    model.set_classes(list(names), pe)  # Ultralytics' YOLOE API: class names + their prompt embeddings
    model.args = {"imgsz": 640, "task": "detect"}
    text_model = (model.yaml or {}).get("text_model")
    enc = encoder_info(encoder)
    want = expected_encoder(target)
    if enc["semantic"] and Path(enc.get("file", "")).name != want:
        enc["warning"] = (f"{Path(target).name} was trained with {want} (text_model {text_model}); embeddings of "
                          f"another encoder live in another space")
    report.update(arch=type(model).__name__, text_model=text_model, names=list(names), prompts=list(prompts),
                  encoder=enc, embed_dim=int(head.embed))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"model": model, "ema": None, "epoch": -1, "train_args": {}, "date": None, "version": None}, tmp)
    os.replace(tmp, out)
    return report


def is_yoloe_checkpoint(path: Path) -> bool:
    from ultralytics.nn.tasks import YOLOEModel

    return isinstance(_load_checkpoint_model(path), YOLOEModel)


def trainer_class():
    """The DetectionTrainer that trains a prompted YOLOE start model (al.yolo.yoloe_trainer; imported only after
    prepare_offline: it imports Ultralytics at module level, so that a DDP child can import the class by name)."""
    from al.yolo.yoloe_trainer import PromptedYOLOETrainer

    return PromptedYOLOETrainer


def write_report(path: Path, report: dict) -> None:
    from al.core import store

    store.write_json(path, json.loads(json.dumps(report)))
