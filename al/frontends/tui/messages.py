"""Textual messages that carry the core's news from the runner thread to the UI thread."""

from __future__ import annotations

import queue

from textual.message import Message

from al.core.events import Event


class CoreEvent(Message):
    """One core event (al.core.events), posted from the runner thread."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class ProgressTick(Message):
    """A run of consecutive Progress events; `box[0]` is replaced by newer ones until the UI takes it, so a fast
    stream cannot flood the UI, and no Progress is ever shown after an event that followed it."""

    def __init__(self, box: list) -> None:
        super().__init__()
        self.box = box


class ReviewWanted(Message):
    """The runner is blocked in wait_for_review until an answer (True: continue, False: quit) is put in `answer`."""

    def __init__(self, info: dict, answer: queue.Queue[bool]) -> None:
        super().__init__()
        self.info = info
        self.answer = answer


class RunnerDone(Message):
    """The runner returned `code` (or crashed with `error`, a traceback)."""

    def __init__(self, code: int, error: str | None = None) -> None:
        super().__init__()
        self.code = code
        self.error = error
