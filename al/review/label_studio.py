"""Review in Label Studio through the official `label-studio-sdk`: the picks become tasks of a project whose
labelling config holds the dataset's classes (one image upload each, the model's boxes as predictions with their
scores); on continue the project's JSON export is read back and the submitted annotations become Labelled records.

The images are uploaded (not served from local-files storage): an upload works with any server, local or a team's,
without server-side settings or path rules, and costs one copy of the picks in the server's media folder.

The API token comes only from an environment variable or a secrets file the user names. It travels in the
Authorization header only; every message that leaves this module is scrubbed of it, and no SDK exception (its
text may hold a response body) is re-raised with its context.
"""

from __future__ import annotations

import json
import logging
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np

from al.core import store
from al.core.config import LabelStudioReviewConfig
from al.core.context import StepContext
from al.core.errors import Interrupted
from al.core.events import Event, Message, Progress
from al.data import hashing
from al.review import Labelled, ReviewError, pick_predictions, pre_annotation_conf, secrets
from al.review.imports import unique_names
from al.review.secrets import Secret

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

log = logging.getLogger("al")

SOURCE = "label-studio"
CONTROL, IMAGE = "label", "image"
"""The RectangleLabels control's name and the Image object's name in the labelling config the loop writes."""
MAX_BACKOFF_S = 60.0
RECORD_SCHEMA = 1


# ------------------------------------------------------------------------------------------------------ the token

class Token(Secret):
    """The API token and where it was read from (the place is safe to show; the value never is)."""


def load_token(lcfg: LabelStudioReviewConfig) -> Token:
    """The token from the environment variable review.label_studio.api_key_env, else from its secrets_file."""
    env = lcfg.api_key_env
    val = secrets.from_env(env)
    if val:
        return Token(val, f"environment variable {env}")
    f = lcfg.secrets_file
    if f is not None:
        got = read_secrets_file(Path(f), env)
        if got:
            return Token(got, f"secrets file {f}")
        raise ReviewError(f"{f}: no Label Studio token found (review.label_studio.secrets_file). Write the bare token "
                          f"on one line, or a line {env}=<token>.")
    raise ReviewError(f"Label Studio API token not found: set the environment variable {env} (export {env}=<token>; "
                      f"Label Studio > Account & Settings > Legacy Token or Personal Access Token; `al-loop "
                      f"label-studio` prints the one it generated) or name a secrets file in "
                      f"review.label_studio.secrets_file. The token is never written to the config.")


def read_secrets_file(f: Path, env: str) -> str | None:
    """The token in a secrets file: a line `env=<token>` (or `export env=...`, `token=...`), or one bare line."""
    return secrets.read_secrets_file(f, env, names=("api_key", "token"), key="review.label_studio.secrets_file")


# ---------------------------------------------------------------------------------------------- labelling config

def label_config(names: list[str]) -> str:
    """The labelling config: the image and one RectangleLabels control with the dataset's classes, in order."""
    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in names)
    return (f'<View>\n  <Header value="$al_name"/>\n  <Image name="{IMAGE}" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{CONTROL}" toName="{IMAGE}">\n{labels}\n  </RectangleLabels>\n</View>\n')


def config_classes(xml: str) -> tuple[str, str, list[str]] | None:
    """(control name, image name, label values) of the first RectangleLabels control of a labelling config."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.lower() == "rectanglelabels":
            return (el.get("name", ""), el.get("toName", ""),
                    [lab.get("value", "") for lab in el if lab.tag.lower() == "label"])
    return None


# ------------------------------------------------------------------------------------------------- the SDK client

def http_status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _detail(exc: BaseException, token: Token) -> str:
    """The server's message of an SDK error (its body's detail), scrubbed before it is shortened."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        text = str(body.get("detail") or body.get("validation_errors") or body)
    elif body is not None:
        text = str(body)
    else:
        text = f"{type(exc).__name__}: {exc}"
    if "<html" in text[:500].lower():
        text = "an HTML page, not an answer of Label Studio's API"
    return " ".join(token.scrub(text).split())[:300]


