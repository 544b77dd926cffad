"""The manual review pause: the picks and why, where the crops are, what to do, and what the export changes."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from al.frontends.tui import dataset_diff
from al.frontends.tui.modals import ConfirmScreen

SHORT = {"class_balance": "class", "size_diversity": "size", "spatial_diversity": "spatial", "uncertainty": "uncert"}


def _short(name: str) -> str:
    """Column header of a score component (the full names are in the pick's detail)."""
    return SHORT.get(name, name.split("_")[0][:7])


class ReviewScreen(Screen[bool]):
    """Shown while the runner waits in wait_for_review; dismisses with True (continue) or False (quit)."""

    BINDINGS = [Binding("enter", "continue", "Continue", priority=True),
                Binding("r", "recheck", "Re-check export"),
                Binding("q", "quit_review", "Quit (awaiting review)")]

    class DiffReady(Message):
        def __init__(self, diff: dataset_diff.DatasetDiff, purpose: str) -> None:
            super().__init__()
            self.diff, self.purpose = diff, purpose

    def __init__(self, info: dict, version_dir: Path) -> None:
        super().__init__()
        self.info = info
        self.version_dir = version_dir
        self.picks: list[dict] = list(info.get("picks") or [])
        self.components = list(dict.fromkeys(k for p in self.picks for k in (p.get("components") or {})))
        self.diff: dataset_diff.DatasetDiff | None = None
        self.checking = False
        self.answered = False

    def compose(self) -> ComposeResult:
        info = self.info
        yield Static(Text(f" MANUAL REVIEW REQUIRED · iteration {info.get('iteration')} · "
                          f"{info.get('hard_examples', len(self.picks))} hard examples ", style="bold"),
                     id="review-title")
        facts = [f"FN crops: {info.get('fn_crops', '')}", f"Picks:    {info.get('hard_examples_file', '')}"]
        if info.get("backend_status") or info.get("backend"):
            facts.append(f"Backend:  {info.get('backend_status') or info.get('backend')}")
        yield Static("\n".join(facts), id="review-facts", markup=False)
        with Horizontal(id="review-body"):
            with Vertical(id="review-left"):
                table = DataTable(id="picks", cursor_type="row", zebra_stripes=True)
                table.border_title = "Picks (↑↓ to inspect)"
                yield table
                with VerticalScroll(id="pick-box") as box:
                    box.border_title = "Selected pick: errors and their crops"
                    yield Static("", id="pick-detail", markup=False)
            with Vertical(id="review-right"):
                diff = Static("Checking the export…", id="diff", markup=False)
                diff.border_title = "What continuing imports"
                yield diff
                with VerticalScroll(id="steps-box") as box:
                    box.border_title = "Next steps"
                    yield Static("\n".join(f"{i}. {s}" for i, s in enumerate(info.get("steps") or [], 1)),
                                 id="next-steps", markup=False)
        yield Static("Enter: continue with the exported dataset · r: re-check the export · "
                     "q: quit (the run stays awaiting review; --resume imports the export)", id="review-help")
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
        table.focus()
        self._check("show")

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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._show_pick(int(event.row_key.value))

    @work(thread=True, exclusive=True, group="dataset-diff")
    def _check(self, purpose: str) -> None:
        """Hash and count the export on a worker thread; the answer comes back as a DiffReady message."""
        diff = dataset_diff.preview(self.info, self.version_dir)
        self.post_message(self.DiffReady(diff, purpose))

    def answer(self, ok: bool) -> None:
        """Dismiss once with the human's decision (late diff results are ignored afterwards)."""
        if not self.answered:
            self.answered = True
            self.dismiss(ok)

    def on_review_screen_diff_ready(self, msg: DiffReady) -> None:
        if self.answered:
            return
        self.diff = msg.diff
        self.checking = False
        panel = self.query_one("#diff", Static)
        panel.update(msg.diff.summary())
        panel.set_class(msg.diff.changed, "changed")
        panel.set_class(not msg.diff.changed, "unchanged")
        if msg.purpose != "continue":
            return
        if msg.diff.changed or msg.diff.unknown:
            self.answer(True)
            return
        if msg.diff.error:
            why = msg.diff.error
        elif msg.diff.kind == "returned":
            why = (f"None of the {msg.diff.picks_returned} returned label files differs from the model's "
                   f"pre-annotations ({msg.diff.combined_dir}): they look unreviewed.")
        else:
            why = (f"The export in {msg.diff.combined_dir} adds no new images to the training set (dataset version "
                   f"{msg.diff.version}). Retraining now uses the same data.")
        self.app.push_screen(ConfirmScreen("Nothing changed in the combined dataset", why + "\n\nContinue anyway?",
                                           yes="Continue anyway", no="Back to review", tag="unchanged"),
                             callback=lambda yes: self.answer(True) if yes else None)

    def action_continue(self) -> None:
        if self.checking:
            return
        self.checking = True
        self.query_one("#diff", Static).update("Checking the export before continuing…")
        self._check("continue")

    def action_recheck(self) -> None:
        self.query_one("#diff", Static).update("Checking the export…")
        self._check("show")

    def action_quit_review(self) -> None:
        self.answer(False)
