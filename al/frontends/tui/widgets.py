"""Dashboard widgets. Each is updated only by the app's message handlers, on the UI thread."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, ProgressBar, RichLog, Static
from textual_plotext import PlotextPlot

from al.app.api import STEPS
from al.core.events import Progress
from al.frontends.tui.model import (
    DONE,
    FAILED,
    INTERRUPTED,
    PAUSED,
    RUNNING,
    SKIPPED,
    WAITING,
    Eta,
    MetricRow,
    Timeline,
    fmt_secs,
)

STATE_LOOK = {
    DONE: ("✔", "green"), RUNNING: ("▶", "bold yellow"), WAITING: ("·", "dim"), FAILED: ("✘", "bold red"),
    SKIPPED: ("–", "dim"), PAUSED: ("⏸", "bold magenta"), INTERRUPTED: ("■", "yellow"),
}
STATE_WORD = {PAUSED: "awaiting review"}


class StepTimeline(Static):
    """The steps of the current iteration with their state and duration (elapsed while running)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.timeline = Timeline()
        self.now = 0.0

    def show(self, now: float) -> None:
        self.now = now
        tl = self.timeline
        self.border_title = "Baseline" if tl.iteration is None else f"Iteration {tl.iteration}"
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(width=1)
        table.add_column(width=1, style="dim")
        table.add_column(ratio=1, no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True, min_width=7)
        rows = ([("0", "baseline", tl.baseline)] if tl.baseline is not None else []) + \
               [(str(i), s, tl.rows[s]) for i, s in enumerate(STEPS, 1)]
        for num, name, row in rows:
            icon, style = STATE_LOOK[row.state]
            if row.state == RUNNING and row.started is not None:
                secs = fmt_secs(max(now - row.started, 0.0))
            else:
                secs = fmt_secs(row.seconds)
            table.add_row(Text(icon, style=style), num, Text(name, style=style if row.state != WAITING else ""),
                          Text(STATE_WORD.get(row.state, row.state), style=style), secs)
        self.update(table)


class StepProgress(Vertical):
    """The running step: its title, a bar in the step's own unit (images, batches, epochs) and an ETA."""

    DEFAULT_CSS = """
    StepProgress { height: auto; }
    StepProgress ProgressBar { display: none; }
    StepProgress.has-bar ProgressBar { display: block; }
    StepProgress Label { width: 1fr; }
    StepProgress #progress-detail { height: 2; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.eta = Eta()
        self.train_eta = Eta()
        self.train_left: float | None = None
        self.epochs: tuple[int, int] | None = None
        self.last: Progress | None = None
        self.step: str | None = None

    def compose(self) -> ComposeResult:
        yield Label("Waiting for the loop to start…", id="progress-title")
        yield ProgressBar(total=1, show_eta=False, id="progress-bar")
        yield Label("", id="progress-detail")

    def start(self, step: str, title: str) -> None:
        self.step, self.last, self.epochs, self.train_left = step, None, None, None
        self.eta, self.train_eta = Eta(), Eta()
        self.query_one("#progress-title", Label).update(Text(title + "…", style="bold"))
        self.query_one("#progress-detail", Label).update("")
        self.remove_class("has-bar")

    def idle(self, text: str) -> None:
        self.step, self.last = None, None
        self.query_one("#progress-title", Label).update(text)
        self.query_one("#progress-detail", Label).update("")
        self.remove_class("has-bar")

    def progress(self, ev: Progress, now: float) -> None:
        if self.step is not None and ev.step != self.step:
            return  # a late event of the previous step
        if ev.unit == "epochs":
            self.epochs = (ev.done, ev.total)
            self.train_left = self.train_eta.update(("epochs",), ev.done, ev.total, now)
            if self.last is not None and self.last.unit == "batches":
                self._detail(self.last, None)  # keep the batch bar; refresh the training ETA
                return
        eta = self.eta.update((ev.step, ev.unit, ev.detail), ev.done, ev.total, now)
        self.last = ev
        bar = self.query_one("#progress-bar", ProgressBar)
        bar.update(total=max(ev.total, 1), progress=min(ev.done, max(ev.total, 1)))
        self.add_class("has-bar")
        self._detail(ev, eta)

    def _detail(self, ev: Progress, eta: float | None) -> None:
        parts = [f"{ev.done}/{ev.total} {ev.unit}"]
        if ev.detail:
            parts.append(ev.detail)
        if eta is not None:
            parts.append(f"ETA {fmt_secs(eta)}" + (" (epoch)" if ev.unit == "batches" else ""))
        if ev.unit == "batches" and self.train_left is not None:
            parts.append(f"training ETA {fmt_secs(self.train_left)}")
        # fixed height: no layout pass for the most frequent update of the dashboard
        self.query_one("#progress-detail", Label).update(" · ".join(parts), layout=False)


class MetricsTable(DataTable):
    """One row per iteration."""

    COLUMNS = ("It", "P", "R", "F1", "mAP50", "mAP50-95", "TP", "FP", "FN", "Dec F1", "Champ", "Labelled",
               "Version")
    """P..FN: the validation remainder (mining_source val shrinks it); Dec F1: the frozen decision set's, what the
    rules read; Champ: the champion after the iteration's gate."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*self.COLUMNS)

    def set_rows(self, rows: list[MetricRow]) -> None:
        def f(v):
            return "" if v is None else f"{v:.3f}"

        def n(v):
            return "" if v is None else str(v)

        self.clear()
        for r in rows:
            # the champion after this iteration's gate; ✓ its challenger was promoted, ✗ rejected (kept)
            champ = "" if r.champion is None else f"{r.champion} {'' if r.promoted is None else '✓✗'[not r.promoted]}"
            self.add_row(str(r.iteration), f(r.precision), f(r.recall), f(r.f1), f(r.map50), f(r.map50_95),
                         n(r.tp), n(r.fp), n(r.fn), Text(f(r.decision_f1), style="bold"), champ,
                         n(r.labelled_images), r.dataset_version,
                         key=str(r.iteration))
        if rows:
            self.move_cursor(row=len(rows) - 1)


