"""pool.engine: ray on a real local Ray runtime (2 workers): the same scores, cache files and picks as the local
engine on a few-hundred-image pool, a scoring worker killed mid-scan, the step end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from al.core.config import PoolConfig, RayPoolConfig
from al.data import hashing
from al.selection import pool

pytest.importorskip("ray.data")  # the optional extra; ./run test installs it

from al.selection.ray_engine import RayEngine  # noqa: E402
from al.yolo import detector  # noqa: E402

# each test starts a Ray runtime (seconds to start, and a scan of real images): the slow set, run by CI
pytestmark = pytest.mark.slow

SETTINGS = pool.ScanSettings(imgsz=64, conf=0.0001, iou=0.7, batch=16, device="cpu", cand_conf=1e-6, top_k=5,
                             max_candidates=20)
SHARD = 32
NAMES = ["zero", "one", "two", "three", "four"]


@pytest.fixture(scope="module")
def big_pool(tmp_path_factory):
    """300 generated pool images and an untrained yolov8n."""
    from al.data.demo import generate_demo

    tmp = tmp_path_factory.mktemp("raypool")
    data = generate_demo(tmp / "data", seed=5, n_train=2, n_val=2, n_test=1, n_pool=300, size=96)
    detector.prepare_offline(tmp / "yolo_config")
    weights = detector.build_untrained("yolov8n.yaml", NAMES, tmp / "untrained.pt")
    images = sorted(str(p) for p in (data.parent / "pool" / "images").glob("*.jpg"))
    assert len(images) == 300
    return weights, images


@pytest.fixture(scope="module")
def local_scan(big_pool, tmp_path_factory):
    weights, images = big_pool
    cache = tmp_path_factory.mktemp("local_cache")
    scores = pool.scan(weights, images, SETTINGS, cache, engine=pool.LocalEngine(detector.load_model(weights), SHARD))
    return scores, cache


@pytest.fixture
def ray_tmp():
    """A short folder for Ray's temp files (its socket paths must stay under 108 characters; pytest's are long)."""
    d = Path(tempfile.mkdtemp(prefix="alr-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _ray_cfg(temp: Path, **ray) -> PoolConfig:
    return PoolConfig(engine="ray", shard_size=SHARD,
                      ray=RayPoolConfig(num_workers=2, cpus_per_worker=1, temp_dir=temp, **ray))


def _picks(scores: pool.PoolScores) -> dict[str, list[str]]:
    imgs = scores.images
    return {s: [p["image"] for p in pool.choose(s, imgs, 25, scores=scores, class_counts=[5, 1, 3, 0, 2],
                                                names=NAMES, top_k=SETTINGS.top_k, seed=7)]
            for s in ("entropy", "combined")}


def _same(a: pool.PoolScores, b: pool.PoolScores) -> None:
    assert a.images == b.images and a.hashes == b.hashes
    assert np.array_equal(a.width, b.width) and np.array_equal(a.height, b.height)
    assert np.array_equal(a.embedding, b.embedding) and np.array_equal(a.class_max, b.class_max)
    for m in ("entropy", "margin"):
        assert np.array_equal(a.uncertainty[m], b.uncertainty[m])
    for i in (0, 137, 299):
        assert np.array_equal(a.predictions(i), b.predictions(i))


def _cache_files(cache: Path) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in cache.glob("*/*.npz"))


def test_ray_scan_gives_the_local_engines_scores_cache_and_picks(big_pool, local_scan, tmp_path, ray_tmp):
    weights, images = big_pool
    local, local_cache = local_scan
    cache = tmp_path / "cache"
    said, progress = [], []
    with RayEngine(_ray_cfg(ray_tmp), say=said.append) as engine:
        got = pool.scan(weights, images, SETTINGS, cache, engine=engine, on_progress=lambda d, n: progress.append(d))
    assert got.cached == 0
    _same(local, got)
    assert _picks(got) == _picks(local)
    assert _cache_files(cache) == _cache_files(local_cache)  # the same per-(model, image) files, shard by shard
    assert progress[0] == 0 and progress[-1] == 300 and progress == sorted(progress) and len(progress) > 10
    assert said and "local Ray runtime" in said[0] and "2 workers" in said[0]
    assert (ray_tmp / "session_latest" / "logs").is_dir()  # Ray's files under pool.ray.temp_dir
    assert (ray_tmp / "al_ray_driver.log").is_file()

    # a re-run (--resume, or the other engine) finds every row in the cache: Ray is not even started
    with RayEngine(_ray_cfg(ray_tmp)) as engine:
        again = pool.scan(weights, images, SETTINGS, local_cache, engine=engine)
        assert engine._ray is None
    assert again.cached == 300
    _same(local, again)


def test_a_scoring_worker_killed_mid_scan_is_retried_and_the_scan_completes(big_pool, local_scan, tmp_path,
                                                                            ray_tmp):
    import psutil

    weights, images = big_pool
    local, _ = local_scan
    killed: list[int] = []

    def kill_one_worker(done: int, total: int) -> None:
        if killed or done == 0:
            return
        # a scoring actor of this test's own runtime (a descendant of this process), killed like the OOM killer would
        workers = [p for p in psutil.Process(os.getpid()).children(recursive=True)
                   if "MapBatches(_Scorer)" in " ".join(p.cmdline())]
        assert workers, "no scoring worker found to kill"
        os.kill(workers[0].pid, signal.SIGKILL)
        killed.append(workers[0].pid)

    with RayEngine(_ray_cfg(ray_tmp)) as engine:
        got = pool.scan(weights, images, SETTINGS, tmp_path / "cache", engine=engine, on_progress=kill_one_worker)
    assert killed and not psutil.pid_exists(killed[0])
    assert got.cached == 0
    _same(local, got)  # every shard scored once more or once, none lost or doubled
    assert len(list((tmp_path / "cache").glob("*/*.npz"))) == -(-300 // SHARD)


def test_ray_hashes_what_the_hash_cache_does_not_know(big_pool, tmp_path, ray_tmp):
    _, images = big_pool
    some = images[:40]
    with hashing.persisted(tmp_path / "hashes.json") as cache, \
            RayEngine(_ray_cfg(ray_tmp, hash_on="ray")) as engine:
        got = engine.hash_images(some)
        assert engine._ray is not None  # nothing was known: the hashing ran on Ray
        assert all(cache.lookup(p) == h for p, h in zip(some, got))
    assert got == [hashing.digest(p) for p in some]
    assert len(json.loads((tmp_path / "hashes.json").read_text())["entries"]) == 40


def test_extract_on_ray_picks_what_the_local_engine_picks(tiny_data, tmp_path, ray_tmp):
    from al.app.api import open_run, run_loop
    from al.core import store
    from al.core.config import load_config
    from al.core.context import Listeners
    from al.core.events import Message
    from al.core.paths import RunPaths
    from tests.conftest import make_config

    picks, said = {}, {}
    for engine in ("local", "ray"):
        root = tmp_path / engine
        root.mkdir()
        cfg = load_config(make_config(root, tiny_data, dataset__mining_source="pool",
                                      pool={"engine": engine, "shard_size": 8,
                                            "ray": {"num_workers": 2, "temp_dir": str(ray_tmp)}}))
        bus = Listeners()
        events: list = []
        bus.subscribe(events.append)
        assert run_loop(open_run(cfg, resume=False, start_iteration=None, dry_run=True, auto=False, ui=bus)) == 0
        hard = store.read_json(RunPaths(cfg.run_dir).hard_examples(0))
        assert hard["scan"]["images"] == 16 + 24 and hard["scan"]["cached"] == 0
        picks[engine] = [(p["image"], p["kind"], p["score"]) for p in hard["picks"]]
        said[engine] = [e.text for e in events if isinstance(e, Message) and "[POOL]" in e.text]
    assert picks["ray"] == picks["local"] and len(picks["ray"]) == 4
    assert not said["local"] and "local Ray runtime" in said["ray"][0]


def test_a_temp_dir_too_long_for_rays_sockets_is_refused_before_ray_starts(tmp_path):
    long = tmp_path / ("x" * 80)
    with RayEngine(_ray_cfg(long, hash_on="ray")) as engine, \
            pytest.raises(pool.PoolError, match="pool.ray.temp_dir .* too long"):
        engine.hash_images([__file__])
    assert not long.exists()


HEAD = """
import sys, ray
ray.init(num_cpus=3, include_dashboard=False, _temp_dir=sys.argv[1], object_store_memory=200 << 20)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


