"""Trend plots: the five PNGs exist and decode, from one row or many, with gaps and CSV strings."""

import json
import struct

import matplotlib.image as mpimg
import pytest

from al.report.plots import PLOT_FILES, _lines, plot_trends

NAMES = ["zero", "one", "two"]


def row(it, f1, test_f1=None, as_csv=False):
    r = {"iteration": it, "precision": f1 + 0.01, "recall": f1 - 0.01, "f1": f1, "map50": f1, "map50_95": f1 / 2,
         "tp": 100 + it, "fp": 10 - it, "fn": 12 - it, "train_f1": f1 + 0.02, "test_map50": None,
         "test_map50_95": None, "test_f1": test_f1,
         "per_class_f1": {"zero": f1, "one": f1 - 0.1, "two": f1 - 0.2},
         "per_class_fn": {"zero": 3, "one": 4 - it % 2, "two": 5}, "converged": False, "reason": ""}
    if as_csv:  # what store.read_csv hands back: every cell a string, None as ""
        r = {k: "" if v is None else (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in r.items()}
    return r


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def check_files(paths, out_dir):
    assert [p.name for p in paths] == list(PLOT_FILES)
    for p in paths:
        assert p.parent == out_dir and p.is_file()
        w, h = png_size(p)
        assert 400 <= w <= 3000 and 300 <= h <= 2000
        assert mpimg.imread(p).shape[:2] == (h, w)  # decodes fully
    assert sorted(x.name for x in out_dir.iterdir()) == sorted(PLOT_FILES)  # no temp files left behind


def test_many_rows_write_all_five_pngs(tmp_path):
    rows = [row(i, 0.8 + 0.03 * i, test_f1=0.79 + 0.03 * i) for i in range(6)]
    out = tmp_path / "plots"
    check_files(plot_trends(rows, out, target_f1=0.98, names=NAMES), out)


def test_single_row(tmp_path):
    check_files(plot_trends([row(0, 0.7)], tmp_path, target_f1=0.98, names=NAMES), tmp_path)


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_test_f1_and_csv_strings(tmp_path, missing):
    rows = [row(0, 0.7, as_csv=True), row(1, 0.75, test_f1=0.74, as_csv=True), row(2, 0.8, as_csv=True)]
    rows[0]["test_f1"] = missing
    rows[2]["test_f1"] = missing
    rows[1]["train_f1"] = missing
    check_files(plot_trends(rows, tmp_path, target_f1=None, names=NAMES), tmp_path)


def test_per_class_gaps_unknown_classes_and_bad_cells(tmp_path, caplog):
    rows = [row(0, 0.7), row(1, 0.8), row(2, 0.85)]
    rows[0]["per_class_f1"] = ""
    rows[1]["per_class_f1"] = "{not json"
    rows[2]["per_class_fn"] = json.dumps({"zero": 1, "extra": 2})
    check_files(plot_trends(rows, tmp_path, target_f1=0.9, names=NAMES), tmp_path)
    assert "per_class_f1" in caplog.text


def test_no_rows_still_writes_placeholders(tmp_path):
    check_files(plot_trends([], tmp_path, target_f1=0.98, names=NAMES), tmp_path)


def test_many_classes(tmp_path):
    names = [f"c{i}" for i in range(30)]
    rows = [{"iteration": i, "f1": 0.5, "per_class_f1": {n: 0.5 + i * 0.01 for n in names},
             "per_class_fn": {n: i for n in names}} for i in range(3)]
    check_files(plot_trends(rows, tmp_path, target_f1=None, names=names), tmp_path)


def test_rerun_replaces_files(tmp_path):
    plot_trends([row(0, 0.7)], tmp_path, target_f1=0.98, names=NAMES)
    before = (tmp_path / "f1_trend.png").read_bytes()
    plot_trends([row(0, 0.7), row(1, 0.9)], tmp_path, target_f1=0.98, names=NAMES)
    assert (tmp_path / "f1_trend.png").read_bytes() != before
    check_files([tmp_path / n for n in PLOT_FILES], tmp_path)


@pytest.mark.parametrize("its", [[0], [3], [0, 1, 2], list(range(60))])
def test_iteration_ticks_are_integers(its):
    fig = _lines(its, [("F1", [0.5] * len(its))], title="t", ylabel="F1", target=0.9)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "F1" and ax.get_title() == "t"
