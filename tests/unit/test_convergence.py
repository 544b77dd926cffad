"""Seed 004's four convergence rules: each at and just past its boundary, their priority, short histories."""

import pytest

from al.metrics.convergence import (
    MAX_ITERATIONS,
    OVERFITTING,
    PLATEAU,
    TARGET,
    Verdict,
    check,
    format_console,
)

KW = {"target_f1": 0.98, "plateau_threshold": 0.005, "plateau_window": 3, "overfit_gap": 0.05, "max_iterations": 10}


def hist(*f1s, train=None, start=0):
    """Rows for consecutive iterations; `train` is the last row's train_f1."""
    rows = [{"iteration": start + i, "f1": f, "train_f1": None} for i, f in enumerate(f1s)]
    rows[-1]["train_f1"] = train
    return rows


def test_continue_reason_matches_seed_wording():
    v = check(hist(0.9650), **KW)
    assert v == Verdict(False, None, "Continue training: F1=0.9650, target=0.9800")
    assert format_console(v, 0.965, 0.98) == "[CONVERGENCE] Continue training: F1=0.9650, target=0.9800"


def test_target_at_and_past_boundary():
    v = check(hist(0.5, 0.98), **KW)
    assert (v.converged, v.criterion, v.reason) == (True, TARGET, "Target F1 achieved: 0.9800 >= 0.9800")
    assert check(hist(0.9812), **KW).reason == "Target F1 achieved: 0.9812 >= 0.9800"
    assert not check(hist(0.9799), **KW).converged
    assert format_console(check(hist(0.9812), **KW), 0.9812, 0.98) == \
        "[CONVERGENCE] Stop training: Target F1 achieved: 0.9812 >= 0.9800"


def test_overfitting_at_and_past_boundary():
    at = check(hist(0.91, train=0.96), **KW)  # gap 0.05 (0.04999... in floats): not overfitting
    assert not at.converged
    past = check(hist(0.91, train=0.99), **KW)
    assert (past.converged, past.criterion) == (True, OVERFITTING)
    assert past.reason == "Overfitting: train F1 0.9900 \u2212 val F1 0.9100 = 0.0800 > 0.0500"
    assert check(hist(0.91, train=0.9601), **KW).criterion == OVERFITTING


def test_train_f1_missing_skips_overfitting():
    assert not check(hist(0.5, train=None), **KW).converged
    assert not check(hist(0.5, train=""), **KW).converged  # a CSV cell of an unmeasured value


def test_plateau_at_and_past_boundary():
    # Improvement = best of the last 3 minus the row before them.
    at = check(hist(0.900, 0.903, 0.905, 0.904), **KW)  # 0.905 - 0.900 = 0.005: not a plateau
    assert not at.converged
    past = check(hist(0.900, 0.903, 0.9049, 0.904), **KW)  # 0.0049 < 0.005
    assert (past.converged, past.criterion) == (True, PLATEAU)
    assert "0.0049 < 0.0050" in past.reason and "last 3 iterations" in past.reason
    assert check(hist(0.9, 0.89, 0.88, 0.87), **KW).criterion == PLATEAU  # getting worse is a plateau too
    # Only the last window and the row before it count.
    assert not check(hist(0.1, 0.9, 0.9, 0.9, 0.9, 0.95), **KW).converged


def test_plateau_needs_window_plus_one_rows():
    assert not check(hist(0.9, 0.9, 0.9), **KW).converged
    assert check(hist(0.9, 0.9, 0.9, 0.9), **KW).criterion == PLATEAU
    assert check(hist(0.9, 0.9), **{**KW, "plateau_window": 1}).criterion == PLATEAU
    assert not check(hist(0.9, 0.9), **{**KW, "plateau_window": 2}).converged


def test_max_iterations_at_and_before_boundary():
    rising = [0.1 * i for i in range(10)]  # no plateau, never on target
    v = check(hist(*rising), **KW)  # iterations 0..9: 10 evaluated
    assert v == Verdict(True, MAX_ITERATIONS, "Maximum iterations reached: 10")
    assert not check(hist(*rising[:9]), **KW).converged
    assert check(hist(0.5, start=9), **KW).criterion == MAX_ITERATIONS  # counted from the iteration index
    assert check(hist(0.5, start=15), **KW).criterion == MAX_ITERATIONS


def test_priority_target_then_overfitting_then_plateau_then_max():
    # Everything holds: target wins.
    assert check(hist(0.99, 0.99, 0.99, 0.99, train=1.0), **{**KW, "max_iterations": 1}).criterion == TARGET
    # Overfitting beats plateau and max iterations.
    assert check(hist(0.9, 0.9, 0.9, 0.9, train=1.0), **{**KW, "max_iterations": 1}).criterion == OVERFITTING
    # Plateau beats max iterations.
    assert check(hist(0.9, 0.9, 0.9, 0.9), **{**KW, "max_iterations": 1}).criterion == PLATEAU


def test_rows_from_csv_strings_and_unsorted():
    rows = [{"iteration": "1", "f1": "0.9812", "train_f1": ""}, {"iteration": "0", "f1": "0.5", "train_f1": ""}]
    assert check(rows, **KW).reason == "Target F1 achieved: 0.9812 >= 0.9800"
    rows = [{"iteration": "1", "f1": "0.5", "train_f1": ""}, {"iteration": "0", "f1": "0.9812", "train_f1": ""}]
    assert not check(rows, **KW).converged  # the latest iteration decides


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        check([], **KW)