def test_joining_a_running_cluster_by_address(big_pool, local_scan, tmp_path, ray_tmp):
    """pool.ray.address: the scan joins a Ray runtime another process owns (a one-node cluster), the model's bytes
    go to the actors through the object store, and the cluster keeps running after the scan."""
    import subprocess
    import sys

    weights, images = big_pool
    local, _ = local_scan
    head = subprocess.Popen([sys.executable, "-c", HEAD, str(ray_tmp)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        address = head.stdout.readline().strip()
        assert ":" in address, address
        said: list[str] = []
        cfg = PoolConfig(engine="ray", shard_size=SHARD, ray=RayPoolConfig(address=address, num_workers=2))
        with RayEngine(cfg, say=said.append) as engine:
            got = pool.scan(weights, images[:96], SETTINGS, tmp_path / "cache", engine=engine)
        assert f"Ray cluster at {address}" in said[0]
        for k in ("embedding", "class_max"):
            assert np.array_equal(getattr(got, k), getattr(local, k)[:96])
        assert head.poll() is None  # disconnecting left the cluster up
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def test_a_worker_error_names_the_image(big_pool, tmp_path, ray_tmp):
    weights, images = big_pool
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    cfg = PoolConfig(engine="ray", shard_size=SHARD, ray=RayPoolConfig(num_workers=1, temp_dir=ray_tmp))
    with RayEngine(cfg) as engine, pytest.raises(pool.PoolError) as e:
        pool.scan(weights, [*images[:SHARD], str(bad)], SETTINGS, tmp_path / "cache", engine=engine)
    assert str(bad) in str(e.value) and "--resume" in str(e.value) and "UnidentifiedImageError" in str(e.value)


def test_a_stop_mid_scan_keeps_the_returned_shards_and_either_engine_resumes(big_pool, local_scan, tmp_path, ray_tmp):
    weights, images = big_pool
    local, _ = local_scan

    class Stop(Exception):
        pass

    def stop_after_first_shard(done: int, total: int) -> None:
        if done >= SHARD:
            raise Stop

    cache = tmp_path / "cache"
    with RayEngine(_ray_cfg(ray_tmp)) as engine, pytest.raises(Stop):
        pool.scan(weights, images, SETTINGS, cache, engine=engine, on_progress=stop_after_first_shard)
    kept = len(list(cache.glob("*/*.npz")))
    assert 1 <= kept < -(-300 // SHARD)
    resumed = pool.scan(weights, images, SETTINGS, cache, engine=pool.LocalEngine(detector.load_model(weights), SHARD))
    assert resumed.cached == SHARD * kept
    _same(local, resumed)
