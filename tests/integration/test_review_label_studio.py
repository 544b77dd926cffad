"""The Label Studio round trip against a REAL Label Studio server (1.23.2, from .venv-label-studio) started once per
session by `al-loop label-studio` on 127.0.0.1, through the real label-studio-sdk. The 'human' annotates through
Label Studio's HTTP API: boxes edited, one deleted, one added, an image submitted empty, a task skipped. One test
opens the labelling page in headless Chromium and saves a screenshot of the pre-annotations."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from al.app import label_studio as lsapp
from al.core import store
from al.core.events import ReviewRequired
from al.data import dataset
from al.review import ReviewError
from al.steps import review
from tests.conftest import make_config
from tests.integration.test_review_support import resume, run_at_review

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NAMES = ["zero", "one", "two", "three", "four"]
ENV = "AL_TEST_LS_TOKEN"


class LS:
    """The session's server: its URL, token, login and files."""

    def __init__(self, url: str, token: str, password: str, data_dir: Path, out: Path, start_s: float):
        self.url, self.token, self.password = url, token, password
        self.data_dir, self.out, self.start_s = data_dir, out, start_s
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60)

    def get(self, path: str, **params):
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body):
        r = self.http.post(path, json=body)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory, tiny_data):
    """`al-loop label-studio --config ...` in a subprocess (the token and password in its environment), waited on
    through the health endpoint, stopped (SIGTERM) at the end of the session."""
    try:
        lsapp.executable()
    except lsapp.LabelStudioError as e:
        pytest.skip(f"{e} (./run test installs it)")
    root = tmp_path_factory.mktemp("label_studio_server")
    url = f"http://127.0.0.1:{lsapp.free_port()}"
    cfg = make_config(root, tiny_data, review={"backend": "label_studio",
                                               "label_studio": {"url": url, "api_key_env": ENV}})
    token, password = secrets.token_hex(20), secrets.token_urlsafe(12)
    env = {**os.environ, ENV: token, "LABEL_STUDIO_PASSWORD": password}
    out = root / "cli_output.txt"
    t0 = time.monotonic()
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(REPO / "al_loop.py"), "label-studio", "--config", str(cfg)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        while not lsapp.healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"al-loop label-studio exited ({proc.returncode}):\n{out.read_text()}")
            if time.monotonic() - t0 > lsapp.START_TIMEOUT_S:
                pytest.fail(f"Label Studio not up after {lsapp.START_TIMEOUT_S} s:\n{out.read_text()}")
            time.sleep(0.5)  # polling the health endpoint
        start_s = time.monotonic() - t0
        print(f"\n[label studio] up after {start_s:.0f} s", file=sys.__stderr__)
        yield LS(url, token, password, root / "run" / "label_studio", out, start_s)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        assert not lsapp.healthy(url), "the server outlived al-loop label-studio"


def ls_cfg(server: LS, **extra) -> dict:
    return {"backend": "label_studio",
            "label_studio": {"url": server.url, "api_key_env": ENV, "project": f"t-{uuid.uuid4().hex[:10]}",
                             "retry_backoff_s": 0.05, "max_retries": 2, **extra}}


def _tasks(server: LS, pid: int) -> list[dict]:
    got = server.get("/api/tasks", project=pid, fields="all", page_size=100)
    return got["tasks"] if isinstance(got, dict) else got


def _rect(label: str, x: float, y: float, w: float, h: float, ow: int, oh: int) -> dict:
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": ow,
            "original_height": oh, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}


def _expected(result: list[dict]) -> np.ndarray:
    rows = [[NAMES.index(r["value"]["rectanglelabels"][0]), r["value"]["x"] / 100, r["value"]["y"] / 100,
             (r["value"]["x"] + r["value"]["width"]) / 100, (r["value"]["y"] + r["value"]["height"]) / 100]
            for r in result]
    return np.asarray(rows, dtype=float).reshape(-1, 5)


