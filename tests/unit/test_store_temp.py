"""What a kill -9 in the middle of an atomic write leaves (a temp file beside its target) and its removal."""

from __future__ import annotations

import os
import tempfile

from al.core import store


def test_the_temp_names_of_every_writer_are_recognised(tmp_path):
    # write_bytes_atomic's and plots' mkstemp names, and the .NAME.tmp files and folders renamed into place
    fd, name = tempfile.mkstemp(prefix=".validation.json.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    for n in (os.path.basename(name), ".last.good.pt.k2j4_9xa.tmp", ".f1_trend.png.abcdefgh.tmp", ".val_001.jpg.tmp",
              ".review_package.tmp"):
        assert store.is_temp_name(n), n
    for n in (".train_spec_run.json", ".al_reserve", ".al_loop.lock", "validation.json", "x.tmp", ".yolo_config"):
        assert not store.is_temp_name(n), n


def test_remove_temp_deletes_only_what_interrupted_writes_left(tmp_path):
    keep = [tmp_path / "run_state.json", tmp_path / ".al_reserve", tmp_path / "iterations" / "i0" /
            ".train_spec_run.json", tmp_path / "dataset" / "v000" / "yolo" / "train" / ".x.jpg.tmp"]  # not entered
    gone = [tmp_path / ".run_state.json.a1b2c3d4.tmp", tmp_path / "iterations" / "i0" / "weights" /
            ".last.good.pt.zz9_k1ab.tmp", tmp_path / "metrics" / ".convergence_tracking.csv.q1w2e3r4.tmp"]
    for f in keep + gone:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * 10)
    package_tmp = tmp_path / "iterations" / "i0" / ".review_package.tmp"
    (package_tmp / "images").mkdir(parents=True)
    (package_tmp / "images" / "a.jpg").write_bytes(b"x")
    removed = store.remove_temp(tmp_path, skip=("yolo",))
    assert sorted(removed) == sorted([*gone, package_tmp])
    assert all(f.exists() for f in keep) and not any(f.exists() for f in gone) and not package_tmp.exists()
    assert store.remove_temp(tmp_path, skip=("yolo",)) == []
