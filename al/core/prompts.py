"""Per-class text prompts and their versions (prompt_versions/prompts_iteration_NN.json).

analyze writes iteration k's version (the texts carried from version k-1, or the config's, plus the data-driven
suggestions of that iteration, each with the prompt edit it proposes); the human edits the file, or accepts a
suggestion, during the review pause; retrain of iteration k reads version k to embed the prompts of the model it
trains for iteration k+1. Pure JSON and text: no model library here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from al.core import store
from al.core.errors import UserError


class PromptError(UserError):
    """A prompt file or prompt text cannot be used; the message names the file, the key and the fix."""


def read_source(path: Path, names: list[str] | None) -> dict[str, str]:
    """prompts.source: a JSON object {"class name": "prompt text"} (or {"texts": {...}}); names checked when
    given."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PromptError(f"{path}: cannot read the prompt file ({e}). Write a JSON object "
                          f'{{"class name": "prompt text", ...}} (key prompts.source).') from None
    if isinstance(raw, dict) and isinstance(raw.get("texts"), dict):
        raw = raw["texts"]
    return check_texts(raw, names, where=str(path))


def check_texts(raw: Any, names: list[str] | None, *, where: str) -> dict[str, str]:
    """{class name: non-empty text}; with `names`, every key must be one of them (a typo would silently prompt
    nothing)."""
    if not isinstance(raw, dict):
        raise PromptError(f'{where}: expected a JSON object {{"class name": "prompt text", ...}}, got '
                          f"{type(raw).__name__}.")
    bad = [str(k) for k, v in raw.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise PromptError(f"{where}: the prompts of {bad} are not non-empty texts. Give each class one text, "
                          f'e.g. "{bad[0]}": "a photo of a {bad[0]}".')
    if names is not None:
        unknown = [str(k) for k in raw if k not in names]
        if unknown:
            raise PromptError(f"{where}: {unknown} are not classes of the dataset (its names: {names}). Fix the "
                              f"class name (a typo?) or remove the prompt.")
    return {str(k): str(v).strip() for k, v in raw.items()}


def load_version(path: Path, names: list[str]) -> dict:
    """A prompt version as retrain uses it: {"texts": {name: text}, "used": [text per class, in names order],
    "from_name": [classes prompted by their bare name], "digest": sha256 of the used texts}. A missing or bad file
    raises PromptError naming it and the fix."""
    if not Path(path).is_file():
        raise PromptError(f"{path}: prompt version not found; analyze writes it (re-run the iteration with "
                          f"--start-iteration, or write {{\"texts\": {{\"class name\": \"prompt text\"}}}}).")
    raw = read_file(path)
    if not isinstance(raw.get("texts", {}), dict):
        raise PromptError(f'{path}: key \'texts\' must be an object {{"class name": "prompt text"}}. Fix the file '
                          f"and run with --resume.")
    texts = check_texts(raw.get("texts", {}), names, where=f"{path}: key 'texts'")
    used = [texts.get(n, n) for n in names]
    return {"file": str(path), "texts": texts, "used": used,
            "from_name": [n for n in names if n not in texts],
            "digest": hashlib.sha256(json.dumps(used).encode()).hexdigest()[:12]}


def read_file(path: Path) -> dict:
    """A prompt version as JSON (a hand-edited file: its schema key may be gone, which is fine here)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PromptError(f"{path}: not valid JSON ({e}). Fix the file (it is edited by hand during the review "
                          f"pause) and run with --resume.") from None
    if not isinstance(raw, dict):
        raise PromptError(f'{path}: expected a JSON object {{"texts": {{"class name": "prompt text"}}, ...}}, got '
                          f"{type(raw).__name__}. Fix the file and run with --resume.")
    return raw


# --- suggestions -> proposed prompt edits ------------------------------------------------------------------

# qualifier appended to a class's prompt for each kind of finding (the evidence key that marks the kind)
_QUALIFIERS = {
    "fn_small": "small, only a few pixels across",
    "fn_border": "partly cut off at the image border",
    "fn_low_contrast": "faint, low contrast against its surroundings",
    "fn_unusual_aspect": "possibly stretched, rotated or partly hidden",
    "recall": "of any size, position or appearance",
    "precision": "not background clutter or look-alike shapes",
}


def _kind(evidence: dict) -> str | None:
    return next((k for k in _QUALIFIERS if k in evidence), None)


def propose(suggestion: dict, errors: list[dict], texts: dict[str, str], names: list[str]) -> dict[str, str]:
    """The prompt edit a suggestion proposes: {class name: new text} for the classes its finding is about (the
    named class, else the classes holding the false negatives of that kind), each current prompt (or the bare
    class name) plus the finding's qualifier. {} when the finding has no prompt side."""
    ev = suggestion.get("evidence") or {}
    kind = _kind(ev)
    if kind is None:
        return {}
    if "class" in ev:
        classes = [str(ev["class"])]
    else:
        def of_kind(e: dict) -> bool:
            if kind == "fn_small":
                return e.get("size") == "small"
            if kind == "fn_border":
                return e.get("position") in ("edge", "corner")
            if kind == "fn_low_contrast":
                return float(e.get("contrast", 1.0)) < float(ev.get("threshold", 0.0))
            return True
        counts: dict[str, int] = {}
        for e in errors:
            if e.get("kind") == "fn" and 0 <= int(e.get("cls", -1)) < len(names) and of_kind(e):
                counts[names[int(e["cls"])]] = counts.get(names[int(e["cls"])], 0) + 1
        classes = sorted(counts, key=lambda n: (-counts[n], names.index(n)))
    out = {}
    for n in classes:
        if n not in names:
            continue
        cur = texts.get(n, n)
        q = _QUALIFIERS[kind]
        out[n] = cur if q in cur else f"{cur.rstrip(' .')}, {q}"
    return out


def accept(path: Path, index: int) -> dict[str, str]:
    """Accept suggestion `index` of a prompt version: its proposed edit goes into the version's texts (what the
    next training embeds) and the suggestion is marked accepted. Returns the edit."""
    raw = read_file(path)
    sugg = raw.get("suggestions") or []
    if not 0 <= index < len(sugg):
        raise PromptError(f"{path}: there is no suggestion {index + 1} (the file has {len(sugg)}).")
    edit = dict(sugg[index].get("prompt_edit") or {})
    if not edit:
        raise PromptError(f"{path}: suggestion {index + 1} proposes no prompt edit (it is about the data or the "
                          f"training settings); act on it, or edit the prompts by hand.")
    raw["texts"] = {**(raw.get("texts") or {}), **edit}
    sugg[index] = {**sugg[index], "accepted": True}
    raw["suggestions"] = sugg
    raw["edited"] = True
    store.write_json(path, raw)
    return edit


def record_use(history_file: Path, version: int, trained: int, loaded: dict) -> None:
    """prompt_history.json: version `version` (as loaded by retrain, edits included) trained iteration `trained`'s
    model."""
    try:
        hist = store.read_json(history_file) if Path(history_file).is_file() else {"versions": []}
    except store.StoreError:
        hist = {"versions": []}
    versions = [v for v in hist.get("versions", []) if isinstance(v, dict)]
    entry = next((v for v in versions if v.get("iteration") == version), None)
    if entry is None:
        entry = {"iteration": version, "file": loaded["file"]}
        versions.append(entry)
    entry["trained"] = {"iteration": trained, "texts": loaded["texts"], "used": loaded["used"],
                        "digest": loaded["digest"], "from_class_name": loaded["from_name"]}
    store.write_json(history_file, {"versions": sorted(versions, key=lambda v: v.get("iteration", 0))})
