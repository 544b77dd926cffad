"""The Roboflow round-trip through the real `roboflow` SDK against a stand-in API server on 127.0.0.1 that the tests
start and stop: auth, project, upload + pre-annotation, version export (202 while not ready) and the zip download;
401/403/404, 429-then-success, 500, class drift, renamed files, negatives, and the API key never on disk."""

from __future__ import annotations

import email.parser
import hashlib
import io
import json
import os
import re
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import pytest
import yaml

from al.core import store
from al.core.events import Progress
from al.data import dataset
from al.review import ReviewError, read_norm_labels
from al.review import roboflow as rfmod
from al.steps import review
from tests.integration.test_review_support import resume, run_at_review

NAMES = ["zero", "one", "two", "three", "four"]
MAX_REQUESTS = 400


class StandIn:
    """A small Roboflow-compatible API: the endpoints the SDK calls, with scripted failures."""

    def __init__(self, key: str, ws: str = "ws", proj: str = "proj"):
        self.key, self.ws, self.proj = key, ws, proj
        self.log: list[tuple[str, str]] = []
        self.upload_plan: dict[str, list[int]] = {}  # image name -> statuses to answer before a success
        self.annotate_plan: dict[str, list[int]] = {}  # image name -> statuses of its annotation before a success
        self.export_plan: list = []  # answers of the export endpoint before the link: 202 (not ready) or 500
        self.versions: list[int] = []
        self.uploads: dict[str, dict] = {}
        self.annotations: dict[str, dict] = {}
        self.export_zip = b""
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def paths(self) -> list[str]:
        return [p for _, p in self.log]

    def _handler(self):
        srv = self

        class H(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *a):  # keep the test output (and any log) free of request lines
                pass

            def _send(self, code: int, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else (json.dumps(body) if not isinstance(body, str)
                                                             else body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                u = urlparse(self.path)
                q = parse_qs(u.query)
                parts = [p for p in u.path.split("/") if p]
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with srv.lock:
                    srv.log.append((method, u.path))
                    if len(srv.log) > MAX_REQUESTS:
                        return self._send(503, {"error": {"message": "stand-in: too many requests in one test"}})
                    if parts[:1] == ["download"]:
                        return self._send(200, srv.export_zip, "application/zip")
                    if q.get("api_key", [None])[0] != srv.key:
                        return self._send(401, {"error": {"message": "This API key does not exist (or has been "
                                                                     "revoked).", "type": "OAuthException"}})
                    if method == "POST" and not parts:
                        return self._send(200, {"workspace": srv.ws})
                    if method == "POST" and parts[:1] == ["dataset"]:
                        if parts[1] != srv.proj:
                            return self._send(404, {"error": {"message": f"project {parts[1]} not found"}})
                        return self._upload(q, body) if parts[2] == "upload" else self._annotate(parts[3], q, body)
                    if method == "GET" and len(parts) >= 2:
                        if parts[0] != srv.ws:
                            return self._send(403, {"error": {"message": "Forbidden: not your workspace"}})
                        if parts[1] != srv.proj:
                            return self._send(404, {"error": {"message": f"Unsupported request. GET /{parts[0]}/"
                                                                         f"{parts[1]} does not exist"}})
                        if len(parts) == 2:
                            return self._send(200, srv.project_json())
                        if len(parts) == 3:
                            return self._send(200, {"version": {"id": f"{srv.ws}/{srv.proj}/{parts[2]}",
                                                                "images": len(srv.uploads), "generating": False,
                                                                "progress": 1.0}})
                        if len(parts) == 4 and parts[3] == "yolov8":
                            if srv.export_plan:
                                step = srv.export_plan.pop(0)
                                if step == 202:
                                    return self._send(202, {"progress": 0.5})
                                return self._send(step, "Internal Server Error", "text/plain")
                            return self._send(200, {"export": {"link": f"{srv.url}/download/export.zip?key=dl",
                                                               "format": "yolov8"}})
                    return self._send(404, {"error": {"message": f"no route {method} {u.path}"}})

            def _upload(self, q, body):
                msg = email.parser.BytesParser().parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                          for part in msg.get_payload()}
                name = fields["name"].decode()
                plan = srv.upload_plan.get(name)
                if plan:
                    code = plan.pop(0)
                    return self._send(code, {"error": {"message": "Rate limit exceeded" if code == 429
                                                       else "Internal error"}})
                sha = hashlib.sha1(fields["file"]).hexdigest()
                for iid, u in srv.uploads.items():
                    if u["sha"] == sha:
                        return self._send(200, {"duplicate": True, "id": iid})
                iid = f"img{len(srv.uploads) + 1}"
                srv.uploads[iid] = {"name": name, "bytes": fields["file"], "sha": sha, "batch": q["batch"][0],
                                    "tags": q.get("tag", []), "metadata": json.loads(fields["metadata"])}
                return self._send(200, {"success": True, "id": iid})

            def _annotate(self, iid, q, body):
                if iid not in srv.uploads:
                    return self._send(404, {"error": {"message": "image not found"}})
                plan = srv.annotate_plan.get(srv.uploads[iid]["name"])
                if plan:
                    return self._send(plan.pop(0), {"error": {"message": "Internal error"}})
                data = json.loads(body)
                srv.annotations[iid] = {"text": data["annotationFile"], "labelmap": data["labelmap"],
                                        "prediction": q.get("prediction", ["false"])[0] == "true",
                                        "job": q.get("jobName", [""])[0]}
                return self._send(200, {"success": True})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        return H

    def project_json(self) -> dict:
        ver = [{"id": f"{self.ws}/{self.proj}/{v}", "images": len(self.uploads), "augmentation": {}, "created": 0,
                "preprocessing": {}, "splits": {"train": len(self.uploads)}, "exports": []} for v in self.versions]
        return {"workspace": {"name": self.ws, "url": self.ws, "projects": []},
                "project": {"id": f"{self.ws}/{self.proj}", "annotation": "digits", "classes": {n: 1 for n in NAMES},
                            "colors": {}, "created": 0, "images": len(self.uploads), "name": self.proj,
                            "public": False, "splits": {}, "type": "object-detection", "unannotated": 0,
                            "updated": 0},
                "versions": ver}

    def build_export(self, names: list[str], labels: dict[str, str], *, augment: str | None = None,
                     extra: bool = True) -> None:
        """A YOLO export of every upload: Roboflow-style renamed, re-encoded files, `names` in the data.yaml, the
        given label text per upload name ('' = a negative), plus an augmented copy and an image nobody picked."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            def add(split, name, data, text):
                stem, ext = name.rsplit(".", 1)
                rf = f"{stem}_{ext}.rf.{hashlib.md5(data + split.encode()).hexdigest()}"
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                zf.writestr(f"{split}/images/{rf}.jpg", cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
                            .tobytes())
                zf.writestr(f"{split}/labels/{rf}.txt", text)

            for u in self.uploads.values():
                add("train", u["name"], u["bytes"], labels[u["name"]])
                if u["name"] == augment:
                    add("train", u["name"], cv2.imencode(".png", 255 - cv2.imdecode(
                        np.frombuffer(u["bytes"], np.uint8), cv2.IMREAD_COLOR))[1].tobytes(), labels[u["name"]])
            if extra:
                other = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
                add("valid", "someone_elses.jpg", other, "0 0.5 0.5 0.2 0.2\n")
            zf.writestr("data.yaml", yaml.safe_dump({"train": "../train/images", "val": "../valid/images",
                                                     "nc": len(names), "names": names}))
            zf.writestr("README.roboflow.txt", "exported by the stand-in")
        self.export_zip = buf.getvalue()


def _key() -> str:
    return f"rf-test-{uuid.uuid4().hex}"


@pytest.fixture
def server():
    """A stand-in per test; API_URL points at it before roboflow is first imported (the SDK reads it then), and
    the configured api_url re-points an already imported SDK."""
    key = _key()
    with StandIn(key) as srv:
        old = os.environ.get("API_URL")
        os.environ["API_URL"] = srv.url
        try:
            yield srv
        finally:
            if old is None:
                os.environ.pop("API_URL", None)
            else:
                os.environ["API_URL"] = old
        assert len(srv.log) < MAX_REQUESTS


def rf_cfg(srv: StandIn, **over) -> dict:
    return {"backend": "roboflow",
            "roboflow": {"workspace": srv.ws, "project": srv.proj, "api_url": srv.url, "api_key_env": "AL_TEST_RF_KEY",
                         "max_retries": 2, "retry_backoff_s": 0.01, "export_poll_s": 0.05, "export_timeout_s": 20,
                         "tags": ["hard-examples"], **over}}


def _ctx(tmp_path, tiny_data, srv, monkeypatch, n_picks=4, **over):
    monkeypatch.setenv("AL_TEST_RF_KEY", srv.key)
    return run_at_review(tmp_path, tiny_data, n_picks=n_picks, review_cfg=rf_cfg(srv, **over))


def _human_labels(ctx, srv, order: list[str], negative: str | None = None) -> dict[str, str]:
    """The reviewers' work: each upload's ground truth, written with the export's class order."""
    by_name = {Path(p["image"]).name: p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]}
    out = {}
    for u in srv.uploads.values():
        if u["name"] == negative:
            out[u["name"]] = ""
            continue
        lines = dataset.label_path(by_name[u["name"]]).read_text().splitlines()
        out[u["name"]] = "".join(f"{order.index(NAMES[int(ln.split()[0])])} {ln.split(' ', 1)[1]}\n"
                                 for ln in lines)
    return out


