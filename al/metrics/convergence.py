"""Seed 004's convergence criteria, checked in order on the history of evaluated iterations (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TARGET = "target"
OVERFITTING = "overfitting"
PLATEAU = "plateau"
MAX_ITERATIONS = "max_iterations"
CRITERIA = (TARGET, OVERFITTING, PLATEAU, MAX_ITERATIONS)

# Boundaries are compared with this slack so that float noise (0.905 - 0.9 = 0.0050000000000000044) cannot flip
# a verdict: a value equal to its threshold up to EPS counts as exactly at the threshold.
EPS = 1e-9


@dataclass(frozen=True)
class Verdict:
    """Whether the loop stops, which criterion stopped it (None when it goes on), and a one-line reason."""

    converged: bool
    criterion: str | None
    reason: str


def check(
    history: Sequence[Mapping],
    *,
    target_f1: float,
    plateau_threshold: float,
    plateau_window: int = 3,
    overfit_gap: float = 0.05,
    max_iterations: int,
    f1_label: str = "val F1",
) -> Verdict:
    """Apply the four rules to `history` (rows with "iteration", "f1", "train_f1"; the last iteration is the
    current one); the first rule that holds wins. The loop passes the frozen decision set's F1 as "f1" (named
    `f1_label` in the reasons): a set that changes between iterations would make the rows incomparable.

    1. target:         f1 >= target_f1.
    2. overfitting:    train_f1 - f1 > overfit_gap (skipped when train_f1 is None or "").
    3. plateau:        with W = plateau_window and at least W + 1 rows,
                       max(f1 of the last W rows) - f1 of the row just before them < plateau_threshold.
                       Improvement is in absolute F1 points: seed 004's "0.5%" is plateau_threshold 0.005.
    4. max_iterations: iterations evaluated (last iteration index + 1) >= max_iterations.

    Equality is judged with EPS slack, so "exactly at the threshold" means: target met, no overfitting, no plateau.
    Values may be numbers or numeric strings (rows read back from the convergence CSV).
    """
    if not history:
        raise ValueError("convergence check needs at least the current iteration's row; the history is empty")
    if plateau_window < 1:
        raise ValueError(f"plateau_window is {plateau_window}; it must be >= 1")
    rows = sorted(history, key=lambda r: int(r["iteration"]))
    last = rows[-1]
    f1 = _num(last["f1"])
    if f1 is None:
        raise ValueError(f"iteration {last['iteration']} has no F1 ({last['f1']!r}); re-run its validate step")

    if f1 >= target_f1 - EPS:
        return Verdict(True, TARGET, f"Target F1 achieved: {f1:.4f} >= {target_f1:.4f}")

    train_f1 = _num(last.get("train_f1"))
    if train_f1 is not None:
        gap = train_f1 - f1
        if gap > overfit_gap + EPS:
            return Verdict(True, OVERFITTING, f"Overfitting: train F1 {train_f1:.4f} \u2212 {f1_label} {f1:.4f} = "
                                              f"{gap:.4f} > {overfit_gap:.4f}")

    if len(rows) >= plateau_window + 1:
        before = rows[-(plateau_window + 1)]
        before_f1 = _num(before["f1"])
        window_f1 = [v for v in (_num(r["f1"]) for r in rows[-plateau_window:]) if v is not None]
        if before_f1 is not None and window_f1:
            gain = max(window_f1) - before_f1
            if gain < plateau_threshold - EPS:
                return Verdict(True, PLATEAU, f"Plateau: F1 improved {gain:+.4f} < {plateau_threshold:.4f} over the "
                                              f"last {plateau_window} iterations (best {max(window_f1):.4f} vs "
                                              f"{before_f1:.4f} at iteration {int(before['iteration'])})")

    if int(last["iteration"]) + 1 >= max_iterations:
        return Verdict(True, MAX_ITERATIONS, f"Maximum iterations reached: {max_iterations}")

    return Verdict(False, None, f"Continue training: F1={f1:.4f}, target={target_f1:.4f}")


def format_console(verdict: Verdict, f1: float, target: float) -> str:
    """Seed 004's console line: "[CONVERGENCE] Continue training: F1=0.9650, target=0.9800", or
    "[CONVERGENCE] Stop training: <reason>" once a criterion holds."""
    if not verdict.converged:
        return f"[CONVERGENCE] Continue training: F1={f1:.4f}, target={target:.4f}"
    return f"[CONVERGENCE] Stop training: {verdict.reason}"


def _num(value) -> float | None:
    """A float, or None for None / "" / NaN (CSV cells of a value that was not measured)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    x = float(value)
    return None if math.isnan(x) else x
