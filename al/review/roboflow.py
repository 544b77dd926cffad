"""Review on Roboflow through the official `roboflow` SDK: upload the picks with pre-annotations, then download a
version export in YOLO format and match it back to the picks.

The API key comes only from an environment variable or a secrets file the user names. It travels inside the SDK's
request URLs, so every message that leaves this module is scrubbed of it, the SDK's own console chatter is
captured (and scrubbed), and no exception that could carry a URL is re-raised with its context.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

from al.core import store
from al.core.config import ConfigError, RoboflowReviewConfig, parse_yaml
from al.core.context import StepContext
from al.core.errors import Interrupted
from al.core.events import Event, Message, Progress
from al.data import dataset, hashing
from al.review import (
    Labelled,
    ReviewError,
    class_map,
    norm_boxes,
    pick_predictions,
    pre_annotation_conf,
    read_norm_labels,
    remap,
    secrets,
)
from al.review.imports import Matcher, unique_names
from al.review.secrets import Secret

if TYPE_CHECKING:
    from roboflow.core.project import Project

log = logging.getLogger("al")

FORMAT = "yolov8"
MAX_BACKOFF_S = 120.0
_SDK_LOCK = threading.Lock()
_TRANSIENT_WORDS = re.compile(r"too many requests|rate limit|internal server error|bad gateway|service unavailable|"
                              r"gateway time-?out|temporarily unavailable", re.I)


# ------------------------------------------------------------------------------------------------------ the API key

class ApiKey(Secret):
    """The key and where it was read from (the place is safe to show; the value never is)."""


def load_api_key(rcfg: RoboflowReviewConfig) -> ApiKey:
    """The key from the environment variable review.roboflow.api_key_env, else from review.roboflow.secrets_file."""
    env = rcfg.api_key_env
    val = secrets.from_env(env)
    if val:
        return ApiKey(val, f"environment variable {env}")
    f = rcfg.secrets_file
    if f is not None:
        key = secrets.read_secrets_file(Path(f), env, names=("api_key", "ROBOFLOW_API_KEY"),
                                        key="review.roboflow.secrets_file")
        if key:
            return ApiKey(key, f"secrets file {f}")
        raise ReviewError(f"{f}: no API key found. Write the bare key on one line, or a line {env}=<key>.")
    raise ReviewError(f"Roboflow API key not found: set the environment variable {env} (export {env}=<your private "
                      f"API key>, from Roboflow > Settings > API Keys) or name a secrets file in "
                      f"review.roboflow.secrets_file. The key is never written to the config.")


# ------------------------------------------------------------------------------------------------------------ SDK

def sdk(api_url: str | None):
    """The roboflow package, talking to api_url when one is configured. The SDK reads API_URL once, at import:
    before the first import the environment variable is set; afterwards its bound copies are replaced (the way
    the SDK's own refresh_region_urls does it)."""
    if api_url and "roboflow" not in sys.modules:
        os.environ["API_URL"] = api_url
    try:
        import roboflow
        import roboflow.config as rconf
    except ImportError as e:
        raise ReviewError(f"review.backend: roboflow needs the roboflow SDK ({e}). Install it with "
                          f"pip install 'al-loop[roboflow]' (roboflow==1.7.3), or use review.backend: local.") from None

    if api_url and rconf.API_URL != api_url:
        old = rconf.API_URL
        for name, mod in list(sys.modules.items()):
            if mod is not None and (name == "roboflow" or name.startswith("roboflow.")) and \
                    vars(mod).get("API_URL") == old:
                vars(mod)["API_URL"] = api_url
    return roboflow


@contextmanager
def _quiet(key: ApiKey):
    """Run SDK code with its prints and progress bars captured (they would garble the TUI) and logged scrubbed."""
    buf = io.StringIO()
    with _SDK_LOCK, redirect_stdout(buf), redirect_stderr(buf):
        try:
            yield
        finally:
            for line in re.split(r"[\r\n]+", buf.getvalue()):
                if line.strip():
                    log.debug("roboflow sdk: %s", key.scrub(line.strip())[:300])


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK exception, when it can be known."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    text = str(exc.args[0]) if exc.args else str(exc)
    try:
        body = json.loads(text)
    except (ValueError, TypeError):
        body = None
    if isinstance(body, dict):
        inner = body.get("error")
        err = inner if isinstance(inner, dict) else body
        for k in ("status", "statusCode"):
            if isinstance(err.get(k), int) and 400 <= err[k] <= 599:
                return err[k]
    m = re.search(r"<Response \[(\d{3})\]>", text)
    return int(m.group(1)) if m else None


def is_transient(exc: BaseException) -> bool:
    """429, 5xx and connection problems are worth retrying; everything else is not."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    if isinstance(exc.__cause__, requests.RequestException):
        return True
    code = http_status(exc)
    if code is not None:
        return code == 429 or code >= 500
    return bool(_TRANSIENT_WORDS.search(str(exc)))


def _message(exc: BaseException, key: ApiKey) -> str:
    """The server's message inside an SDK exception, scrubbed of the key (before it is shortened, so no part of the
    key survives a cut)."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            err = body.get("error", body)
            text = err.get("message", text) if isinstance(err, dict) else str(err)
    except (ValueError, TypeError):
        pass
    return key.scrub(text)[:300]


