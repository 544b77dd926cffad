"""Import hygiene: the TUI never pulls in torch or Ultralytics (the loop runs them on its own thread/process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tui_does_not_import_torch_or_ultralytics():
    code = ("import sys, al.frontends.tui.app, al.frontends.tui.review, al.frontends.tui.widgets\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'torchvision'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"al.frontends.tui imports {out.stdout.strip()}"
