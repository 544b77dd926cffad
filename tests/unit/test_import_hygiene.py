"""The core runs without the UI: al.core.machine and the steps never import textual (checked in a fresh interpreter)."""

import json
import subprocess
import sys


def _loaded(module: str) -> set[str]:
    code = (f"import sys, json, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('textual', 'torch', 'ultralytics', 'rich_pixels', 'textual_plotext'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_core_never_imports_textual():
    for mod in ("al.core.machine", "al.app.session", "al.frontends.console", "al.steps.retrain", "al.cli"):
        assert "textual" not in _loaded(mod), mod


def test_pure_logic_imports_no_torch():
    for mod in ("al.metrics.matching", "al.selection.sampling", "al.metrics.convergence", "al.report.error_analysis",
                "al.report.plots", "al.core.store", "al.core.config", "al.core.machine"):
        assert not _loaded(mod) & {"torch", "ultralytics"}, mod