def test_upload_with_pre_annotations_retries_and_counts_real_successes(tmp_path, tiny_data, server, monkeypatch):
    ctx, rec = _ctx(tmp_path, tiny_data, server, monkeypatch)
    picks = [Path(p["image"]).name for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]
    server.upload_plan = {picks[1]: [429], picks[2]: [500] * 10}
    server.annotate_plan = {picks[3]: [503] * 10}
    assert review.run(ctx) == "pause"

    up = store.read_json(ctx.env.paths.roboflow_upload(0))
    assert (up["uploaded"], up["total"]) == (3, 4) and up["batch"] == "al-iteration-0"
    status = {it["name"]: it["status"] for it in up["items"]}
    assert status == {picks[0]: "ok", picks[1]: "ok", picks[2]: "failed", picks[3]: "ok"}
    assert "HTTP 500" in next(it["error"] for it in up["items"] if it["status"] == "failed")
    msgs = rec.messages()
    assert any("uploaded 3 of 4 to ws/proj, batch 'al-iteration-0'" in m for m in msgs)
    assert any("retry 1/2" in m and "HTTP 429" in m for m in msgs)
    assert sum("retry" in m and "HTTP 500" in m for m in msgs) == 2  # max_retries, then counted as failed
    # 3 uploads + the 429 + 3 tries of the 500 one
    assert server.paths().count(f"/dataset/{server.proj}/upload") == 7
    for u in server.uploads.values():
        assert u["batch"] == "al-iteration-0" and u["tags"] == ["hard-examples", "al-iteration-0"]
    # the model's predictions (the val ground truth at conf 0.9 here) went up as predictions, YOLO + labelmap;
    # one image went up but its pre-annotation could not be attached: uploaded, and said so
    assert up["annotated"] == 2 and "HTTP 503" in next(it["annotation_error"] for it in up["items"]
                                                         if it["name"] == picks[3])
    assert any("pre-annotations of 1 uploaded images could not be attached" in m for m in msgs)
    assert len(server.annotations) == 2
    for iid, a in server.annotations.items():
        assert a["prediction"] is True and a["labelmap"] == {str(i): n for i, n in enumerate(NAMES)}
        assert a["job"] == "al-iteration-0"
        src = next(p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]
                   if Path(p["image"]).name == server.uploads[iid]["name"])
        assert len(a["text"].splitlines()) == len(dataset.label_path(src).read_text().splitlines())
    info = store.read_json(ctx.env.paths.review_request(0))
    assert info["backend_status"] == "Roboflow ws/proj: 3 of 4 uploaded to batch 'al-iteration-0'"

    # pausing again (e.g. --start-iteration) does not upload the successes twice; what failed is retried
    server.upload_plan, server.annotate_plan = {}, {}
    ctx.state.review_pending = False
    n = len(server.log)
    assert review.run(ctx) == "pause"
    up = store.read_json(ctx.env.paths.roboflow_upload(0))
    assert up["uploaded"] == 4 and up["annotated"] == 4 and len(server.uploads) == 4
    assert server.paths()[n:].count(f"/dataset/{server.proj}/upload") == 1 and len(server.annotations) == 4