class ApiError(ReviewError):
    """A failed SDK call: its HTTP status when known, whether retrying could help, and the scrubbed detail."""

    status: int | None = None
    transient: bool = False
    detail: str = ""


class Client:
    """One Roboflow project, reached through the SDK with retries, clear errors and a scrubbed key."""

    def __init__(self, rcfg: RoboflowReviewConfig, key: ApiKey, *, emit: Callable[[Event], None] = lambda e: None,
                 stop_requested: Callable[[], bool] = lambda: False):
        self.cfg, self.key, self.emit = rcfg, key, emit
        self.stop_requested = stop_requested
        self.rf = sdk(rcfg.api_url)
        self.workspace: str | None = rcfg.workspace
        self.project_slug = rcfg.project
        self.project: Project | None = None
        self.project_info: dict = {}
        self.versions: list[int] = []

    # -- plumbing
    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:  # a quit must not wait out a long backoff
            if self.stop_requested():
                raise Interrupted("stopped while waiting for Roboflow; --resume continues")
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def _fatal(self, code: int | None, what: str, detail: str, transient: bool = False) -> ApiError:
        ws, proj = self.workspace or "<your workspace>", self.project_slug
        detail = self.key.scrub(detail)
        if code == 401:
            msg = (f"Roboflow rejected the API key (HTTP 401) read from {self.key.where} while {what}: {detail}. "
                   f"Copy the workspace's private API key from Roboflow > Settings > API Keys into "
                   f"{self.cfg.api_key_env} (or the secrets file), then --resume.")
        elif code == 403:
            msg = (f"The API key from {self.key.where} may not access {ws}/{proj} (HTTP 403) while {what}: "
                   f"{detail}. Use a key of the workspace that owns the project, or fix review.roboflow.workspace; "
                   f"then --resume.")
        elif code == 404:
            msg = (f"Roboflow answered 'not found' (HTTP 404) while {what}: {detail}. Check "
                   f"review.roboflow.workspace ({ws}) and review.roboflow.project ({proj}): the slugs in "
                   f"app.roboflow.com/<workspace>/<project>; then --resume.")
        else:
            msg = (f"Roboflow error while {what}" + (f" (HTTP {code})" if code else "") + f": {detail}. "
                   + ("It kept failing after the configured retries (review.roboflow.max_retries); try again later "
                      "with --resume." if transient else "Fix the cause, then --resume."))
        err = ApiError(msg)
        err.status, err.transient, err.detail = code, transient, detail
        return err

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """fn(*args) with retries and backoff on 429/5xx/connection errors; any other failure becomes a
        ReviewError that says what to fix (and never carries the key, nor the SDK exception that may)."""
        attempt = 0
        while True:
            try:
                with _quiet(self.key):
                    return fn(*args, **kwargs)
            except (Interrupted, ReviewError):
                raise
            except Exception as exc:  # the SDK raises RuntimeError, RoboflowError, requests errors, ...
                code = http_status(exc)
                transient = is_transient(exc) and code not in (401, 403, 404)
                if not transient or attempt >= self.cfg.max_retries:
                    raise self._fatal(code, what, _message(exc, self.key), transient) from None
                delay = min(MAX_BACKOFF_S, self.cfg.retry_backoff_s * 2 ** attempt)
                attempt += 1
                self.emit(Message(f"[REVIEW] Roboflow: {what} failed ({_message(exc, self.key)}"
                                  f"{f', HTTP {code}' if code else ''}); retry {attempt}/{self.cfg.max_retries} "
                                  f"in {delay:.1f} s", "warning"))
                self._sleep(delay)

    def _project(self) -> Project:
        if self.project is None:
            raise RuntimeError("Client.connect() must open the project before it is used")
        return self.project

    # -- connecting
    def connect(self) -> None:
        """Check the key (POST /?api_key) and open the project (GET /{workspace}/{project})."""
        from roboflow.adapters import rfapi
        from roboflow.core.project import Project

        what = "checking the API key"
        try:
            rf = self.call(what, self.rf.Roboflow, api_key=self.key.value, model_format=FORMAT)
        except ReviewError as e:
            if "error validating the api key" in str(e):
                raise ReviewError("Roboflow could not validate the API key (a server error, after the SDK's own "
                                  "retries). Try again later with --resume.") from None
            if isinstance(e, ApiError) and e.status is None and not e.transient:
                # the SDK raises the server's 401 answer as a bare RuntimeError(text): a rejected key
                raise self._fatal(401, what, e.detail) from None
            raise
        if getattr(rf, "onboarding", False):
            raise ReviewError(f"The value of {self.key.where} does not look like a Roboflow private API key. Copy it "
                              f"from Roboflow > Settings > API Keys, then --resume.")
        self.workspace = self.workspace or getattr(rf, "current_workspace", None)
        if not self.workspace:
            raise ReviewError("Roboflow did not say which workspace the API key belongs to; set "
                              "review.roboflow.workspace.")
        info = self.call(f"opening project {self.workspace}/{self.project_slug}", rfapi.get_project,
                         self.key.value, self.workspace, self.project_slug)
        self.project_info = info.get("project") or {}
        if not self.project_info:
            raise ReviewError(f"Roboflow returned no project for {self.workspace}/{self.project_slug}.")
        self.project = Project(self.key.value, self.project_info, FORMAT)
        self.versions = sorted(int(str(v.get("id", "")).rsplit("/", 1)[-1]) for v in info.get("versions") or []
                               if str(v.get("id", "")).rsplit("/", 1)[-1].isdigit())

    # -- upload
    def upload(self, items: list[dict], *, batch: str, tags: list[str], names: list[str], record: Path,
               base: dict) -> dict:
        """Upload each item (image + optional YOLO pre-annotation), recording outcomes in `record` after each one;
        items already uploaded (per an earlier record) are skipped. Returns the record."""
        prev = {}
        if record.is_file():
            old = store.read_json(record, required=("items",))
            if old.get("batch") == batch and old.get("project") == f"{self.workspace}/{self.project_slug}":
                prev = {it["name"]: it for it in old["items"] if it.get("status") in ("ok", "duplicate")}
        labelmap = dict(enumerate(names))
        out: list[dict] = []
        rec = {**base, "workspace": self.workspace, "project": f"{self.workspace}/{self.project_slug}",
               "batch": batch, "tags": tags, "items": out}
        for i, it in enumerate(items, 1):
            if self.stop_requested():
                raise Interrupted("upload stopped; --resume uploads the rest (finished ones are not repeated)")
            done = prev.get(it["name"])
            if done and done.get("hash") == it["hash"]:
                res = dict(done)  # uploaded before: at most its pre-annotation is still missing
            else:
                res = {**{k: v for k, v in it.items() if k != "yolo"}, "status": "failed", "id": None,
                       "annotated": False, "error": None}
            try:
                if res["status"] == "failed":
                    img, _t, _r = self.call(f"uploading {it['name']}", self._project().upload_image,
                                            image_path=it["path"], split="train", num_retry_uploads=0,
                                            batch_name=batch, tag_names=[*tags, *it.get("tags", [])],
                                            metadata={"al_name": it["name"], "al_sha1": it["hash"]})
                    res.update(id=img.get("id"), status="duplicate" if img.get("duplicate") else "ok", error=None)
                if it.get("yolo") and res["id"] and not res.get("annotated"):
                    self.call(f"attaching pre-annotations to {it['name']}", self._project().save_annotation,
                              annotation_path={"name": Path(it["name"]).stem + ".txt", "rawText": it["yolo"]},
                              annotation_labelmap=labelmap, image_id=res["id"], job_name=batch,
                              is_prediction=self.cfg.as_predictions, num_retry_uploads=0)
                    res.update(annotated=True, annotation_error=None)
            except ReviewError as e:
                if getattr(e, "status", None) in (401, 403, 404):
                    raise  # the key or the project is wrong: every other upload would fail the same way
                res["error" if res["status"] == "failed" else "annotation_error"] = str(e)[:400]
            out.append(res)
            store.write_json(record, rec)
            self.emit(Progress("review", i, len(items), "images", "uploading to Roboflow"))
        ok = [r for r in out if r["status"] in ("ok", "duplicate")]
        rec.update(uploaded=len(ok), total=len(out), annotated=sum(1 for r in ok if r.get("annotated")))
        store.write_json(record, rec)
        return rec

    # -- download
    def resolve_version(self) -> int:
        want = self.cfg.version
        where = f"{self.workspace}/{self.project_slug}"
        if not self.versions:
            raise ReviewError(f"Roboflow project {where} has no dataset versions yet. In Roboflow, annotate the "
                              f"batch, then Generate a new version; then continue (--resume).")
        if want == "newest":
            return self.versions[-1]
        if want not in self.versions:
            raise ReviewError(f"Version {want} not found in Roboflow project {where} (versions: {self.versions}). "
                              f"Generate it in Roboflow or fix review.roboflow.version (or use newest).")
        return int(want)

    def wait_for_export(self, version: int) -> None:
        """Poll until the version's YOLO export is ready, with a visible countdown between checks."""
        from roboflow.adapters import rfapi

        t0 = time.monotonic()
        poll, limit = self.cfg.export_poll_s, self.cfg.export_timeout_s
        while True:
            res = self.call(f"checking the export of version {version}", rfapi.get_version_export, self.key.value,
                            self.workspace, self.project_slug, str(version), FORMAT)
            if not (isinstance(res, dict) and res.get("ready") is False):
                return
            waited = time.monotonic() - t0
            if waited + poll > limit:
                raise ReviewError(f"The Roboflow export of version {version} is still not ready after {waited:.0f} s "
                                  f"(review.roboflow.export_timeout_s = {limit:g}). Continue later with --resume.")
            pct = float(res.get("progress") or 0) * 100
            self.emit(Message(f"[REVIEW] Roboflow is preparing the {FORMAT} export of version {version} "
                              f"({pct:.0f}%); checking again in {poll:g} s"))
            end = time.monotonic() + poll
            while (left := end - time.monotonic()) > 0:
                self.emit(Progress("review", round(poll - left), round(poll), "s",
                                   f"export of version {version} not ready ({pct:.0f}%): next check in "
                                   f"{left:.0f} s"))
                self._sleep(min(1.0, left))

    def download(self, version: int, dest: Path) -> Path:
        """The version's YOLO export, extracted into dest (reused when a complete download is already there)."""
        marker = dest / ".al_download_complete"
        if marker.is_file():
            return dest
        while True:
            self.wait_for_export(version)
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            ver = self.call(f"opening version {version}", self._project().version, version)
            try:
                self.call(f"downloading version {version}", ver.download, FORMAT, location=str(tmp),
                          overwrite=True)
            except ReviewError as e:
                if "'ready': False" in str(e):  # became unready between the check and the download
                    continue
                raise
            break
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
        store.write_text_atomic(marker, f"{self.workspace}/{self.project_slug}/{version}\n")
        return dest