def _start_boxes(task: dict, picks: dict[str, str]) -> list[dict]:
    """What the human starts from: the task's predictions, else (an untrained model predicts nothing) the image's
    true boxes, as Label Studio results."""
    if task["predictions"] and task["predictions"][0]["result"]:
        return [{k: v for k, v in r.items() if k not in ("score", "id")} for r in task["predictions"][0]["result"]]
    img = picks[task["data"]["al_name"]]
    h, w = cv2.imread(img).shape[:2]
    gt = dataset.read_labels(dataset.label_path(img), len(NAMES), 1, 1)
    return [_rect(NAMES[int(c)], x1 * 100, y1 * 100, (x2 - x1) * 100, (y2 - y1) * 100, w, h)
            for c, x1, y1, x2, y2 in gt]


def _annotate(server: LS, pid: int, picks: dict[str, str]) -> dict[str, np.ndarray]:
    """The human: edits the first task's boxes (moved, one relabelled), deletes a box of a task with two or more,
    adds a box to another, submits one image empty and accepts the rest. The expected boxes by name."""
    tasks = sorted(_tasks(server, pid), key=lambda t: t["id"])
    start = {t["id"]: _start_boxes(t, picks) for t in tasks}
    multi = next(t for t in tasks if len(start[t["id"]]) >= 2)
    rest = [t for t in tasks if t is not multi and start[t["id"]]]
    plan = {multi["id"]: "delete", rest[0]["id"]: "edit", rest[1]["id"]: "add", rest[2]["id"]: "empty"}
    expected = {}
    for t in tasks:
        pred = start[t["id"]]
        h, w = cv2.imread(picks[t["data"]["al_name"]]).shape[:2]
        ow, oh = w, h
        what = plan.get(t["id"], "accept")
        if what == "delete":
            pred = pred[1:]
        elif what == "edit":
            v = pred[0]["value"]
            v["x"], v["width"] = min(v["x"] + 2.5, 90), min(v["width"], 9.5)
            v["rectanglelabels"] = [NAMES[(NAMES.index(v["rectanglelabels"][0]) + 1) % len(NAMES)]]
        elif what == "add":
            pred.append(_rect("four", 5.0, 6.0, 12.5, 10.0, ow, oh))
        elif what == "empty":
            pred = []
        server.post(f"/api/tasks/{t['id']}/annotations/", {"result": pred, "was_cancelled": False,
                                                           "lead_time": 3.0})
        expected[t["data"]["al_name"]] = _expected(pred)
    return expected


