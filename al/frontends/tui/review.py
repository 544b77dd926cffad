"""The manual review pause: the picks and why, where the crops are, what to do, and what continuing imports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from al.app.api import ImportPreview, accept_prompt_suggestion, review_block
from al.core.errors import UserError
from al.frontends.tui.images import picture
from al.frontends.tui.modals import ConfirmScreen

MAX_CROPS = 3
"""FN crops drawn per pick (the detail lists every crop's path)."""

SHORT = {"class_balance": "class", "size_diversity": "size", "spatial_diversity": "spatial", "uncertainty": "uncert"}


def _short(name: str) -> str:
    """Column header of a score component (the full names are in the pick's detail)."""
    return SHORT.get(name, name.split("_")[0][:7])


def _block(info: dict) -> tuple[str, str]:
    """The console's review block (al.app.api.review_block) as (headline, the rest), without its rules of '='."""
    lines = [ln for ln in review_block(info).splitlines() if not ln or ln.strip("=")]
    return (lines[0], "\n".join(lines[1:])) if lines else ("", "")


class ReviewScreen(Screen[bool]):
    """Shown while the runner waits in wait_for_review; dismisses with True (continue) or False (quit). `check`
    answers what continuing imports (al.app.api.preview_import); it runs on a worker thread."""

    BINDINGS = [Binding("enter", "continue", "Continue", priority=True),
                Binding("r", "recheck", "Check again"),
                Binding("a", "accept_prompt", "Accept prompt suggestion"),
                Binding("q", "quit_review", "Quit (awaiting review)")]

    class PreviewReady(Message):
        def __init__(self, preview: ImportPreview, purpose: str) -> None:
            super().__init__()
            self.preview, self.purpose = preview, purpose

    def __init__(self, info: dict, check: Callable[[], ImportPreview]) -> None:
        super().__init__()
        self.info = info
        self.check = check
        self.picks: list[dict] = list(info.get("picks") or [])
        self.components = list(dict.fromkeys(k for p in self.picks for k in (p.get("components") or {})))
        self.preview: ImportPreview | None = None
        self.checking = False
        self.polling = False
        self.answered = False

    def compose(self) -> ComposeResult:
        headline, block = _block(self.info)
        yield Static(Text(f" {headline} ", style="bold"), id="review-title")
        with Horizontal(id="review-body"):
            with Vertical(id="review-left"):
                table: DataTable[str] = DataTable(id="picks", cursor_type="row", zebra_stripes=True)
                table.border_title = "Picks (↑↓ to inspect)"
                yield table
                with VerticalScroll(id="pick-box") as box:
                    box.border_title = "Selected pick: errors and their crops"
                    yield Static("", id="pick-detail", markup=False)
                    yield Horizontal(id="pick-images")
            with Vertical(id="review-right"):
                preview = Static("Checking what continuing imports…", id="preview", markup=False)
                preview.border_title = "What continuing imports"
                yield preview
                if self.info.get("prompts"):
                    sugg: DataTable[str] = DataTable(id="prompt-suggestions", cursor_type="row")
                    sugg.border_title = "Prompt suggestions (a: accept the highlighted one)"
                    yield sugg
                    yield Static("", id="prompt-texts", markup=False)
                with VerticalScroll(id="steps-box") as box:
                    box.border_title = "What to do"
                    yield Static(block, id="review-block", markup=False)
        yield Static("Enter: continue (imports the reviewed labels) · r: check again what continuing imports · "
                     "q: quit (the run stays awaiting review; --resume imports the labels)", id="review-help")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#picks", DataTable)
        table.add_column("#", key="n")
        table.add_column("image", key="image")
        table.add_column("score", key="score")
        for c in self.components:
            table.add_column(_short(c), key=c)
        table.add_column("FN", key="fn")
        table.add_column("why", key="why")
        for i, p in enumerate(self.picks, 1):
            comps = p.get("components") or {}
            fns = sum(1 for e in p.get("errors") or [] if e.get("kind") == "fn")
            table.add_row(str(i), Path(p.get("image", "")).name, f"{float(p.get('score', 0)):.3f}",
                          *[f"{float(comps[c]):.2f}" if c in comps else "" for c in self.components],
                          str(fns), "; ".join(p.get("reasons") or []), key=str(i - 1))
        self._show_pick(0)
        if self.info.get("prompts"):
            sugg = self.query_one("#prompt-suggestions", DataTable)
            for key, label in (("n", "#"), ("priority", "prio"), ("finding", "finding"), ("edit", "proposed edit")):
                sugg.add_column(label, key=key)
            self._show_prompts()
        table.focus()
        self._check("show")
        poll = self.info.get("poll_s")
        if poll:  # a backend with live progress (Label Studio: annotated n of N): check again every poll_s
            self.set_interval(float(poll), self._poll)

    def _poll(self) -> None:
        if not (self.checking or self.answered or self.polling):
            self.polling = True
            self._check("show")

    def _show_prompts(self) -> None:
        """The prompt version the next training embeds and its suggestions (accepted ones marked)."""
        pr = self.info["prompts"]
        sugg = self.query_one("#prompt-suggestions", DataTable)
        row = sugg.cursor_row
        sugg.clear()
        for i, sg in enumerate(pr["suggestions"], 1):
            edit = "; ".join(f"{c}: {t}" for c, t in sg["prompt_edit"].items()) or "(no prompt edit)"
            sugg.add_row(f"{i}{' ✓' if sg['accepted'] else ''}", sg["priority"], sg["finding"], edit, key=str(i - 1))
        if pr["suggestions"]:
            sugg.move_cursor(row=min(max(row, 0), len(pr["suggestions"]) - 1))
        texts = "\n".join(f"{c}: {t}" for c, t in pr["texts"].items()) or "(no prompt texts: classes are prompted " \
                                                                            "by their names)"
        self.query_one("#prompt-texts", Static).update(f"{Path(pr['file']).name} (read by the next training):\n"
                                                       f"{texts}")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # the accept key exists only where the next training embeds prompts (a YOLOE model.target)
        return bool(self.info.get("prompts")) if action == "accept_prompt" else True

    def action_accept_prompt(self) -> None:
        pr = self.info.get("prompts")
        if not pr or not pr["suggestions"]:
            self.notify("No prompt suggestions this iteration", severity="warning")
            return
        idx = self.query_one("#prompt-suggestions", DataTable).cursor_row
        try:
            self.info["prompts"] = accept_prompt_suggestion(pr["file"], idx)
        except UserError as e:
            self.notify(str(e), severity="warning")
            return
        edit = self.info["prompts"]["suggestions"][idx]["prompt_edit"]
        self.notify("Accepted into " + Path(pr["file"]).name + ": " + "; ".join(f"{c}: {t}" for c, t in edit.items()))
        self._show_prompts()
        self.query_one("#review-block", Static).update(_block(self.info)[1])

    def _show_pick(self, idx: int) -> None:
        if not 0 <= idx < len(self.picks):
            self.query_one("#pick-detail", Static).update("(no picks)")
            return
        p = self.picks[idx]
        lines = [f"image: {p.get('image', '')}"]
        comps = p.get("components") or {}
        if comps:
            lines.append("score " + f"{float(p.get('score', 0)):.3f} = " +
                         ", ".join(f"{k} {float(v):.2f}" for k, v in comps.items()))
        errors = p.get("errors") or []
        for e in errors:
            what = " ".join(str(e[k]) for k in ("kind", "size", "class_name", "position") if e.get(k)) or "error"
            lines.append(f"{what}: {e.get('crop') or '(no crop saved)'}")
        if not errors:
            lines += [f"why: {r}" for r in p.get("reasons") or []]
        self.query_one("#pick-detail", Static).update("\n".join(lines))
        self._show_pictures(p, errors)

    def _show_pictures(self, pick: dict, errors: list[dict]) -> None:
        """The pick and up to MAX_CROPS of its FN crops as pictures (text lines where one cannot be shown)."""
        box = self.query_one("#pick-images", Horizontal)
        box.remove_children()
        shown = [picture(pick["image"], "pick")] if pick.get("image") else []
        crops = [e for e in errors if e.get("crop")][:MAX_CROPS]
        shown += [picture(e["crop"], f"FN {e.get('class_name') or ''}".strip()) for e in crops]
        if shown:
            box.mount(*shown)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._show_pick(int(event.row_key.value))

    @work(thread=True, exclusive=True, group="import-preview")
    def _check(self, purpose: str) -> None:
        """The import, run dry on a worker thread (it hashes); the answer comes back as a PreviewReady message."""
        self.post_message(self.PreviewReady(self.check(), purpose))

    def answer(self, ok: bool) -> None:
        """Dismiss once with the human's decision (late previews are ignored afterwards)."""
        if not self.answered:
            self.answered = True
            self.dismiss(ok)

    def on_review_screen_preview_ready(self, msg: PreviewReady) -> None:
        if self.answered:
            return
        pv = self.preview = msg.preview
        self.checking = self.polling = False
        panel = self.query_one("#preview", Static)
        panel.update(pv.summary())
        panel.set_class(pv.changed, "changed")
        panel.set_class(not pv.changed, "unchanged")
        if msg.purpose != "continue":
            return
        if pv.changed or pv.unknown:
            self.answer(True)
            return
        if pv.error:
            why = pv.error
        elif pv.unreviewed:
            why = (f"None of the {pv.returned_labelled} returned label files differs from the model's "
                   f"pre-annotations ({pv.source}): they look unreviewed.")
        else:
            why = (f"{pv.source} adds no new images to the training set (dataset version {pv.dataset_version}). "
                   f"Retraining now uses the same data.")
        self.app.push_screen(ConfirmScreen("Nothing new to import", why + "\n\nContinue anyway?",
                                           yes="Continue anyway", no="Back to review", tag="unchanged"),
                             callback=lambda yes: self.answer(True) if yes else None)

    def action_continue(self) -> None:
        if self.checking:
            return
        self.checking = True
        self.query_one("#preview", Static).update("Checking what continuing imports…")
        self._check("continue")

    def action_recheck(self) -> None:
        self.query_one("#preview", Static).update("Checking what continuing imports…")
        self._check("show")

    def action_quit_review(self) -> None:
        self.answer(False)
