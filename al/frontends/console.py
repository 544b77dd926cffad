"""Headless frontend: plain lines (al.frontends.lines) on stdout, and Enter-to-continue review on a terminal."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from al.core.events import Event
from al.frontends.lines import DEBUG, ProgressFilter, render


class ConsoleFrontend:
    """Prints core events; a human at a terminal (`interactive`) continues a review pause with Enter."""

    def __init__(self, out: TextIO | None = None, *, interactive: bool = False, progress_every: float = 10.0):
        self.out = out or sys.stdout
        self.interactive = interactive
        self.progress = ProgressFilter(progress_every)
        self._stop = threading.Event()

    def emit(self, ev: Event) -> None:
        if not self.progress(ev):
            return
        for text, level in render(ev):
            if level != DEBUG:
                print(text, file=self.out, flush=True)

    def request_stop(self) -> None:
        """SIGTERM / Ctrl+C: the running step stops at its next safe point."""
        self._stop.set()

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_for_review(self, info: dict) -> bool:
        """True when the human pressed Enter; False without a terminal, or on Ctrl+C / end of input (run pauses).
        A review shown again by --resume (info["resumed"]) continues at once: running --resume was the continue."""
        if info.get("resumed"):
            return True
        if not self.interactive:
            return False
        try:
            input("When ready to continue training, press ENTER...\n(or Ctrl+C to exit)\n")
            return True
        except (KeyboardInterrupt, EOFError):
            print(file=self.out)
            return False