def _scan(root: Path, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink() and needle in p.read_bytes():
                hits.append(str(p))
    return hits


def test_full_loop_with_label_studio_and_the_token_never_lands_on_disk(tmp_path, tiny_data, ls_server, monkeypatch,
                                                                       capsys):
    """A user's iteration end to end (CLI, dry run): the picks become tasks with the model's boxes; the human edits,
    deletes, adds and submits one image empty through Label Studio's API; --resume exports, merges and retrains, and
    the next iteration's dataset holds exactly the human's boxes. The run tree, the log, the CLI's output and the
    server's log are scanned for the token."""
    from al.cli import main

    monkeypatch.setenv(ENV, ls_server.token)
    rcfg = ls_cfg(ls_server)
    cfgp = make_config(tmp_path, tiny_data, active_learning={"max_samples_per_iteration": 5, "max_iterations": 2,
                                                             "review_source": "manual", "train_f1_sample": 4,
                                                             "target_f1": 0.99}, review=rcfg)
    assert main(["--config", str(cfgp), "--dry-run", "--headless"]) == 0
    out1 = capsys.readouterr().out
    assert "MANUAL REVIEW REQUIRED" in out1 and "[PAUSED]" in out1 and "Label Studio project" in out1
    run = tmp_path / "run"
    it0 = run / "iterations" / "iteration_0"
    rec = store.read_json(it0 / "label_studio_tasks.json")
    assert rec["project_url"] in out1 and len(rec["items"]) == 5 and all("task_id" in it for it in rec["items"])
    request = store.read_json(it0 / "review_request.json")
    assert request["backend"] == "label_studio" and request["label_studio"]["url"] == rec["project_url"]
    project = ls_server.get(f"/api/projects/{rec['project_id']}")
    assert project["title"] == rcfg["label_studio"]["project"]
    assert [lab for lab in NAMES if f'value="{lab}"' in project["label_config"]] == NAMES

    expected = _annotate(ls_server, rec["project_id"], {it["name"]: it["pick"] for it in rec["items"]})
    assert main(["--config", str(cfgp), "--resume", "--headless"]) == 0
    out2 = capsys.readouterr().out
    assert "ACTIVE LEARNING COMPLETE" in out2 and "5 of 5 picks came back labelled (1 marked empty" in out2
    rv = store.read_json(it0 / "review.json")
    assert rv["backend"] == "label_studio" and rv["returned_labelled"] == 5 and rv["negatives"] == 1
    assert rv["added_images"] == 5 and rv["added_boxes"] == sum(len(b) for b in expected.values())
    assert rv["removed_from_val"] == 5 and rv["annotated"] == rv["tasks"] == 5
    man = store.read_json(run / "dataset" / "v001" / "manifest.json")
    added = {Path(p).name: e for p, e in man["images"].items() if e.get("iteration_added") == 0
             and e["label_origin"] == "human"}
    assert set(added) == set(expected) and {e["source"] for e in added.values()} == {"label-studio"}
    _, splits = dataset.read_snapshot(run / "dataset" / "v001")
    train = {Path(p).name: p for p in splits["train"]}
    for name, boxes in expected.items():  # iteration 1 trains on exactly the human's boxes
        got = dataset.read_labels(dataset.label_path(train[name]), len(NAMES), 1, 1)
        np.testing.assert_allclose(got, boxes, atol=2e-6, err_msg=name)
    meta = store.read_json(it0 / "metadata.json")
    assert meta["dataset"]["next_version"] == rv["dataset_version"]

    token = ls_server.token.encode()
    assert token not in (out1 + out2).encode()
    assert _scan(tmp_path, token) == []
    assert (run / "al_loop.log").stat().st_size > 0 and token not in (run / "al_loop.log").read_bytes()
    assert token not in ls_server.out.read_bytes()
    assert token not in (ls_server.data_dir / "server.log").read_bytes()


def test_preview_polls_progress_and_skips_unknown_classes_and_errors(tmp_path, tiny_data, ls_server, monkeypatch):
    """The review screen's preview (the import run dry) reports 'annotated n of N' without writing; a skipped task
    is refused (or kept with on_skipped: keep); a label outside the classes is refused; 401, 404 and an unreachable
    server say what to fix."""
    monkeypatch.setenv(ENV, ls_server.token)
    ctx, rec = run_at_review(tmp_path / "a", tiny_data, n_picks=3, review_cfg=ls_cfg(ls_server))
    assert review.run(ctx) == "pause"
    info = rec.of(ReviewRequired)[0].info
    assert info["poll_s"] == 5.0 and info["label_studio"]["tasks"] == 3
    assert "Label Studio project" in info["backend_status"]
    paths = ctx.env.paths
    record = store.read_json(paths.label_studio_tasks(0))
    pid = record["project_id"]
    from al.review import label_studio as backend

    picks = store.read_json(paths.hard_examples(0))["picks"]
    backend.prepare(ctx, picks, NAMES)  # a re-run (the step was interrupted): nothing is uploaded or imported twice
    assert store.read_json(paths.label_studio_tasks(0))["items"] == record["items"]
    assert len(_tasks(ls_server, pid)) == 3  # one task and one upload per pick
    assert len(list((ls_server.data_dir / "media" / "upload" / str(pid)).iterdir())) == 3
    before = sorted(str(p) for p in paths.root.rglob("*"))
    with pytest.raises(ReviewError, match=r"annotated 0 of 3"):
        review.preview(ctx)
    tasks = sorted(_tasks(ls_server, pid), key=lambda t: t["id"])
    oh, ow = cv2.imread(record["items"][0]["pick"]).shape[:2]
    ls_server.post(f"/api/tasks/{tasks[0]['id']}/annotations/", {"result": [_rect("one", 10, 10, 20, 20, ow, oh)]})
    pv = review.preview(ctx)
    assert pv["returned_labelled"] == 1 and "annotated 1 of 3" in pv["source"] and pv["added_images"] == 1
    ls_server.post(f"/api/tasks/{tasks[1]['id']}/annotations/", {"result": [], "was_cancelled": True})
    with pytest.raises(ReviewError, match=r"1 tasks were skipped .*on_skipped: keep"):
        review.preview(ctx)
    assert sorted(str(p) for p in paths.root.rglob("*")) == before  # the preview wrote nothing

    # an unknown class: refused, naming the task, the label and the fix; nothing is imported
    ls_server.post(f"/api/tasks/{tasks[2]['id']}/annotations/", {"result": [_rect("ten", 1, 1, 5, 5, ow, oh)]})
    ctx.env.cfg.review.label_studio.on_skipped = "keep"
    with pytest.raises(ReviewError, match=r"'ten' is not a class of the dataset") as e:
        resume(ctx)
    assert f"task {tasks[2]['id']}" in str(e.value) and not paths.review(0).exists()
    ls_server.post(f"/api/tasks/{tasks[2]['id']}/annotations/", {"result": [_rect("two", 1, 1, 5, 5, ow, oh)]})
    assert resume(ctx) == "next"  # the newest submission wins; the skipped pick stays for a later round
    rv = store.read_json(paths.review(0))
    assert rv["returned_labelled"] == 2 and rv["skipped_kept"] == [Path(record["items"][1]["pick"]).name]
    assert rv["added_images"] == 2

    # a reused project must hold the dataset's classes
    ctx2, _ = run_at_review(tmp_path / "b", tiny_data, n_picks=2,
                            review_cfg=ls_cfg(ls_server, project=ctx.env.cfg.review.label_studio.project))
    assert review.run(ctx2) == "pause"  # the same title and classes: reused
    assert store.read_json(ctx2.env.paths.label_studio_tasks(0))["project_id"] == pid
    other = f"t-{uuid.uuid4().hex[:8]}"
    ls_server.post("/api/projects/", {"title": other, "label_config": "<View><Image name='image' value='$image'/>"
                   "<RectangleLabels name='label' toName='image'><Label value='zero'/><Label value='cat'/>"
                   "</RectangleLabels></View>"})
    ctx3, _ = run_at_review(tmp_path / "c", tiny_data, n_picks=2, review_cfg=ls_cfg(ls_server, project=other))
    with pytest.raises(ReviewError, match=r"missing \['one', 'two', 'three', 'four'\], unknown \['cat'\]"):
        review.run(ctx3)

    # 401: a wrong token, named by where it came from, never shown
    monkeypatch.setenv(ENV, "wrong-token-123456")
    ctx4, _ = run_at_review(tmp_path / "d", tiny_data, n_picks=2, review_cfg=ls_cfg(ls_server))
    with pytest.raises(ReviewError, match=rf"rejected the API token \(HTTP 401\) read from environment variable {ENV}"):
        review.run(ctx4)
    monkeypatch.setenv(ENV, ls_server.token)
    # 404: a URL that is not the server's base
    ctx5, _ = run_at_review(tmp_path / "e", tiny_data, n_picks=2, review_cfg=ls_cfg(ls_server))
    ctx5.env.cfg.review.label_studio.url = ls_server.url + "/nothing-here"
    with pytest.raises(ReviewError, match=r"HTTP 404.*review.label_studio.url"):
        review.run(ctx5)
    # nothing listening: retried with backoff, then what to start
    ctx6, rec6 = run_at_review(tmp_path / "f", tiny_data, n_picks=2, review_cfg=ls_cfg(ls_server))
    ctx6.env.cfg.review.label_studio.url = f"http://127.0.0.1:{lsapp.free_port()}"
    with pytest.raises(ReviewError, match=r"Cannot reach Label Studio .*`al-loop label-studio"):
        review.run(ctx6)
    assert sum("retry" in m for m in rec6.messages()) == 2
    assert _scan(tmp_path, ls_server.token.encode()) == []


def test_the_labelling_page_shows_the_pre_annotations(tmp_path, tiny_data, ls_server, monkeypatch):
    """Headless Chromium (Debian's, driven by playwright) logs in and opens a task: the screenshot is a real render
    of the image with the model's boxes over it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed and apt-get could not install it (./run test installs it)")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv(ENV, ls_server.token)
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=1, review_cfg=ls_cfg(ls_server))
    assert review.run(ctx) == "pause"
    rec = store.read_json(ctx.env.paths.label_studio_tasks(0))
    task = rec["items"][0]["task_id"]
    [pred] = _tasks(ls_server, rec["project_id"])[0]["predictions"]
    scores = sorted(f"{r['score']:.2f}" for r in pred["result"])
    assert scores, "the pick carries the model's boxes"
    shot = tmp_path / "labelling_page.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{ls_server.url}/user/login/")
        page.fill("input[name=email]", lsapp.USERNAME)
        page.fill("input[name=password]", ls_server.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/user/login" not in u, timeout=120_000)
        page.goto(f"{ls_server.url}/projects/{rec['project_id']}/data?task={task}")
        # the editor draws the image and the boxes on a canvas and lists the predicted regions with their scores
        page.wait_for_selector("canvas", timeout=120_000)
        page.wait_for_function(f"() => document.querySelectorAll('.lsf-outliner-item').length === {len(scores)}",
                               timeout=120_000)
        page.wait_for_function("() => [...document.querySelectorAll('img[alt=image]')].some(i => i.complete && "
                               "i.naturalWidth > 0)", timeout=120_000)  # the editor's copy of the image, loaded
        shown = sorted(page.locator(".lsf-outliner-item__control_type_score").all_inner_texts())
        labels = page.locator(".lsf-outliner-item").all_inner_texts()
        page.screenshot(path=str(shot))
        browser.close()
    assert shown == scores  # the model's boxes, with their scores, are the regions on the page
    want = sorted(r["value"]["rectanglelabels"][0] for r in pred["result"])
    assert sorted(next(n for n in NAMES if n in text) for text in labels) == want
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (900, 1280)
    assert float(img.std()) > 10, "a blank page"


def test_tui_review_screen_shows_the_project_and_live_progress_then_enter_imports(tmp_path, tiny_data, ls_server,
                                                                                  monkeypatch):
    """The TUI's review screen names the Label Studio project and polls its progress: it shows 'annotated 0 of 2',
    then 'annotated 1 of 2' once the human submits a task; Enter imports the submission."""
    import asyncio

    from al.app.api import run_loop
    from al.core.events import StepFinished
    from al.frontends.tui.app import LoopApp
    from al.frontends.tui.review import ReviewScreen
    from tests.tui.test_tui import SIZE, start_event, wait_for

    monkeypatch.setenv(ENV, ls_server.token)
    ctx, _ = run_at_review(tmp_path, tiny_data, n_picks=2, review_cfg=ls_cfg(ls_server, poll_s=0.5))
    ctx.state.save(ctx.env.paths)

    async def drive() -> None:
        app = LoopApp(ctx, start_event(ctx), runner=run_loop)
        app.ctx.ui.sinks.append(lambda ev: app.stop_runner() if isinstance(ev, StepFinished) and ev.step == "review"
                                else None)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), timeout=120, what="the review screen")
            screen = app.screen
            block = str(screen.query_one("#review-block").render())
            record = store.read_json(ctx.env.paths.label_studio_tasks(0))
            assert "Label Studio project" in block and f"/projects/{record['project_id']}/data" in block

            def panel() -> str:
                return str(screen.query_one("#preview").render())

            await wait_for(pilot, lambda: "annotated 0 of 2" in panel(), timeout=60, what="progress 0 of 2")
            task = record["items"][0]["task_id"]
            oh, ow = cv2.imread(record["items"][0]["pick"]).shape[:2]
            await asyncio.to_thread(ls_server.post, f"/api/tasks/{task}/annotations/",
                                    {"result": [_rect("three", 20, 20, 30, 30, ow, oh)]})
            await wait_for(pilot, lambda: "annotated 1 of 2" in panel(), timeout=60, what="progress 1 of 2 (polled)")
            assert "1/2 picks came back labelled" in panel()
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.return_value is not None, timeout=120, what="the import and the stop")

    asyncio.run(drive())
    rv = store.read_json(ctx.env.paths.review(0))
    assert rv["backend"] == "label_studio" and rv["returned_labelled"] == 1 and rv["added_boxes"] == 1
    assert rv["not_returned"] == [Path(store.read_json(ctx.env.paths.label_studio_tasks(0))["items"][1]["pick"]).name]