def test_download_waits_for_export_matches_renamed_files_and_merges(tmp_path, tiny_data, server, monkeypatch):
    ctx, rec = _ctx(tmp_path, tiny_data, server, monkeypatch, match_classes_by_name=True)
    picks = [p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]
    assert review.run(ctx) == "pause"
    with pytest.raises(ReviewError, match="has no dataset versions yet"):
        resume(ctx)
    order = sorted(NAMES)  # Roboflow exports class names sorted
    server.build_export(order, _human_labels(ctx, server, order, negative=Path(picks[3]).name),
                        augment=Path(picks[0]).name)
    server.versions = [1, 2]
    server.export_plan = [202, 500, 202]  # not ready, a server error, not ready, then the link
    n_before = len(server.log)
    assert resume(ctx) == "next"

    msgs = rec.messages()
    assert sum("preparing the yolov8 export of version 2 (50%); checking again in 0.05 s" in m for m in msgs) == 2
    assert any("retry 1/2" in m and "Internal Server Error" in m for m in msgs)
    countdown = [e for e in rec.of(Progress) if e.unit == "s"]
    assert countdown and all("next check in" in e.detail for e in countdown)
    assert any("4 of 4 uploaded picks came back labelled (1 without objects" in m for m in msgs)
    assert server.paths()[n_before:].count("/download/export.zip") == 1

    out = store.read_json(ctx.env.paths.review(0))
    assert out["backend"] == "roboflow" and out["roboflow_version"] == 2
    assert out["returned_labelled"] == 4 and out["negatives"] == 1 and out["not_returned"] == []
    assert out["ignored_not_selected"] == 1 and out["augmented_ignored"] == 1
    assert out["added_images"] == 4 and out["removed_from_val"] == 4
    _, splits = dataset.read_snapshot(ctx.env.paths.dataset_version(1))
    assert not set(picks) & set(splits["val"])
    man = store.read_json(ctx.env.paths.manifest(1))
    added = {Path(e["origin"]).name: (p, e) for p, e in man["images"].items() if e["iteration_added"] == 0}
    assert set(added) == {Path(p).name for p in picks}
    for pick in picks:
        path, e = added[Path(pick).name]
        assert e["source"] == "roboflow" and e["label_origin"] == "human" and e["roboflow_version"] == 2
        assert re.match(r".+_(jpg|png)\.rf\.[0-9a-f]+\.jpg$", e["export_file"])  # matched back despite renaming
        want = np.zeros((0, 5)) if pick == picks[3] else read_norm_labels(dataset.label_path(pick), 5)
        np.testing.assert_allclose(read_norm_labels(dataset.label_path(path), 5), want, atol=1e-5)  # remapped