class Client:
    """One Label Studio server, reached through the SDK with retries, clear errors and a scrubbed token."""

    def __init__(self, lcfg: LabelStudioReviewConfig, token: Token, *,
                 emit: Callable[[Event], None] = lambda e: None, stop_requested: Callable[[], bool] = lambda: False):
        self.cfg, self.token, self.emit, self.stop_requested = lcfg, token, emit, stop_requested
        try:
            from label_studio_sdk import LabelStudio
        except ImportError as e:
            raise ReviewError(f"review.backend: label_studio needs the Label Studio SDK ({e}). Install the tool's "
                              f"dependencies (pip install -e . : label-studio-sdk==2.0.19), or use review.backend: "
                              f"local.") from None
        self.ls: LabelStudio = LabelStudio(base_url=lcfg.url, api_key=token.value, timeout=lcfg.timeout_s)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:  # a quit must not wait out a long backoff
            if self.stop_requested():
                raise Interrupted("stopped while waiting for Label Studio; --resume continues")
            time.sleep(min(left, 0.1))

    def _fatal(self, code: int | None, what: str, detail: str, transient: bool) -> ReviewError:
        url, env = self.cfg.url, self.cfg.api_key_env
        if code == 401:
            msg = (f"Label Studio at {url} rejected the API token (HTTP 401) read from {self.token.where} while "
                   f"{what}: {detail}. Copy the token from Label Studio > Account & Settings into {env} (or the "
                   f"secrets file); a legacy token needs legacy tokens enabled for the organization (`al-loop "
                   f"label-studio` enables them); then continue (--resume).")
        elif code == 403:
            msg = (f"Label Studio at {url} refused access (HTTP 403) while {what}: {detail}. Use the token of a "
                   f"user who is a member of the project's organization, then continue (--resume).")
        elif code == 404:
            msg = (f"Label Studio at {url} answered 'not found' (HTTP 404) while {what}: {detail}. Check "
                   f"review.label_studio.url (the server's base URL, without /projects); a project or task deleted "
                   f"in Label Studio is re-created by the review step of a new round (--start-iteration); then "
                   f"continue (--resume).")
        elif code is None and transient:
            msg = (f"Cannot reach Label Studio at {url} while {what} ({detail}), after "
                   f"{self.cfg.max_retries} retries. Start it (`al-loop label-studio --config <config>` starts a "
                   f"local one) or fix review.label_studio.url, then continue (--resume).")
        else:
            msg = (f"Label Studio error while {what}" + (f" (HTTP {code})" if code else "") + f": {detail}. "
                   + ("It kept failing after review.label_studio.max_retries retries; try again later with --resume."
                      if transient else "Fix the cause, then continue (--resume)."))
        return ReviewError(msg)

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """fn(*args) with retries and backoff on 429/5xx/connection errors; any other failure becomes a
        ReviewError that says what to fix (never carrying the token, nor the SDK exception)."""
        import httpx

        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except (Interrupted, ReviewError):
                raise
            except Exception as exc:  # ApiError (status + body), httpx transport errors, a bad JSON answer
                code = http_status(exc)
                transient = isinstance(exc, httpx.TransportError) or code == 429 or (code or 0) >= 500
                detail = _detail(exc, self.token)
                if not transient or attempt >= self.cfg.max_retries:
                    raise self._fatal(code, what, detail, transient) from None
                delay = min(MAX_BACKOFF_S, self.cfg.retry_backoff_s * 2 ** attempt)
                attempt += 1
                self.emit(Message(f"[REVIEW] Label Studio: {what} failed ({detail}"
                                  f"{f', HTTP {code}' if code else ''}); retry {attempt}/{self.cfg.max_retries} in "
                                  f"{delay:.1f} s", "warning"))
                self._sleep(delay)

    # -- the project
    def connect(self) -> None:
        """Check the server and the token (GET /api/current-user/whoami)."""
        self.call(f"checking the API token at {self.cfg.url}", self.ls.users.whoami)

    def project(self, title: str, names: list[str]) -> int:
        """The id of the project titled `title`, created with the dataset's classes when missing; a reused
        project's labelling config must hold the dataset's classes."""
        found = [p for p in self.call("listing the projects", lambda: list(self.ls.projects.list(title=title)))
                 if p.title == title]
        if len(found) > 1:
            raise ReviewError(f"Label Studio at {self.cfg.url} has {len(found)} projects titled {title!r} (ids "
                              f"{[p.id for p in found]}); rename or delete all but one, or set "
                              f"review.label_studio.project to another title.")
        if found:
            pid = int(found[0].id)
            proj = self.call(f"opening project {pid}", self.ls.projects.get, pid)
            self.check_config(pid, title, proj.label_config or "", names)
            return pid
        made = self.call(f"creating project {title!r}", self.ls.projects.create, title=title,
                         label_config=label_config(names), show_skip_button=True,
                         description="Hard examples picked by al-loop; fix the model's boxes, submit an empty "
                                     "annotation for an image without objects.")
        return int(made.id)

    def check_config(self, pid: int, title: str, xml: str, names: list[str]) -> None:
        got = config_classes(xml)
        fix = (f"Set review.label_studio.project to a new title (the loop creates it with the dataset's classes), or "
               f"edit the labelling config of project {title!r} (Settings > Labeling Interface)")
        if got is None:
            raise ReviewError(f"Label Studio project {title!r} (id {pid}) has no RectangleLabels control in its "
                              f"labelling config. {fix}.")
        labels = got[2]
        missing = [n for n in names if n not in labels]
        extra = [n for n in labels if n not in names]
        if missing or extra:
            raise ReviewError(f"Label Studio project {title!r} (id {pid}): its labels {labels} are not the dataset's "
                              f"classes {names} (missing {missing}, unknown {extra}). {fix} so that it holds exactly "
                              f"the dataset's classes.")

    # -- tasks
    def upload(self, pid: int, path: Path, name: str) -> str:
        """Upload one image to the project (no task is made) and return its URL on the server (/data/upload/...).
        Through the SDK's own HTTP client: the typed SDK imports only JSON tasks."""
        def send() -> Any:
            with open(path, "rb") as fh:
                resp = self.ls._client_wrapper.httpx_client.request(
                    f"api/projects/{pid}/import", method="POST", params={"commit_to_project": False},
                    files={"file": (name, fh, "application/octet-stream")}, data={})
            if resp.status_code >= 400:
                from label_studio_sdk.core.api_error import ApiError

                try:
                    body: Any = resp.json()
                except ValueError:
                    body = resp.text[:300]
                raise ApiError(status_code=resp.status_code, body=body)
            ids = resp.json().get("file_upload_ids") or []
            if len(ids) != 1:
                raise ReviewError(f"Label Studio took the upload of {name} but returned {len(ids)} file ids; "
                                  f"check the server's log, then continue (--resume).")
            return self.ls.files.get(ids[0]).file

        stored = str(self.call(f"uploading {name}", send) or "")
        if not stored:
            raise ReviewError(f"Label Studio returned no stored file for the upload of {name}.")
        return stored if stored.startswith(("/", "http://", "https://")) else f"/data/{stored}"

    def tasks(self, pid: int) -> list[dict]:
        """Every task of the project, with its data (to find this iteration's tasks after an interrupted import)."""
        got = self.call(f"listing the tasks of project {pid}",
                        lambda: list(self.ls.tasks.list(project=pid, fields="all")))
        return [{"id": int(t.id), "data": dict(t.data or {})} for t in got]

    def import_tasks(self, pid: int, tasks: list[dict]) -> list[int]:
        res = self.call(f"importing {len(tasks)} tasks into project {pid}", self.ls.projects.import_tasks, pid,
                        request=tasks, return_task_ids=True)
        ids = list(getattr(res, "task_ids", None) or [])
        if len(ids) != len(tasks):
            raise ReviewError(f"Label Studio imported {len(ids)} of {len(tasks)} tasks into project {pid}; check "
                              f"the server's log, then continue (--resume).")
        return [int(i) for i in ids]

    def export(self, pid: int) -> list[dict]:
        """The project's JSON export (every task, with its annotations)."""
        def run() -> Any:
            data = b"".join(self.ls.projects.exports.download_sync(pid, export_type="JSON", download_all_tasks=True))
            return json.loads(data)

        out = self.call(f"exporting project {pid}", run)
        if not isinstance(out, list):
            raise ReviewError(f"Label Studio's JSON export of project {pid} is not a list of tasks.")
        return out


