"""The real program in a real terminal (tmux): progress, quit + confirm, --resume, review with Enter, history rebuilt.

Dry-run on the tiny demo data (no training), manual review so the loop stops for a human.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from al.core import store
from al.core.paths import RunPaths
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


TIMEOUT = float(os.environ.get("AL_TMUX_TIMEOUT", "300"))
"""The longest any one screen may take to appear. The whole test takes ~30 s on an idle machine and a loaded one is
3-5x slower, so this is generous: every wait ends as soon as its text is on screen, or fails showing the last one."""
EXIT = re.compile(r"AL-EXIT=(\d+)")  # printed by the pane's shell when the program ends


class Term:
    """One program in a detached tmux session on a private server socket."""

    def __init__(self, name: str):
        self.sock = f"al-tui-test-{os.getpid()}-{name}"
        self.session = name

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=60).stdout

    def start(self, argv: list[str]) -> None:
        self.tmux("kill-session", "-t", self.session)  # the previous program's pane, kept open for inspection
        # pytest exports COLUMNS/LINES (80x24), which would win over the pane's real size; the shell stays after the
        # program (until the session is killed) so that its exit code and last screen can be read
        cmd = "unset COLUMNS LINES; " + " ".join(argv) + "; echo AL-EXIT=$?; exec sleep infinity"
        env = {"TERM": "xterm-256color", "YOLO_OFFLINE": "1"}
        self.tmux("new-session", "-d", "-s", self.session, "-x", "120", "-y", "40",
                  *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], f"cd {ROOT} && {cmd}")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def wait_screen(self, found, what: str, *, timeout: float = TIMEOUT, exited: bool = False):
        """Poll the pane until found(screen) is truthy and return that; fail with the last screen after `timeout`
        seconds, or at once when the program ended first (unless its end is what is awaited)."""
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            got = found(screen)
            if got:
                return got
            if not exited and EXIT.search(screen):
                break
            time.sleep(0.2)
        size = self.tmux("display", "-p", "-t", self.session, "#{window_width}x#{window_height}").strip()
        raise AssertionError(f"never saw {what} within {timeout:.0f} s ({size}); last screen:\n{screen}")

    def wait_text(self, *texts: str) -> str:
        return self.wait_screen(lambda s: s if all(t in s for t in texts) else None, repr(texts))

    def wait_exit(self) -> int:
        m = self.wait_screen(EXIT.search, "the program exit", exited=True)
        return int(m.group(1))

    def close(self) -> None:
        self.tmux("kill-server")


def _export(data: Path, out: Path, hard: Path) -> None:
    """What a human does during review: the training split plus the picked images, in YOLO format."""
    (out / "images" / "train").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "train").mkdir(parents=True, exist_ok=True)
    imgs = sorted((data / "images" / "train").glob("*.jpg"))
    imgs += [Path(p["image"]) for p in json.loads(hard.read_text())["picks"]]
    for img in imgs:
        shutil.copy(img, out / "images" / "train" / img.name)
        shutil.copy(img.parent.parent.parent / "labels" / img.parent.name / (img.stem + ".txt"),
                    out / "labels" / "train" / (img.stem + ".txt"))
    names = yaml.safe_load((data / "data.yaml").read_text())["names"]
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train",
                                                   "names": names}))


def test_real_program_in_tmux(tmp_path, tiny_data):
    cfg = make_config(tmp_path, tiny_data, active_learning__review_source="manual", active_learning__max_iterations=3)
    paths = RunPaths(tmp_path / "run")
    loop = [sys.executable, "al_loop.py", "--config", str(cfg), "--dry-run"]
    term = Term("tui")
    try:
        # 1. start: the dashboard shows the baseline step running; q asks, y stops at the next safe point
        term.start(loop)
        term.wait_text("RUNNING", "baseline", "Progress")
        term.keys("q")
        term.wait_text("Stop the run?")
        term.keys("y")
        assert term.wait_exit() == 130
        assert store.read_json(paths.state)["step"] == "interrupted"

        # 2. --resume: on to the review screen; export, Enter continues; at the next review q leaves it waiting
        term.start(loop + ["--resume"])
        term.wait_text("MANUAL REVIEW REQUIRED", "Iteration: 0", "Dataset not found")
        _export(tiny_data.parent, tmp_path / "combined", paths.hard_examples(0))
        term.keys("Enter")
        term.wait_text("MANUAL REVIEW REQUIRED", "Iteration: 1")
        assert store.read_json(paths.review(0))["added_images"] == 4
        term.keys("q")
        assert term.wait_exit() == 0
        state = store.read_json(paths.state)
        assert (state["step"], state["iteration"], state["review_pending"]) == ("awaiting_review", 1, True)

        # 3. --resume again: the review screen first (nothing imported yet); Enter, and "continue anyway" as the
        # export holds nothing new; metrics of iterations 0 and 1 come back from disk, the run finishes
        term.start(loop + ["--resume"])
        term.wait_text("MANUAL REVIEW REQUIRED", "Iteration: 1", "Resumed (--resume)")
        assert not paths.review(1).exists()
        term.wait_text("New for training: +0 images")  # the import preview of what continuing imports
        term.keys("Enter")
        term.wait_text("Nothing new to import", "adds no new images", "Continue anyway?")
        term.keys("y")
        term.wait_text("COMPLETE", "Maximum iterations reached")
        # It, P, R, F1 of the metrics table: the rows of iterations 0 and 1 rebuilt from disk, then iteration 2's
        term.wait_screen(lambda s: re.findall(r"│ ([0-9]) +\d\.\d{3} +\d\.\d{3} +\d\.\d{3}", s) == ["0", "1", "2"],
                         "the metrics rows of iterations 0, 1 and 2")
        term.keys("q")
        assert term.wait_exit() == 0
        assert store.read_json(paths.state)["step"] == "done"
        assert [r["iteration"] for r in store.read_csv(paths.convergence_csv)] == ["0", "1", "2"]
        # al_loop.log holds the three TUI sessions' lines (the CLI attaches it whatever the frontend)
        log = paths.events_log.read_text(encoding="utf-8")
        for line in ("[INIT] Run directory:", "[BASELINE]", "[STEP 1/7] Validating model...", "[INTERRUPTED] Stopped",
                     "MANUAL REVIEW REQUIRED", "[REVIEW] Continuing: +4 images", "[PAUSED] Iteration 1 is awaiting",
                     "ACTIVE LEARNING COMPLETE"):
            assert line in log, line
    finally:
        term.close()
