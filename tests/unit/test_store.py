import json
import os

import pytest

from al.core import store


def test_write_read_roundtrip_with_schema(tmp_path):
    p = tmp_path / "a" / "state.json"
    store.write_json(p, {"x": 1})
    assert store.read_json(p) == {"schema": 1, "x": 1}
    assert [f.name for f in p.parent.iterdir()] == ["state.json"]  # no temp file left behind


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    store.write_json(p, {"v": "old"})

    def boom(*a, **k):
        raise KeyboardInterrupt  # the process is stopped between writing the temp file and replacing

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        store.write_json(p, {"v": "new" * 1000})
    monkeypatch.undo()
    assert store.read_json(p)["v"] == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["state.json"]


def test_interrupted_mid_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    store.write_json(p, {"v": "old"})
    real_fsync = os.fsync

    def half(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", half)
    with pytest.raises(OSError):
        store.write_json(p, {"v": "new"})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(p.read_text())["v"] == "old"


def test_corrupt_and_wrong_schema_name_the_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"schema": 1, "x": ')
    with pytest.raises(store.StoreError, match=r"s\.json: corrupt JSON at line 1.*--resume"):
        store.read_json(p)
    p.write_text('{"schema": 7}')
    with pytest.raises(store.StoreError, match="schema 7, expected 1"):
        store.read_json(p)
    p.write_text('{"schema": 1}')
    with pytest.raises(store.StoreError, match=r"missing keys \['iteration'\]"):
        store.read_json(p, required=("iteration",))
    with pytest.raises(store.StoreError, match="file not found"):
        store.read_json(tmp_path / "nope.json")


def test_csv_rewrite_has_no_duplicates(tmp_path):
    p = tmp_path / "m.csv"
    rows = [{"iteration": 0, "f1": 0.5}, {"iteration": 1, "f1": None}]
    store.write_csv(p, rows, ["iteration", "f1"])
    store.write_csv(p, rows, ["iteration", "f1"])
    assert p.read_text() == "iteration,f1\n0,0.5\n1,\n"
    assert store.read_csv(p) == [{"iteration": "0", "f1": "0.5"}, {"iteration": "1", "f1": ""}]


def test_numpy_scalars_and_arrays_are_written_as_json_numbers_and_lists(tmp_path):
    import numpy as np

    p = tmp_path / "n.json"
    store.write_json(p, {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "v": np.array([1, 2, 3]),
                         "m": np.array([[1.5, 2.0]], dtype=np.float32), "one": np.array([7]), "empty": np.zeros(0)})
    assert store.read_json(p) == {"schema": 1, "f": 0.5, "i": 3, "b": True, "v": [1, 2, 3], "m": [[1.5, 2.0]],
                                  "one": [7], "empty": []}


def test_nan_is_refused_naming_the_file_and_the_key(tmp_path):
    import numpy as np

    p = tmp_path / "n.json"
    store.write_json(p, {"v": "old"})
    with pytest.raises(ValueError, match=r"n\.json: not written: key 'a\.b\[1\]' \(nan\) is not a finite number"):
        store.write_json(p, {"a": {"b": [1.0, float("nan")]}})
    with pytest.raises(ValueError, match=r"key 'x\[0\]\[1\]' \(inf\)"):
        store.write_json(p, {"x": np.array([[0.0, np.inf]])})
    assert store.read_json(p) == {"schema": 1, "v": "old"}  # nothing half-written