# ---------------------------------------------------------------------------------------------- matching the export

def export_images(root: Path) -> list[Path]:
    """Images of a YOLO export: every 'images' folder, in split order train, valid/val, test."""
    order = {"train": 0, "valid": 1, "val": 1, "test": 2}
    imgs = [p for p in root.rglob("*") if p.suffix.lower() in dataset.IMG_SUFFIXES and p.parent.name == "images"]
    return sorted(imgs, key=lambda p: (order.get(p.parent.parent.name, 3), str(p)))


def export_names(root: Path) -> list[str]:
    yml = root / "data.yaml"
    try:
        raw = parse_yaml(yml.read_text(encoding="utf-8-sig"), yml) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ReviewError(f"{yml}: cannot read the export's data.yaml ({e}). Download the version again "
                          f"(delete {root}) and --resume.") from None
    except ConfigError as e:  # a syntax error or a tag: the download is not Roboflow's export as it made it
        raise ReviewError(f"{e}; or download the version again (delete {root}) and --resume.") from None
    if not isinstance(raw, dict):
        raise ReviewError(f"{yml}: the export's data.yaml is not a mapping (names:, train:, ...). Download the "
                          f"version again (delete {root}) and --resume.")
    n = raw.get("names")
    if isinstance(n, dict):
        return [str(n[k]) for k in sorted(n, key=int)]
    if isinstance(n, list) and n:
        return [str(x) for x in n]
    raise ReviewError(f"{yml}: the export lists no class names.")