def test_class_drift_is_refused_or_mapped(tmp_path, tiny_data, server, monkeypatch):
    ctx, _ = _ctx(tmp_path, tiny_data, server, monkeypatch, n_picks=2)
    assert review.run(ctx) == "pause"
    order = sorted(NAMES)
    server.build_export(order, _human_labels(ctx, server, order), extra=False)
    server.versions = [1]
    with pytest.raises(ReviewError, match=r"differ from the model's .*same names in another order.*"
                                          r"match_classes_by_name"):
        resume(ctx)
    renamed = ["Four", "one", "three", "two", "zero"]
    server.build_export(renamed, _human_labels(ctx, server, order), extra=False)
    shutil_rm = ctx.env.paths.roboflow_export(0, 1)
    import shutil

    shutil.rmtree(shutil_rm)
    ctx.env.cfg.review.roboflow.class_mapping = {"Four": "four"}
    assert resume(ctx) == "next"
    picks = [p["image"] for p in store.read_json(ctx.env.paths.hard_examples(0))["picks"]]
    man = store.read_json(ctx.env.paths.manifest(1))
    for p, e in man["images"].items():
        if e["iteration_added"] == 0:
            np.testing.assert_allclose(read_norm_labels(dataset.label_path(p), 5),
                                       read_norm_labels(dataset.label_path(e["origin"]), 5), atol=1e-5)
    assert {e["origin"] for e in man["images"].values() if e["iteration_added"] == 0} == set(picks)
    ctx.env.cfg.review.roboflow.class_mapping = {"Four": "vier"}
    with pytest.raises(ReviewError, match=r"mapping targets not in the project: \['Four -> vier'\]"):
        resume(ctx)


@pytest.mark.parametrize("case,needle", [
    ("bad_key", "Roboflow rejected the API key (HTTP 401) read from environment variable AL_TEST_RF_KEY"),
    ("no_key", "Roboflow API key not found: set the environment variable AL_TEST_RF_KEY"),
    ("workspace", "may not access other/proj (HTTP 403)"),
    ("project", "(HTTP 404) while opening project ws/nope: Unsupported request"),
])
def test_auth_and_project_errors_say_what_to_fix(tmp_path, tiny_data, server, monkeypatch, case, needle):
    over = {"workspace": "other"} if case == "workspace" else {"project": "nope"} if case == "project" else {}
    ctx, _ = _ctx(tmp_path, tiny_data, server, monkeypatch, n_picks=1, **over)
    if case == "bad_key":
        monkeypatch.setenv("AL_TEST_RF_KEY", "wrong-" + server.key)
    if case == "no_key":
        monkeypatch.delenv("AL_TEST_RF_KEY")
    with pytest.raises(ReviewError) as e:
        review.run(ctx)
    assert needle in str(e.value)
    assert server.key not in str(e.value) and "api_key=" not in str(e.value)
    assert not ctx.env.paths.review_request(0).exists()  # not asked: a resume retries the upload
    if case != "no_key":
        assert len(server.log) <= 3  # a clear error, not a retry storm


