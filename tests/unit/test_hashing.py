"""The one content-hash service (al.data.hashing): SHA-1 of the content, re-read only when size or mtime change,
persisted under the run, tolerant of a corrupt cache file; the manifest merge reads each image once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from al.core import store
from al.core.paths import RunPaths
from al.data import dataset, hashing, manifest
from al.review import Labelled


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Paths whose bytes were read for a hash (a counting wrapper around the one reader), and a fresh
    in-process cache so that other tests' entries do not hide reads."""
    seen: list[str] = []
    real = hashing.digest

    def counting(path):
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(hashing, "digest", counting)
    monkeypatch.setattr(hashing, "_memory", hashing.HashCache())
    return seen


def sha1(path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_the_hash_is_sha1_of_the_content_and_an_unchanged_file_is_read_once(tmp_path, reads):
    f = tmp_path / "a.jpg"
    f.write_bytes(os.urandom(3 * hashing.CHUNK + 17))  # several chunks
    cache = hashing.HashCache()
    assert cache.hash(f) == sha1(f) == dataset.file_hash(f)
    assert cache.hash(str(f)) == sha1(f)
    assert reads == ["a.jpg", "a.jpg"]  # once for `cache`, once for the in-process cache behind file_hash


def test_a_new_size_or_mtime_is_read_again(tmp_path, reads):
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    cache = hashing.HashCache()
    first = cache.hash(f)
    f.write_bytes(b"three")  # new size
    assert cache.hash(f) == sha1(f) != first
    st = f.stat()
    f.write_bytes(b"THREE")  # same size; make sure the mtime differs even on a coarse clock
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.hash(f) == sha1(f)
    assert len(reads) == 3


def test_the_cache_is_persisted_and_reused_by_the_next_process(tmp_path, reads):
    f = tmp_path / "img.png"
    f.write_bytes(b"pixels")
    file = RunPaths(tmp_path / "run").hash_cache
    cache = hashing.HashCache(file)
    cache.hash(f)
    cache.save()
    data = store.read_json(file)
    assert data["algorithm"] == "sha1" and data["entries"][str(f)][2] == sha1(f)
    again = hashing.HashCache(file)  # as a new process would load it
    assert again.hash(f) == sha1(f) and reads == ["img.png"]


@pytest.mark.parametrize("content", ["{not json", '{"schema": 1, "algorithm": "md5", "entries": {}}',
                                     '{"schema": 1, "algorithm": "sha1", "entries": {"x": 3}}', "[]", "\udcff"])
def test_a_corrupt_cache_file_is_warned_about_and_rebuilt(tmp_path, reads, caplog, content):
    f = tmp_path / "img.png"
    f.write_bytes(b"pixels")
    file = tmp_path / "cache" / "hashes.json"
    file.parent.mkdir()
    file.write_text(content, errors="surrogateescape")
    with caplog.at_level(logging.WARNING, logger="al"):
        cache = hashing.HashCache(file)
    assert "hash cache" in caplog.text and "rebuilt" in caplog.text
    assert cache.hash(f) == sha1(f)
    cache.save()
    assert json.loads(file.read_text())["entries"][str(f)][2] == sha1(f)


def test_persisted_makes_file_hash_use_and_save_the_run_cache(tmp_path, reads):
    f = tmp_path / "img.png"
    f.write_bytes(b"pixels")
    file = tmp_path / "run" / "cache" / "hashes.json"
    with hashing.persisted(file) as cache:
        assert hashing.file_hash(f) == sha1(f) and len(cache) == 1
    assert store.read_json(file)["entries"][str(f)][2] == sha1(f)
    assert len(hashing._memory) == 0  # the block's hashes went to the run's cache
    with hashing.persisted(file):
        hashing.file_hash(f)
    assert reads == ["img.png"]


def _image(path, seed):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    dataset.label_path(path).parent.mkdir(parents=True, exist_ok=True)
    dataset.label_path(path).write_text("0 0.5 0.5 0.2 0.2\n")
    return str(path.resolve())


def test_a_merge_reads_each_image_once(tmp_path, reads):
    """Building the manifest hashes every image once; the merge then reads nothing: the candidates are known and
    their copies are remembered with the source's hash."""
    d = tmp_path / "ds"
    splits = {"train": [_image(d / "images/train/a.png", 1)],
              "val": [_image(d / "images/val/b.png", 2), _image(d / "images/val/c.png", 3)],
              "test": [_image(d / "images/test/t.png", 4)]}
    man = manifest.build_initial(splits, "data.yaml", with_phash=False)
    assert sorted(reads) == ["a.png", "b.png", "c.png", "t.png"]
    reads.clear()
    box = np.array([[0, 0.1, 0.1, 0.4, 0.4]])
    cands = [Labelled(p, box, "simulated", "simulated", pick=p) for p in splits["val"]]
    run = tmp_path / "run" / "added"
    res = manifest.merge(man, splits, cands, iteration=0, img_dir=run / "images", lbl_dir=run / "labels", nc=1,
                         iou=0.5, near_distance=None)
    assert reads == [] and len(res.added) == 2
    for p in res.added:  # the remembered hashes are the copies' real ones
        assert res.manifest.images[p]["hash"] == sha1(Path(p))