def match_export(root: Path, upload: dict, names: list[str], rcfg: RoboflowReviewConfig,
                 version: int) -> tuple[list[Labelled], dict]:
    """Labelled picks (and crops) from an extracted export: each exported image is matched to an uploaded item by
    its original name, then stem, then content hash (al.review.imports.Matcher, as every import). Images without
    boxes come back as negatives."""
    enames = export_names(root)
    cmap = class_map(enames, names, rcfg.class_mapping, rcfg.match_classes_by_name, str(root / "data.yaml"),
                     "In Roboflow keep the project's classes, or set review.roboflow.match_classes_by_name: true "
                     "(same names, another order) or review.roboflow.class_mapping (export name -> project name); "
                     "then --resume.")
    items = [it for it in upload["items"] if it["status"] in ("ok", "duplicate")]
    matcher = Matcher(items)
    seen: dict[str, int] = {}
    out: list[Labelled] = []
    ignored = aug_ignored = 0
    for img in export_images(root):
        it = matcher.find(img.name, img)
        if it is None:
            ignored += 1  # another image of the project, not picked this iteration
            continue
        n = seen.get(it["name"], 0)
        seen[it["name"]] = n + 1
        if n and not rcfg.keep_augmented:
            aug_ignored += 1
            continue
        boxes = remap(read_norm_labels(dataset.label_path(img), len(enames)), cmap)
        crop = it.get("kind") == "crop"
        src = it["path"] if rcfg.use_original_images and not n else str(img)
        name = it["name"] if not n else f"{Path(it['name']).stem}_aug{n}{Path(img).suffix}"
        out.append(Labelled(src=src, boxes=boxes, source="roboflow-crop" if crop else "roboflow",
                            label_origin="human", pick=None if (crop or n) else it["pick"], name=name,
                            extra={"roboflow_id": it.get("id"), "roboflow_version": version,
                                   "export_file": img.name, **({"crop_of": it["pick"]} if crop else {})}))
    picks_back = {c.pick for c in out if c.pick}
    summary = {"source": f"Roboflow {upload['project']} version {version}", "export_dir": str(root),
               "roboflow_version": version, "export_names": enames,
               "returned_labelled": len(picks_back), "negatives": sum(1 for c in out if c.pick and not len(c.boxes)),
               "crops_returned": sum(1 for c in out if c.source == "roboflow-crop"),
               "not_returned": sorted(it["name"] for it in items if it.get("kind") != "crop"
                                      and it["pick"] not in picks_back),
               "exported_images": len(export_images(root)), "ignored_not_selected": ignored,
               "augmented_ignored": aug_ignored}
    return out, summary


