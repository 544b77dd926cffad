"""The run's log file: always attached, whatever the frontend, so al_loop.log holds the run's lines."""

from __future__ import annotations

import logging
from pathlib import Path

from al.core.events import Event
from al.frontends.lines import ProgressFilter, render

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class LogFile:
    """An event sink writing render()'s lines to `path` through the 'al' logger (which also carries the
    tracebacks of unexpected errors). close() detaches it."""

    def __init__(self, path: Path):
        self.log = logging.getLogger("al")
        self.log.setLevel(logging.DEBUG)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.handler = _QuietFileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(self.handler)
        self.progress = ProgressFilter()

    def __call__(self, ev: Event) -> None:
        if not self.progress(ev):
            return
        for text, level in render(ev):
            for line in text.splitlines():
                self.log.log(LEVELS.get(level, logging.INFO), line)

    def close(self) -> None:
        self.log.removeHandler(self.handler)
        self.handler.close()


class _QuietFileHandler(logging.FileHandler):
    """A FileHandler that stays silent when its disk is full or gone: logging's default prints a traceback to
    stderr for every failed record, and the run reports the I/O error itself, in one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
