"""Small modal screens: a yes/no confirmation and the error report of a failed step."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True (y) or False (n / Esc). `tag` tells callers which question."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No", show=False)]

    def __init__(self, title: str, body: str, *, yes: str = "Yes", no: str = "No", tag: str = "") -> None:
        super().__init__(classes="modal")
        self.title_text, self.body, self.yes, self.no, self.tag = title, body, yes, no, tag

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.body, id="dialog-body", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="warning")
                yield Button(f"{self.no} (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ErrorScreen(ModalScreen[None]):
    """A failed step: the message (which says what to fix) and the command that resumes the run."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "close", "Close", show=False)]

    def __init__(self, title: str, message: str, resume_command: str = "") -> None:
        super().__init__(classes="modal")
        self.title_text, self.message, self.resume_command = title, message, resume_command

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="error") as box:
            box.border_title = self.title_text
            yield Static(self.message, id="error-message", markup=False)
            if self.resume_command:
                yield Static("The run is saved and resumable. After fixing the cause, resume with:",
                             classes="dim")
                yield Static(self.resume_command, id="resume-command", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Close (Esc)", id="close", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
