"""What a step receives: the persisted run state, the read-only run environment, a model provider and the
frontend it reports to. Steps import only this; the composition (which frontend, which detector) is the CLI's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from al.core.config import Config
from al.core.events import Event, Message
from al.core.paths import RunPaths
from al.core.state import RunState


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    auto: bool = False


@dataclass(frozen=True)
class RunEnv:
    """Read-only for the life of one invocation: the config, the run tree and the command-line options."""

    cfg: Config
    paths: RunPaths
    opts: Options

    @property
    def yolo_config_dir(self) -> Path:
        return self.cfg.run_dir / ".yolo_config"

    def command(self, *flags: str | int) -> str:
        """The command line that runs this config with `flags` (what an error message tells the user to run).
        A restart (--start-iteration) takes --dry-run and --auto from its command line, so they are repeated."""
        mode = [f for f, on in (("--dry-run", self.opts.dry_run), ("--auto", self.opts.auto))
                if on and "--start-iteration" in flags]
        return " ".join(["python al_loop.py --config", str(self.cfg.source_path), *map(str, flags), *mode])

    def resume_command(self) -> str:
        return self.command("--resume")


class Frontend(Protocol):
    """What the core needs from whoever shows the run (the console printer, the TUI, a test)."""

    def emit(self, ev: Event) -> None:
        """Show one core event (called on the runner's thread)."""

    def stop_requested(self) -> bool:
        """The user asked to stop (quit, Ctrl+C, SIGTERM): the running step stops at its next safe point."""

    def wait_for_review(self, info: dict) -> bool:
        """Block until the human continues (True) or leaves the run awaiting review (False). info["resumed"]: the
        review shown again by --resume, before its import (a frontend without a screen to show continues)."""


class Tee:
    """A frontend that also hands every event to sinks (the run's log file), before the frontend sees it."""

    def __init__(self, frontend: Frontend, *sinks: Callable[[Event], None]):
        self.frontend = frontend
        self.sinks = list(sinks)

    def emit(self, ev: Event) -> None:
        for sink in self.sinks:
            sink(ev)
        self.frontend.emit(ev)

    def stop_requested(self) -> bool:
        return self.frontend.stop_requested()

    def wait_for_review(self, info: dict) -> bool:
        return self.frontend.wait_for_review(info)


class Listeners:
    """A frontend for programs that embed the loop (benchmarks, notebooks, tests): every event goes to each
    subscriber; stop() asks the run to stop; a review pause waits only if `review` answers (else the run pauses)."""

    def __init__(self, *subscribers: Callable[[Event], None], review: Callable[[dict], bool] | None = None):
        self.subscribers = list(subscribers)
        self.review = review
        self._stop = threading.Event()

    def subscribe(self, fn: Callable[[Event], None]) -> None:
        self.subscribers.append(fn)

    def emit(self, ev: Event) -> None:
        for fn in list(self.subscribers):
            fn(ev)

    def stop(self) -> None:
        self._stop.set()

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_for_review(self, info: dict) -> bool:
        """The `review` callback's answer; without one, a first request pauses the run and a review shown again
        by --resume (info["resumed"]) continues."""
        if self.review is None:
            return bool(info.get("resumed"))
        return bool(self.review(info))


class Models(Protocol):
    """Loads models once per weights file (implemented by al.yolo.service.DetectorService)."""

    def model(self, weights: Path) -> Any:
        """The loaded model for `weights`, cached while the file is unchanged."""


@dataclass
class StepContext:
    """Everything one step may use. `state` is the only mutable part; the runner persists it."""

    env: RunEnv
    state: RunState
    models: Models
    ui: Frontend

    @property
    def iteration(self) -> int:
        return self.state.iteration

    def say(self, text: str, level: str = "info") -> None:
        self.ui.emit(Message(text, level))