class F1Plot(PlotextPlot):
    """Validation F1 (and train F1 when sampled) over iterations against the target line."""

    def set_data(self, rows: list[MetricRow], target: float) -> None:
        plt = self.plt
        plt.clear_figure()
        xs: list[float] = [r.iteration for r in rows if r.f1 is not None]
        tr = [(r.iteration, r.train_f1) for r in rows if r.train_f1 is not None]
        dec = [(r.iteration, r.decision_f1) for r in rows if r.decision_f1 is not None]
        last = next((r for r in reversed(rows) if r.decision_set), None)
        # no legend (it would cover the target line); decision green, val cyan, train blue, target red
        # with a decision set the title names it (green, what the rules read) and the val remainder (cyan)
        self.border_title = (f"F1: {last.decision_set}({last.decision_images}) · val remainder" if last else
                             f"F1: val{' · train' if tr else ''} · target {target:.2f}")
        lo, hi = (min(xs) - 0.5, max(xs) + 0.5) if xs else (-0.5, 0.5)
        plt.plot([lo, hi], [target, target], color="red")
        if tr:
            plt.plot([t[0] for t in tr], [t[1] for t in tr], marker="dot", color="blue")
        if xs:
            plt.plot(xs, [r.f1 for r in rows if r.f1 is not None], marker="dot", color="cyan")
        if dec:
            plt.plot([d[0] for d in dec], [d[1] for d in dec], marker="dot", color="green")
            plt.xticks(xs)
        else:
            plt.xticks([0])
        plt.xlim(lo, hi)
        plt.ylim(0, 1)
        plt.xlabel("iteration")
        self.refresh()


class ClassPlot(PlotextPlot):
    """Per-class F1 or FN counts of the latest iteration (p toggles), as horizontal bars."""

    MAX_CLASSES = 12

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.mode = "f1"
        self.rows: list[MetricRow] = []

    def set_data(self, rows: list[MetricRow]) -> None:
        self.rows = rows
        self.replot()

    def toggle(self) -> None:
        self.mode = "fn" if self.mode == "f1" else "f1"
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_figure()
        rows = [r for r in self.rows if r.per_class_f1 or r.per_class_fn]
        last = rows[-1] if rows else None
        suffix = f", iteration {last.iteration}" if last else ""
        if self.mode == "fn":
            self.border_title = f"FN per class{suffix}"
            data: Mapping[str, float] = last.per_class_fn if last else {}
            items = sorted(data.items(), key=lambda kv: -kv[1])[: self.MAX_CLASSES]  # most missed first
            color = "red"
        else:
            self.border_title = f"F1 per class{suffix}"
            data = last.per_class_f1 if last else {}
            items = sorted(data.items(), key=lambda kv: kv[1])[: self.MAX_CLASSES]  # worst first
            color = "cyan"
            plt.xlim(0, 1)
        if items:
            plt.bar([k for k, _ in items][::-1], [v for _, v in items][::-1], orientation="horizontal",
                    color=color, width=0.6)
        self.refresh()


class LogPane(RichLog):
    """The step logs (core Message events)."""

    LEVEL_STYLE = {"warning": "yellow", "error": "bold red"}

    def add(self, text: str, level: str = "info") -> None:
        self.write(Text(text, style=self.LEVEL_STYLE.get(level, "")))