def project_title(ctx: StepContext) -> str:
    return ctx.env.cfg.review.label_studio.project or f"al-loop {ctx.env.paths.root.resolve().name}"[:50]


def run_key(ctx: StepContext) -> str:
    """Which run a task belongs to (runs may share a project): a hash of the run folder, not the path itself."""
    import hashlib

    return hashlib.sha1(str(ctx.env.paths.root.resolve()).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------- pre-annotations

def prediction(rec: dict | None, names: list[str], conf: float, version: str) -> list[dict]:
    """The model's boxes of one image as a Label Studio prediction (percent of the image, a score per box)."""
    if not rec:
        return []
    w, h = float(rec["width"]), float(rec["height"])
    result = []
    for r in rec.get("pred", []):
        c, s, x1, y1, x2, y2 = int(r[0]), float(r[1]), *map(float, r[2:6])
        if s < conf or not 0 <= c < len(names):
            continue
        x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
        y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
        if x2 <= x1 or y2 <= y1:
            continue
        result.append({"from_name": CONTROL, "to_name": IMAGE, "type": "rectanglelabels",
                       "original_width": int(w), "original_height": int(h), "image_rotation": 0, "score": round(s, 4),
                       "value": {"x": x1 / w * 100, "y": y1 / h * 100, "width": (x2 - x1) / w * 100,
                                 "height": (y2 - y1) / h * 100, "rotation": 0, "rectanglelabels": [names[c]]}})
    if not result:
        return []
    return [{"model_version": version, "score": round(float(np.mean([b["score"] for b in result])), 4),
             "result": result}]


# ------------------------------------------------------------------------------------------------ the step's backend

def _record(ctx: StepContext) -> dict | None:
    f = ctx.env.paths.label_studio_tasks(ctx.iteration)
    return store.read_json(f, required=("project_id", "items")) if f.is_file() else None


def prepare(ctx: StepContext, picks: list[dict], names: list[str]) -> dict:
    """Create or reuse the project, upload each pick and import one task per pick with the model's boxes as
    predictions. Re-running after an interruption reuses what the record or the project already holds."""
    k, lcfg = ctx.iteration, ctx.env.cfg.review.label_studio
    rp = ctx.env.paths
    client = Client(lcfg, load_token(lcfg), emit=ctx.ui.emit, stop_requested=ctx.ui.stop_requested)
    client.connect()
    title = project_title(ctx)
    pid = client.project(title, names)
    old = _record(ctx)
    prev = {it["name"]: it for it in old["items"]} if old and old.get("project_id") == pid \
        and old.get("url") == lcfg.url else {}
    run = run_key(ctx)
    on_server = {(t["data"].get("al_iteration"), t["data"].get("al_name")): t["id"] for t in client.tasks(pid)
                 if t["data"].get("al_run") == run}
    recs = pick_predictions(ctx) if lcfg.pre_annotations else {}
    conf = pre_annotation_conf(ctx)
    items: list[dict] = []
    rec: dict[str, Any] = {"schema": RECORD_SCHEMA, "iteration": k, "run": run, "url": lcfg.url, "project_id": pid,
                           "project_title": title, "project_url": f"{lcfg.url}/projects/{pid}/data", "items": items}
    for i, (pk, name) in enumerate(zip(picks, unique_names([p["image"] for p in picks])), 1):
        img = pk["image"]
        fresh = {"name": name, "pick": img, "hash": hashing.file_hash(img)}
        it = {**fresh, **prev.get(name, {})}
        if it["pick"] != img or it["hash"] != fresh["hash"]:  # the record of another image: start afresh
            it = fresh
        task = on_server.get((k, name))
        if task is not None:
            it["task_id"] = task
        elif "task_id" in it:
            del it["task_id"]  # deleted on the server since: import it again
        if "task_id" not in it and not it.get("upload"):
            it["upload"] = client.upload(pid, Path(img), name)
        items.append(it)
        store.write_json(rp.label_studio_tasks(k), rec)  # after every upload: a re-run does not repeat it
        ctx.ui.emit(Progress("review", i, len(picks), "images", "uploading to Label Studio"))
    todo = [it for it in items if "task_id" not in it]
    if todo:
        payload = []
        for it in todo:
            pred = prediction(recs.get(it["pick"]), names, conf, f"al-loop iteration {k}")
            it["pre_annotations"] = len(pred[0]["result"]) if pred else 0
            payload.append({"data": {"image": it["upload"], "al_name": it["name"], "al_iteration": k, "al_run": run},
                            **({"predictions": pred} if pred else {})})
        for it, tid in zip(todo, client.import_tasks(pid, payload)):
            it["task_id"] = tid
        store.write_json(rp.label_studio_tasks(k), rec)
    n_pred = sum(int(it.get("pre_annotations", 0)) for it in items)
    ctx.ui.emit(Message(f"[REVIEW] Label Studio: {len(items)} picks are tasks of project {title!r} "
                         f"({rec['project_url']}), {n_pred} pre-annotations"
                         + (f"; {len(todo)} imported now" if len(todo) != len(items) else "")))
    return {"backend_status": f"Label Studio project {title!r}: {len(items)} tasks at {rec['project_url']}",
            "poll_s": lcfg.poll_s,
            "label_studio": {"url": rec["project_url"], "project_id": pid, "project": title, "tasks": len(items),
                             "pre_annotations": n_pred}}


def _boxes(task: dict, ann: dict, names: list[str], problems: list[str]) -> tuple[np.ndarray, int]:
    """One annotation's RectangleLabels results as normalised [cls, x1, y1, x2, y2] rows, and how many rotated
    boxes were replaced by their upright bounding box. A label outside the dataset's classes goes to `problems`."""
    rows, rotated = [], 0
    where = f"task {task.get('id')} ({(task.get('data') or {}).get('al_name', '?')}), annotation {ann.get('id')}"
    for r in ann.get("result") or []:
        if r.get("type") != "rectanglelabels":
            continue  # relations, comments, other controls a user added: not boxes
        v = r.get("value") or {}
        labels = v.get("rectanglelabels") or []
        if len(labels) != 1:
            problems.append(f"{where}: a box with {len(labels)} labels {labels}; give each box one class")
            continue
        if labels[0] not in names:
            problems.append(f"{where}: label {labels[0]!r} is not a class of the dataset {names}")
            continue
        try:
            x, y, w, h = (float(v[key]) / 100 for key in ("x", "y", "width", "height"))
            rot = float(v.get("rotation") or 0)
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}: a box without numeric x, y, width, height")
            continue
        if rot % 360:
            # Label Studio rotates around the top-left corner, in pixels: the upright bounding box of the corners
            rotated += 1
            ow, oh = float(r.get("original_width") or 1), float(r.get("original_height") or 1)
            t = math.radians(rot)
            px, py, pw, ph = x * ow, y * oh, w * ow, h * oh
            xs = [px + dx * math.cos(t) - dy * math.sin(t) for dx, dy in ((0, 0), (pw, 0), (0, ph), (pw, ph))]
            ys = [py + dx * math.sin(t) + dy * math.cos(t) for dx, dy in ((0, 0), (pw, 0), (0, ph), (pw, ph))]
            x1, y1, x2, y2 = min(xs) / ow, min(ys) / oh, max(xs) / ow, max(ys) / oh
        else:
            x1, y1, x2, y2 = x, y, x + w, y + h
        x1, y1, x2, y2 = (min(1.0, max(0.0, c)) for c in (x1, y1, x2, y2))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue  # a box entirely outside the image (dragged off it) is no box
        rows.append([names.index(labels[0]), x1, y1, x2, y2])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), rotated