# ------------------------------------------------------------------------------------------- the step's backend

def _crops_of(pick: dict, report: list[dict]) -> list[str]:
    """The false-negative crops of a picked image: from the pick's errors, else from the error report."""
    crops = [e["crop"] for e in pick.get("errors") or [] if e.get("kind") == "fn" and e.get("crop")]
    if not crops:
        crops = [e["crop"] for e in report if e.get("image") == pick["image"] and e.get("kind") == "fn"
                 and e.get("crop")]
    return [c for c in dict.fromkeys(crops) if Path(c).is_file()]


def _upload_items(ctx: StepContext, picks: list[dict]) -> list[dict]:
    """One upload per pick (with its YOLO pre-annotation) and, optionally, one per false-negative crop."""
    rcfg = ctx.env.cfg.review.roboflow
    recs = pick_predictions(ctx)
    conf = pre_annotation_conf(ctx)
    stage = ctx.env.paths.roboflow_upload(ctx.iteration).with_name("roboflow_staging")
    report = []
    if rcfg.upload_crops and ctx.env.paths.error_report(ctx.iteration).is_file():
        report = store.read_json(ctx.env.paths.error_report(ctx.iteration)).get("errors", [])
    items = []
    for pk, name in zip(picks, unique_names([p["image"] for p in picks])):
        img = pk["image"]
        path = img
        if name != Path(img).name:  # same file name from two folders: upload a renamed copy
            stage.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img, stage / name)
            path = str(stage / name)
        yolo = ""
        rec = recs.get(img)
        if rcfg.pre_annotations and rec:
            pred = [r for r in rec.get("pred", []) if r[1] >= conf]
            b = norm_boxes([[r[0], *r[2:6]] for r in pred], rec["width"], rec["height"])
            yolo = "".join(f"{int(c)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}\n"
                           for c, x1, y1, x2, y2 in b)
        items.append({"kind": "image", "name": name, "path": path, "pick": img, "hash": hashing.file_hash(img),
                      "boxes": yolo.count("\n"), "yolo": yolo})
        if rcfg.upload_crops:
            for crop in _crops_of(pk, report):
                items.append({"kind": "crop", "name": Path(crop).name, "path": crop, "pick": img,
                              "hash": hashing.file_hash(crop), "boxes": 0, "yolo": "", "tags": ["fn-crop"]})
    return items