def test_secrets_file_and_connection_errors(tmp_path, tiny_data, server, monkeypatch):
    secrets = tmp_path / "rf.secrets"
    secrets.write_text(f"# roboflow\nAL_TEST_RF_KEY={server.key}\n")
    secrets.chmod(0o600)
    ctx, rec = run_at_review(tmp_path, tiny_data, n_picks=1,
                             review_cfg=rf_cfg(server, secrets_file=str(secrets)))
    monkeypatch.delenv("AL_TEST_RF_KEY", raising=False)
    key = rfmod.load_api_key(ctx.env.cfg.review.roboflow)
    assert key.value == server.key and key.where == f"secrets file {secrets}" and server.key not in repr(key)
    assert review.run(ctx) == "pause"
    # nothing listens here: connection errors are retried, then reported without the key (which is in the URL)
    ctx.env.cfg.review.roboflow.api_url = "http://127.0.0.1:9"
    with pytest.raises(ReviewError) as e:
        resume(ctx)
    assert "Fix the cause" not in str(e.value) and "max_retries" in str(e.value)
    assert server.key not in str(e.value) and all(server.key not in m for m in rec.messages())
    assert sum("retry" in m for m in rec.messages()) == 2


def test_original_name_undoes_roboflow_renaming():
    from al.review.imports import original_name

    assert original_name("000123_jpg.rf.3f2a9cde01.jpg") == "000123.jpg"
    assert original_name("my_img_2_png.rf.abc123.jpg") == "my_img_2.png"
    assert original_name("plain.jpg") == "plain.jpg"


def _scan(root: Path, needle: bytes, since: float) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            try:
                st = p.lstat()
                if not p.is_file() or st.st_mtime < since or st.st_size > 64 << 20:
                    continue
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                continue
    return hits


def test_full_loop_with_roboflow_and_the_key_never_lands_on_disk(tmp_path, tiny_data, server, monkeypatch, capsys):
    """A user's iteration end to end (CLI, dry run): pause after the upload, annotate + export, resume, retrain,
    next iteration. Then every file under the run and the temp dir written during the test is scanned for the key."""
    import tempfile

    from al.cli import main
    from tests.conftest import make_config

    t0 = time.time() - 1
    monkeypatch.setenv("AL_TEST_RF_KEY", server.key)
    cfgp = make_config(tmp_path, tiny_data, active_learning={"max_samples_per_iteration": 3, "max_iterations": 2,
                                                             "review_source": "manual", "train_f1_sample": 4,
                                                             "target_f1": 0.99},
                       review=rf_cfg(server, match_classes_by_name=True, upload_crops=True))
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0
    out1 = capsys.readouterr().out
    assert "MANUAL REVIEW REQUIRED" in out1 and "[PAUSED]" in out1 and "uploaded" in out1
    run = tmp_path / "run"
    up = store.read_json(run / "iterations" / "iteration_0" / "roboflow_upload.json")
    images = [it for it in up["items"] if it["kind"] == "image"]
    assert len(images) == 3 and up["uploaded"] == up["total"] >= 3
    order = sorted(NAMES)
    by_pick = {Path(it["pick"]).name: it["pick"] for it in images}
    labels = {}
    for u in server.uploads.values():
        src = by_pick.get(u["name"])
        text = dataset.label_path(src).read_text() if src else "0 0.5 0.5 0.5 0.5\n"  # a crop: one box
        labels[u["name"]] = "".join(f"{order.index(NAMES[int(ln.split()[0])])} {ln.split(' ', 1)[1]}\n"
                                    for ln in text.splitlines())
    server.build_export(order, labels)
    server.versions = [1]
    server.export_plan = [202]
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 0
    out2 = capsys.readouterr().out
    assert "ACTIVE LEARNING COMPLETE" in out2
    rv = store.read_json(run / "iterations" / "iteration_0" / "review.json")
    assert rv["returned_labelled"] == 3 and rv["crops_returned"] >= 3 and rv["added_images"] == 3 + rv["crops_returned"]
    meta = store.read_json(run / "iterations" / "iteration_0" / "metadata.json")
    assert meta["dataset"]["next_version"] == rv["dataset_version"] and meta["dataset"]["val_changed"] is True
    assert meta["dataset"]["next_manifest"].endswith("v001/manifest.json")

    key = server.key.encode()
    assert key not in (out1 + out2).encode()
    assert _scan(tmp_path, key, 0) == []
    assert _scan(Path(tempfile.gettempdir()), key, t0) == []
    assert (run / "al_loop.log").stat().st_size > 0 and key not in (run / "al_loop.log").read_bytes()
