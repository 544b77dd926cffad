"""The Textual app: runs the loop on a worker thread and shows its events (dashboard, review, errors, quit)."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widgets import Footer, Header, Static

from al.app.api import STEPS, preview_import, read_history, run_loop
from al.core.context import StepContext, Tee
from al.core.events import (
    Event,
    GateVerdict,
    IterationStarted,
    MetricsRow,
    Progress,
    ReviewRequired,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
    StepStarted,
)
from al.frontends.lines import DEBUG, render
from al.frontends.tui.messages import CoreEvent, ProgressTick, ReviewWanted, RunnerDone
from al.frontends.tui.modals import ConfirmScreen, ErrorScreen
from al.frontends.tui.model import (
    FAILED,
    INTERRUPTED,
    PAUSED,
    MetricRow,
    fmt_secs,
    gate_text,
    history_on_open,
)
from al.frontends.tui.review import ReviewScreen
from al.frontends.tui.widgets import (
    ClassPlot,
    F1Plot,
    LogPane,
    MetricsTable,
    StepProgress,
    StepTimeline,
)

Runner = Callable[[StepContext], int]
EXIT_INTERRUPTED = 130
PROGRESS_INTERVAL = 0.05
"""Seconds between progress-bar redraws at most: a faster stream only replaces what the next redraw shows."""


def _default_runner(ctx: StepContext) -> int:
    return run_loop(ctx)


class LoopApp(App[int]):
    """Dashboard of one run, and the run's frontend (emit, stop_requested, wait_for_review). `runner(ctx)`
    (al.app.api.run_loop by default) runs on a worker thread; its events reach the UI as messages. The app's
    result is the runner's exit code. `sinks` also receive every event (the run's log file); `early` are events
    emitted before the app existed (opening the run), shown first."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere (benchmarks) find it too
    TITLE = "Active learning loop"
    BINDINGS = [
        Binding("q", "request_quit('q')", "Quit"),
        Binding("ctrl+c", "request_quit('ctrl+c')", "Quit", show=False, priority=True),
        Binding("p", "toggle_class_plot", "Per-class F1/FN"),
        Binding("e", "show_error", "Last error"),
    ]

    def __init__(self, ctx: StepContext, start: RunStarted, runner: Runner | None = None,
                 clock: Callable[[], float] = time.monotonic, sinks: list[Callable[[Event], None]] | None = None,
                 early: list[Event] | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.start_event = start
        self.runner = runner or _default_runner
        self.clock = clock
        self.target_f1 = float(ctx.env.cfg.active_learning.target_f1)
        self.rows: dict[int, MetricRow] = {}
        self.code: int | None = None
        self.running = False
        self.stopping = False
        self.exit_requested = False
        self.last_error: tuple[str, str, str] | None = None
        self.events_seen = 0
        self.gate_seen = False
        self._thread: threading.Thread | None = None
        self._open_box: list | None = None
        self._deferred_review: ReviewWanted | None = None
        self._held_box: list | None = None
        self._progress_timer: Timer | None = None
        self._last_progress_apply = 0.0
        self._plock = threading.Lock()
        self._stop = threading.Event()
        self._early = list(early or [])
        self._sinks = list(sinks or [])
        ctx.ui = Tee(self, *self._sinks)

    # ---- the Frontend protocol (called on the runner thread) ------------------------------------------------
    def emit(self, ev: Event) -> None:
        self._forward(ev)

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stop_runner(self) -> None:
        """Ask the runner to stop at its next safe point (no UI change; begin_stop is the user's quit)."""
        self._stop.set()

    def wait_for_review(self, info: dict) -> bool:
        return self._wait_for_review(info)

    # ---- layout -------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◎")
        yield Static("", id="status")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield StepTimeline(id="timeline")
                with Vertical(id="progress-box"):
                    yield StepProgress(id="progress")
                yield Static("No verdict yet (the converge step writes one per iteration).", id="verdict")
            with Vertical(id="right"):
                yield MetricsTable(id="metrics")
                yield Static("No gate verdict yet (validate compares each new model with the champion).",
                             id="gate")
                with Horizontal(id="plots"):
                    yield F1Plot(id="f1-plot")
                    yield ClassPlot(id="class-plot")
        yield LogPane(id="log", wrap=True, max_lines=5000, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#progress-box").border_title = "Progress"
        self.query_one("#verdict").border_title = "Convergence"
        self.query_one("#gate").border_title = "Promotion gate: champion vs challenger"
        self.query_one("#metrics").border_title = "Metrics per iteration"
        self.query_one("#log").border_title = "Log"
        ev, st = self.start_event, self.ctx.state
        self.title = ev.title
        flags = [f for f, on in (("dry-run", ev.dry_run), ("auto", ev.auto)) if on]
        self.sub_title = ev.run_dir + (f"  [{', '.join(flags)}]" if flags else "")
        tl = self.query_one(StepTimeline)
        tl.timeline.resume_at(ev.iteration, ev.step, st.baseline, st.timings.get(str(ev.iteration), {}))
        tl.show(self.clock())
        self.query_one(F1Plot).set_data([], self.target_f1)
        self.query_one(ClassPlot).set_data([])
        for early in self._early:
            self._show_lines(early)
        for sink in self._sinks:  # the banner the console prints goes to al_loop.log too
            sink(ev)
        self._show_lines(ev)
        self._status("STARTING", "Loading the run history…")
        self.set_interval(1.0, self._tick)
        self._load_history()

    # ---- the runner thread ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="history")
    def _load_history(self) -> None:
        """Metrics of earlier iterations from disk (resume), then start the loop."""
        ev = self.start_event
        raw, problem = read_history(self.ctx)
        if problem:
            self.ctx.say(problem, "warning")
        rows = history_on_open(raw, ev.iteration, ev.step, self.ctx.state.baseline)
        self.call_from_thread(self._history_loaded, rows)

    def _history_loaded(self, rows: list[MetricRow]) -> None:
        for r in rows:
            self.rows.setdefault(r.iteration, r)
        self._refresh_metrics()
        if rows and rows[-1].reason:
            self._verdict(rows[-1])
        if rows and rows[-1].champion is not None and not self.gate_seen:
            r = rows[-1]
            self.query_one("#gate", Static).update(
                f"Champion: iteration {r.champion} on {r.decision_set} ({r.decision_images} images)\n"
                f"(iteration {r.iteration}'s challenger was {'promoted' if r.promoted else 'rejected'})")
        self._start_runner()

    def _start_runner(self) -> None:
        self.running = True
        self._status("RUNNING", "")
        self._thread = threading.Thread(target=self._run_runner, name="al-runner", daemon=True)
        self._thread.start()

    def _run_runner(self) -> None:
        try:
            code, err = int(self.runner(self.ctx)), None
        except BaseException:  # a bug in the core: show it, never leave the UI hanging
            code, err = 1, traceback.format_exc()
            # with its traceback into al_loop.log too (the CLI's LogFile listens to this logger), as the dialog says
            logging.getLogger("al").exception("The loop stopped on an unexpected error")
        self.post_message(RunnerDone(code, err))

    def _forward(self, ev: Event) -> None:
        """Bus subscriber, called on the runner thread: hand the event to the UI thread as a message."""
        with self._plock:
            if isinstance(ev, Progress):
                if self._open_box is not None:  # the UI has not shown the previous one yet: replace it
                    self._open_box[0] = ev
                    return
                self._open_box = [ev]
                self.post_message(ProgressTick(self._open_box))
            else:
                self._open_box = None  # later Progress must queue behind this event
                self.post_message(CoreEvent(ev))

    def _wait_for_review(self, info: dict) -> bool:
        """ctx.wait_for_review, called on the runner thread: block until the review screen answers."""
        answer: queue.Queue[bool] = queue.Queue(maxsize=1)
        if not self.post_message(ReviewWanted(info, answer)):
            return False
        while not self._stop.is_set():
            try:
                return answer.get(timeout=0.1)
            except queue.Empty:
                continue
        return False

    # ---- core events, on the UI thread ----------------------------------------------------------------------
    def on_progress_tick(self, msg: ProgressTick) -> None:
        if self._held_box is not None and self._held_box is not msg.box:
            self._flush_progress()
        wait = self._last_progress_apply + PROGRESS_INTERVAL - time.monotonic()
        if wait > 0:  # redrawn recently: hold the box open (newer Progress replace its content) until then
            self._held_box = msg.box
            if self._progress_timer is None:
                self._progress_timer = self.set_timer(wait, self._flush_progress)
            return
        self._apply_progress(msg.box)

    def _flush_progress(self) -> None:
        if self._progress_timer is not None:
            self._progress_timer.stop()
            self._progress_timer = None
        box, self._held_box = self._held_box, None
        if box is not None:
            self._apply_progress(box)

    def _apply_progress(self, box: list) -> None:
        with self._plock:
            ev = box[0]
            if self._open_box is box:
                self._open_box = None
        self._last_progress_apply = time.monotonic()
        self.events_seen += 1
        self.query_one(StepProgress).progress(ev, self.clock())

    def on_core_event(self, msg: CoreEvent) -> None:
        if self._held_box is not None:
            self._flush_progress()  # a held Progress is older than this event: show it first
        self.events_seen += 1
        ev = msg.event
        handler = getattr(self, f"_on_{type(ev).__name__}", None)
        if handler is not None:
            handler(ev)
        self._show_lines(ev)

    def _show_lines(self, ev: Event) -> None:
        """The event's lines in the log pane: the same ones the console prints and al_loop.log holds."""
        for text, level in render(ev):
            if level != DEBUG:
                self._log_line(text, level)

    def _on_IterationStarted(self, ev: IterationStarted) -> None:
        tl = self.query_one(StepTimeline)
        tl.timeline.reset(ev.iteration)
        tl.show(self.clock())

    def _on_StepStarted(self, ev: StepStarted) -> None:
        now = self.clock()
        tl = self.query_one(StepTimeline)
        if not ev.baseline and tl.timeline.iteration != ev.iteration:
            tl.timeline.reset(ev.iteration)
        tl.timeline.started(ev.step, ev.title, now, ev.baseline)
        tl.show(now)
        self.query_one(StepProgress).start(ev.step, ev.title)
        if not self.stopping:
            self._status("RUNNING", "baseline training" if ev.baseline else
                         f"iteration {ev.iteration} · step {STEPS.index(ev.step) + 1}/{len(STEPS)} {ev.step}")

    def _on_StepFinished(self, ev: StepFinished) -> None:
        tl = self.query_one(StepTimeline)
        tl.timeline.finished(ev.step, ev.seconds)
        tl.show(self.clock())
        self.query_one(StepProgress).idle(f"{ev.step} finished in {fmt_secs(ev.seconds)}")

    def _on_GateVerdict(self, ev: GateVerdict) -> None:
        text = Text(gate_text(ev))
        for word, style in (("PROMOTED", "bold green"), ("REJECTED", "bold yellow"), ("ALARM", "bold red")):
            text.highlight_words([word], style)
        self.query_one("#gate", Static).update(text)
        self.gate_seen = True

    def _on_MetricsRow(self, ev: MetricsRow) -> None:
        row = MetricRow.parse(ev.row)
        self.rows[row.iteration] = row
        self._refresh_metrics()
        self._verdict(row)

    def _on_ReviewRequired(self, ev: ReviewRequired) -> None:
        self._status("REVIEW", f"iteration {ev.info.get('iteration')}: "
                               f"{ev.info.get('hard_examples')} hard examples wait for a human")

    def _on_RunPaused(self, ev: RunPaused) -> None:
        review = ev.reason == "awaiting review"
        tl = self.query_one(StepTimeline)
        tl.timeline.ended(ev.step, PAUSED if review else INTERRUPTED)
        tl.show(self.clock())
        if review:
            text = f"Iteration {ev.iteration} is awaiting review; the state is saved. Continue with:"
            self._status("AWAITING REVIEW", f"resume: {ev.resume_command}")
        else:
            text = f"Stopped at iteration {ev.iteration} (step '{ev.step}'). Resume with:"
            self._status("INTERRUPTED", f"resume: {ev.resume_command}")
        self.query_one(StepProgress).idle(f"{text}\n{ev.resume_command}")

    def _on_RunFailed(self, ev: RunFailed) -> None:
        tl = self.query_one(StepTimeline)
        tl.timeline.ended(ev.step, FAILED)
        tl.show(self.clock())
        if ev.resume_command:
            self._status("FAILED", f"step '{ev.step}' of iteration {ev.iteration} · resume: {ev.resume_command}")
            self.query_one(StepProgress).idle(f"Step '{ev.step}' failed; fix the cause, then resume with:\n"
                                              f"{ev.resume_command}")
        else:  # --resume would stop at the same error: only the command the message names goes on
            self._status("FAILED", f"step '{ev.step}' of iteration {ev.iteration} · see the error for the command")
            self.query_one(StepProgress).idle(f"Step '{ev.step}' failed; go on with the command the error names:\n"
                                              f"{ev.message}")
        self.last_error = (f"Step '{ev.step}' failed (iteration {ev.iteration})", ev.message,
                           ev.resume_command or "")
        self.action_show_error()

    def _on_RunFinished(self, ev: RunFinished) -> None:
        f1 = "n/a" if ev.final_f1 is None else f"{ev.final_f1:.4f}"
        self._status("COMPLETE", f"{ev.reason} · final F1 {f1} · {ev.iterations} iterations")
        self.query_one(StepProgress).idle(f"Active learning complete: {ev.reason}")
        self.query_one("#verdict", Static).update(Text(f"CONVERGED: {ev.reason}", style="bold green"))

    def on_review_wanted(self, msg: ReviewWanted) -> None:
        if self.stopping:
            msg.answer.put(False)
            return
        if isinstance(self.screen, ConfirmScreen) and self.screen.tag == "quit":
            self._deferred_review = msg  # the quit question comes first; 'no' brings the review up
            return
        screen = ReviewScreen(msg.info, lambda: preview_import(self.ctx))

        def answered(ok: bool | None) -> None:
            ok = bool(ok)
            if ok:
                pv = screen.preview
                self.ctx.say("[REVIEW] Continuing" + (f": {pv.headline()}" if pv else ""))
                self._status("RUNNING", "importing the reviewed dataset")
            else:
                self.exit_requested = True
                self._status("AWAITING REVIEW", "quitting; the run stays awaiting review")
            msg.answer.put(ok)

        self.push_screen(screen, callback=answered)

    def on_runner_done(self, msg: RunnerDone) -> None:
        self.running = False
        self.code = msg.code
        if isinstance(self.screen, ReviewScreen):
            self.screen.answer(False)
        if msg.error:
            self._log_line(msg.error, "error")
            self.last_error = ("The loop stopped on an unexpected error", msg.error.strip().splitlines()[-1] +
                               f"\n\nFull traceback in the log pane and {self.ctx.env.paths.events_log}.", "")
            if not self.exit_requested:
                self.action_show_error()
        if self.exit_requested:
            self.exit(self.code)
        elif msg.code == EXIT_INTERRUPTED:
            self.exit(self.code)  # stopped from outside (SIGTERM): nobody to read a final screen
        else:
            self.query_one(StepTimeline).show(self.clock())
            self.notify("The loop has stopped; press q to leave.", timeout=5)

    # ---- actions -------------------------------------------------------------------------------------------
    def action_request_quit(self, key: str = "q") -> None:
        """q / Ctrl+C: leave when idle; while running, ask, then stop at the next safe point (resumable)."""
        screen = self.screen
        if isinstance(screen, ReviewScreen):
            screen.action_quit_review()
            return
        if isinstance(screen, ConfirmScreen) and screen.tag == "quit":
            if key == "ctrl+c":
                screen.dismiss(True)
            return
        if not self.running:
            self.exit(self.code if self.code is not None else 0)
            return
        if self.stopping:
            if key == "ctrl+c":  # a second Ctrl+C while stopping: leave now; --resume re-runs the current step
                self.exit(EXIT_INTERRUPTED)
            else:
                self.notify("Stopping at the next safe point… (Ctrl+C to leave now; --resume re-runs the step)")
            return

        def confirmed(yes: bool | None) -> None:
            pending, self._deferred_review = self._deferred_review, None
            if yes:
                self.begin_stop()
                if pending is not None:
                    pending.answer.put(False)
            elif pending is not None:
                self.on_review_wanted(pending)

        self.push_screen(ConfirmScreen("Stop the run?", "The loop stops at the next safe point and saves its "
                                       "state; `--resume` continues from there.", yes="Stop", no="Keep running",
                                       tag="quit"), callback=confirmed)

    def begin_stop(self) -> None:
        """Ask the runner to stop (ctx.stop); the app exits with its exit code when it returns."""
        self.exit_requested = True
        self.stopping = True
        self._stop.set()
        self._status("STOPPING", "waiting for the current step to reach a safe point…")
        self.ctx.say("[TUI] Stop requested; waiting for the current step to stop", "warning")
        if not self.running:
            self.exit(self.code if self.code is not None else EXIT_INTERRUPTED)

    def action_toggle_class_plot(self) -> None:
        self.query_one(ClassPlot).toggle()

    def action_show_error(self) -> None:
        if self.last_error is None:
            self.notify("No error so far.", timeout=3)
            return
        if not isinstance(self.screen, ErrorScreen):
            self.push_screen(ErrorScreen(*self.last_error))

    # ---- helpers -------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        try:
            tl = self.query_one(StepTimeline)
        except NoMatches:  # the timer fired while the app is closing (its widgets are gone): nothing to draw
            return
        if tl.timeline.running() is not None:
            tl.show(self.clock())

    def _log_line(self, text: str, level: str = "info") -> None:
        self.query_one(LogPane).add(text, level)

    def _status(self, state: str, detail: str) -> None:
        style = {"RUNNING": "bold black on green", "REVIEW": "bold white on magenta", "AWAITING REVIEW":
                 "bold white on magenta", "FAILED": "bold white on red", "STOPPING": "bold black on yellow",
                 "INTERRUPTED": "bold black on yellow", "COMPLETE": "bold black on cyan"}.get(state, "reverse")
        self.query_one("#status", Static).update(Text.assemble((f" {state} ", style), "  ", detail))

    def _refresh_metrics(self) -> None:
        rows = [self.rows[k] for k in sorted(self.rows)]
        self.query_one(MetricsTable).set_rows(rows)
        self.query_one(F1Plot).set_data(rows, self.target_f1)
        self.query_one(ClassPlot).set_data(rows)

    def _verdict(self, row: MetricRow) -> None:
        if row.converged:
            text = Text(f"Iteration {row.iteration}: STOP — {row.reason}", style="bold green")
        else:
            text = Text(f"Iteration {row.iteration}: {row.reason or 'continue'}")
        self.query_one("#verdict", Static).update(text)

    def on_unmount(self) -> None:
        # leaving for any reason: the runner must not go on without a UI to answer it
        self._stop.set()


def run_tui(ctx: StepContext, start_event: RunStarted, runner: Runner | None = None,
            sinks: list[Callable[[Event], None]] | None = None, early: list[Event] | None = None) -> int:
    """Run the loop under the dashboard; returns the runner's exit code (130 when stopped, 0 when paused)."""
    app = LoopApp(ctx, start_event, runner, sinks=sinks, early=early)
    prev = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):  # SIGTERM: stop at the next safe point, leaving a resumable state
            app.exit_requested = True
            app._stop.set()

        prev = signal.signal(signal.SIGTERM, on_term)
    try:
        result = app.run()
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)
    thread = app._thread
    if thread is not None and thread.is_alive():
        app._stop.set()
        if app.code is None and not app.stopping:  # the UI itself failed: let the runner save its state
            print("Stopping the loop at the next safe point (the state stays resumable)…", flush=True)
            thread.join(timeout=120)
    if isinstance(result, int):
        return result
    return app.code if app.code is not None else 1