def prepare(ctx: StepContext, picks: list[dict], names: list[str]) -> dict:
    """Upload the picks (one batch per iteration) with pre-annotations; N of M real successes are reported."""
    k, rcfg = ctx.iteration, ctx.env.cfg.review.roboflow
    client = Client(rcfg, load_api_key(rcfg), emit=ctx.ui.emit, stop_requested=ctx.ui.stop_requested)
    client.connect()
    batch = f"{rcfg.batch_prefix}-iteration-{k}"
    tags = list(dict.fromkeys([*rcfg.tags, batch]))
    items = _upload_items(ctx, picks)
    rec = client.upload(items, batch=batch, tags=tags, names=names, record=ctx.env.paths.roboflow_upload(k),
                        base={"iteration": k})
    ok, total = rec["uploaded"], rec["total"]
    failed = [it for it in rec["items"] if it["status"] == "failed"]
    ctx.ui.emit(Message(f"[REVIEW] Roboflow: uploaded {ok} of {total} to {rec['project']}, batch '{batch}' "
                         f"({rec['annotated']} with pre-annotations)", "warning" if failed else "info"))
    for it in failed[:5]:
        ctx.ui.emit(Message(f"[REVIEW] WARNING: {it['name']} was not uploaded: {it['error']}", "warning"))
    bare = [it for it in rec["items"] if it.get("annotation_error")]
    if bare:
        ctx.ui.emit(Message(f"[REVIEW] WARNING: the pre-annotations of {len(bare)} uploaded images could not be "
                             f"attached (e.g. {bare[0]['name']}: {bare[0]['annotation_error']}); reviewers draw "
                             f"those from scratch", "warning"))
    if ok == 0:
        raise ReviewError(f"None of the {total} uploads to Roboflow succeeded (e.g. {failed[0]['error']}). Fix the "
                          f"cause, then --resume (uploads that succeeded are not repeated).")
    return {"backend_status": f"Roboflow {rec['project']}: {ok} of {total} uploaded to batch '{batch}'",
            "roboflow_upload": {"uploaded": ok, "total": total, "annotated": rec["annotated"], "batch": batch,
                                "project": rec["project"], "failed": [it["name"] for it in failed]}}


def collect(ctx: StepContext, picks: list[dict], names: list[str]) -> tuple[list[Labelled], dict]:
    """Download the configured (or newest) version's YOLO export and match it back to the uploaded picks."""
    k, rcfg = ctx.iteration, ctx.env.cfg.review.roboflow
    rp = ctx.env.paths
    if not rp.roboflow_upload(k).is_file():
        raise ReviewError(f"Nothing was uploaded to Roboflow for iteration {k} ({rp.roboflow_upload(k)} not found). "
                          f"Set active_learning.require_human_review: true and --resume: the picks are uploaded and "
                          f"the loop waits for the review.")
    upload = store.read_json(rp.roboflow_upload(k), required=("items", "project"))
    client = Client(rcfg, load_api_key(rcfg), emit=ctx.ui.emit, stop_requested=ctx.ui.stop_requested)
    client.connect()
    version = client.resolve_version()
    dest = client.download(version, rp.roboflow_export(k, version))
    cands, summary = match_export(dest, upload, names, rcfg, version)
    n_up = sum(1 for it in upload["items"] if it["status"] != "failed" and it.get("kind") != "crop")
    summary.update(uploaded=n_up, upload_total=sum(1 for it in upload["items"] if it.get("kind") != "crop"))
    if not summary["returned_labelled"]:
        raise ReviewError(f"None of the {n_up} uploaded picks is in version {version} of {upload['project']}. "
                          f"Annotate batch '{upload['batch']}', generate a new version in Roboflow (or set "
                          f"review.roboflow.version), then --resume.")
    ctx.ui.emit(Message(f"[REVIEW] Roboflow version {version}: {summary['returned_labelled']} of {n_up} uploaded "
                         f"picks came back labelled ({summary['negatives']} without objects, kept as negatives)"
                         + (f"; {summary['crops_returned']} crops" if summary["crops_returned"] else "")
                         + (f"; not back: {', '.join(summary['not_returned'][:5])}" if summary["not_returned"]
                            else "")))
    return cands, summary