def _newest(anns: list[dict]) -> dict:
    return max(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0)))


def collect(ctx: StepContext, picks: list[dict], names: list[str], *, dry: bool = False,
            unpack_dir: Path | None = None) -> tuple[list[Labelled], dict]:
    """The project's JSON export matched back to this iteration's tasks: the newest submitted annotation of each
    (an empty one is a negative); skipped tasks refused or kept for a later round (review.label_studio.on_skipped),
    labels outside the dataset's classes refused. `dry` (the review screen's preview, polled for progress):
    nothing is written and nothing is said. `unpack_dir` is unused (nothing is unpacked)."""
    k, lcfg = ctx.iteration, ctx.env.cfg.review.label_studio
    rp = ctx.env.paths
    rec = _record(ctx)
    if rec is None:
        raise ReviewError(f"No Label Studio tasks for iteration {k} ({rp.label_studio_tasks(k)} not found). Set "
                          f"active_learning.require_human_review: true and --resume: the picks are imported and the "
                          f"loop waits for the review.")
    pid = int(rec["project_id"])
    if rec.get("url") != lcfg.url:
        raise ReviewError(f"{rp.label_studio_tasks(k)}: the tasks were imported into {rec.get('url')}, but "
                          f"review.label_studio.url is {lcfg.url}. Point the url back at that server, then continue.")
    client = Client(lcfg, load_token(lcfg), emit=(lambda e: None) if dry else ctx.ui.emit,
                    stop_requested=ctx.ui.stop_requested)
    export = client.export(pid)
    by_id = {int(t["id"]): t for t in export if isinstance(t, dict) and "id" in t}
    current = {p["image"] for p in picks}
    items = [it for it in rec["items"] if it["pick"] in current]
    out: list[Labelled] = []
    problems: list[str] = []
    skipped: list[str] = []
    pending: list[str] = []
    deleted: list[str] = []
    rotated = 0
    mine = []
    for it in items:
        task = by_id.get(int(it.get("task_id", -1)))
        if task is None:
            deleted.append(it["name"])
            continue
        mine.append(task)
        anns = task.get("annotations") or []
        done = [a for a in anns if not a.get("was_cancelled")]
        if not done:
            (skipped if anns else pending).append(it["name"])
            continue
        ann = _newest(done)
        boxes, rot = _boxes(task, ann, names, problems)
        rotated += rot
        out.append(Labelled(src=it["pick"], boxes=boxes, source=SOURCE, label_origin="human", pick=it["pick"],
                            name=it["name"], extra={"label_studio_task": int(task["id"]),
                                                    "label_studio_annotation": ann.get("id")}))
    where = f"Label Studio project {rec.get('project_title')!r} ({rec.get('project_url')})"
    total = len(items)
    progress = f"annotated {len(out) + len(skipped)} of {total}"
    if problems:
        raise ReviewError(f"{where}: {len(problems)} boxes cannot be imported, nothing was:\n"
                          + "\n".join(f"  {p}" for p in problems[:20])
                          + ("\n  ..." if len(problems) > 20 else "")
                          + "\nFix them in Label Studio (one of the dataset's classes per box), then continue.")
    if skipped and lcfg.on_skipped == "refuse":
        raise ReviewError(f"{where}: {len(skipped)} tasks were skipped ({', '.join(skipped[:10])}"
                          f"{' ...' if len(skipped) > 10 else ''}). Annotate them in Label Studio (an empty "
                          f"submission marks an image without objects), or set review.label_studio.on_skipped: keep "
                          f"to leave them for a later round; then continue.")
    if not out:
        raise ReviewError(f"{where}: none of the {total} tasks of iteration {k} has a submitted annotation yet "
                          f"({progress}). Annotate them in Label Studio (submit each task), then continue.")
    summary = {"source": f"{where}, {progress}", "returned_labelled": len(out),
               "negatives": sum(1 for c in out if not len(c.boxes)), "not_returned": sorted(pending + deleted),
               "skipped_kept": sorted(skipped), "deleted_tasks": sorted(deleted), "annotated": len(out) + len(skipped),
               "tasks": total, "rotated_boxes": rotated, "project_url": rec.get("project_url"),
               "export": str(rp.label_studio_export(k))}
    if not dry:
        store.write_json(rp.label_studio_export(k), {"iteration": k, "project_id": pid, "tasks": mine})
        back = sorted(pending + deleted)
        ctx.ui.emit(Message(f"[REVIEW] {where}: {len(out)} of {total} picks came back labelled "
                             f"({summary['negatives']} marked empty, kept as negatives)"
                             + (f"; {len(skipped)} skipped, kept for a later round" if skipped else "")
                             + (f"; not annotated yet: {', '.join(back[:5])}{' ...' if len(back) > 5 else ''}"
                                if back else "")
                             + (f"; {len(deleted)} tasks deleted in Label Studio" if deleted else "")
                             + (f"; {rotated} rotated boxes replaced by their upright bounding box" if rotated
                                else "")))
    return out, summary
