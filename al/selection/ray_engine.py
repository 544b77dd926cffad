"""The pool scan on Ray (pool.engine: ray): a Ray Data pipeline over shards of the pool, scored by a pool of actors
that each load the model once. The only module that imports ray.

What runs where:
- content hashes of the images the run's hash cache does not know yet: Ray Data tasks, 512 paths a task (on a
  cluster; a local runtime hashes in the driver, pool.ray.hash_on);
- the scoring: `map_batches` over one row per shard (pool.shard_size images) with an actor pool of
  pool.ray.num_workers `_Scorer`s; a shard's result is the bytes of its cache file (al.selection.pool.chunk_bytes),
  built by the same code as the local engine's, so both engines write the same cache and pick the same images;
- the driver (this process) keeps the cache lookup, writes each returned cache file, reports progress and assembles
  the scores (al.selection.pool.scan).

A scoring actor that dies (killed, out of memory, node lost) is restarted by Ray and its shard retried, up to
pool.ray.max_retries times. Without pool.ray.address a local runtime is started for the scan with its temp, log and
spill folders under pool.ray.temp_dir and is shut down after it; with an address the scan joins that cluster and
only disconnects. Ray's own output goes to its log files, never the console.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from al.core.config import PoolConfig
from al.core.errors import UserError
from al.data import hashing
from al.selection import pool

log = logging.getLogger("al")

HASH_BATCH = 512
"""Paths per Ray hashing task."""
SOCKET_PATH_MAX = 107
"""Longest AF_UNIX socket path Ray accepts (its sockets live under the temp folder)."""


class RayEngineError(pool.PoolError):
    """The Ray runtime could not start or join, or the scan failed on it; the message says what to do."""


def default_temp_dir() -> Path:
    """/tmp/al-ray-<uid>: short (Ray's socket paths must stay under 107 characters) and per user."""
    return Path(tempfile.gettempdir()) / f"al-ray-{os.getuid()}"


def _hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data task: (size, mtime_ns, sha1) of each path, stat taken before the read (the driver re-checks it)."""
    sizes, mtimes, digests = [], [], []
    for p in batch["path"]:
        st = os.stat(p)
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
        digests.append(hashing.digest(p))
    return {"path": batch["path"], "size": np.array(sizes, np.int64), "mtime": np.array(mtimes, np.int64),
            "hash": np.array(digests)}


class _Scorer:
    """Ray Data actor: loads the model once, then scores one shard per call into the bytes of its cache file."""

    def __init__(self, source: str | list, settings: dict, threads: int, gpu: bool):
        from al.yolo import detector

        detector.prepare_offline(Path(tempfile.gettempdir()) / f"al-ray-yolo-{os.getuid()}")
        if isinstance(source, str):  # a local runtime: the model file itself
            self.weights = Path(source)
        else:  # a cluster: the model's bytes, through the object store (a node need not see the run directory)
            import ray

            ref, digest = source
            self.weights = Path(tempfile.gettempdir()) / f"al-ray-model-{digest}.pt"  # one file per model and node
            if not self.weights.is_file():
                fd, name = tempfile.mkstemp(suffix=".tmp", prefix=".al-ray-model-", dir=self.weights.parent)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(ray.get(ref))
                os.replace(name, self.weights)
        self.settings = pool.ScanSettings(**{**settings, "device": "0" if gpu else "cpu"})
        detector.set_threads(threads)
        self.model = detector.load_model(self.weights)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from al.yolo import detector

        s = self.settings
        chunks = []
        for paths, hashes in zip(batch["paths"], batch["hashes"]):
            paths, hashes = [str(p) for p in paths], [str(h) for h in hashes]
            rows = [pool.score_row(h, raw, s) for h, raw in
                    zip(hashes, detector.predict_raw(self.weights, paths, imgsz=s.imgsz, conf=s.conf, iou=s.iou,
                                                     batch=s.batch, device=s.device, cand_conf=s.cand_conf,
                                                     max_candidates=s.max_candidates, model=self.model))]
            if len(rows) != len(paths):
                raise pool.PoolError(f"the detector returned {len(rows)} results for {len(paths)} images; check "
                                     f"that every image is readable")
            chunks.append(np.frombuffer(pool.chunk_bytes(rows), dtype=np.uint8))
        out = np.empty(len(chunks), dtype=object)
        out[:] = chunks
        return {"shard": np.asarray(batch["shard"]), "chunk": out}


def _root_cause(e: BaseException) -> BaseException:
    """The worker's own exception inside Ray's wrappers (Ray Data's UserCodeException -> RayTaskError -> cause)."""
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "cause", None) or e.__cause__
        if not isinstance(inner, BaseException):
            break
        e = inner
    return e


_ERROR_LINE = re.compile(r"^\s*((?:\w+\.)*\w*(?:Error|Exception)): (.+)$")


def _worker_error(text: str) -> str | None:
    """'Type: message' of the worker's own exception in the traceback text Ray carries (not Ray's wrappers)."""
    for line in text.splitlines():
        m = _ERROR_LINE.match(line)
        if m and not m.group(1).startswith("ray.") and m.group(1) not in ("UserCodeException", "RayTaskError"):
            return f"{m.group(1)}: {m.group(2)[:300]}"
    return None


class RayEngine:
    """A pool.ScanEngine on Ray. Use as a context manager: the runtime starts on first use (a scan whose every
    image is cached starts none) and is shut down (local) or disconnected (cluster) on exit."""

    def __init__(self, cfg: PoolConfig, *, say: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.shard_size = cfg.shard_size
        self.say = say or (lambda text: None)
        self._ray: Any = None
        self._handlers: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        self._file_handler: logging.FileHandler | None = None
        self._owned = True
        """This engine started (or joined) the runtime, so it shuts it down (or disconnects) at the end."""

    # --- the runtime ------------------------------------------------------------------------------------------

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Any:
        if self._ray is not None:
            return self._ray
        rc = self.cfg.ray
        temp = Path(rc.temp_dir or default_temp_dir())
        sock = temp / "session_2026-01-01_00-00-00_000000_4194304" / "sockets" / "plasma_store"
        if not rc.address and len(str(sock)) > SOCKET_PATH_MAX:
            raise RayEngineError(f"pool.ray.temp_dir = {str(temp)!r} is too long for Ray's socket paths (they must "
                                 f"stay under {SOCKET_PATH_MAX + 1} characters, this would need {len(str(sock))}); "
                                 f"use a short folder such as /tmp/al-ray, or leave it unset")
        temp.mkdir(parents=True, exist_ok=True)
        import ray
        import ray.data

        self._quiet(temp / "al_ray_driver.log")  # after the imports: importing ray and ray.data sets up handlers

        env = {k: os.environ[k] for k in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "MPLBACKEND") if k in os.environ}
        # configure_logging=False: Ray adds no console handler of its own; its loggers go to our file (_quiet)
        kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False,
                              "runtime_env": {"env_vars": env} if env else None, "namespace": "al-pool"}
        t0 = time.time()
        if ray.is_initialized():  # a program that embeds the loop already joined Ray: use it, leave it running
            self._owned = False
            self._ray = ray
            self.say("[POOL] scoring on the Ray runtime this process already joined")
            return ray
        try:
            if rc.address:
                ray.init(address=rc.address, **kw)
                where = f"Ray cluster at {rc.address}"
            else:
                spill = temp / "spill"
                spill.mkdir(exist_ok=True)
                ray.init(num_cpus=rc.num_cpus or int(np.ceil(rc.num_workers * rc.cpus_per_worker)) + 1,
                         num_gpus=rc.num_gpus, object_store_memory=(rc.object_store_mb or 512) << 20,
                         _temp_dir=str(temp), object_spilling_directory=str(spill), **kw)
                where = f"a local Ray runtime (logs: {temp}/session_latest/logs)"
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: Ray raises many kinds
            self._loud()
            key = "pool.ray.address" if rc.address else "pool.ray.temp_dir / num_cpus"
            raise RayEngineError(f"Ray could not start for the pool scan ({type(e).__name__}: {e}). Check {key} "
                                 f"(an address must be reachable: `ray status --address ...`), or set "
                                 f"pool.engine: local.") from None
        self._quiet(temp / "al_ray_driver.log")  # again: ray.init(configure_logging=False) clears them
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the loop reports progress itself
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False
        self.say(f"[POOL] scoring on {where}: {rc.num_workers} workers x {rc.cpus_per_worker:g} CPU"
                 f"{f' + {rc.gpus_per_worker:g} GPU' if rc.gpus_per_worker else ''} "
                 f"(started in {time.time() - t0:.1f} s)")
        self._ray = ray
        return ray

    def _quiet(self, file: Path) -> None:
        """Ray's Python loggers write to `file` instead of the console (its processes write to their own logs)."""
        if self._file_handler is None:
            self._file_handler = logging.FileHandler(file, encoding="utf-8")
            self._file_handler.setLevel(logging.INFO)
            self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in ("ray", "ray._private", "ray.data"):  # ray.init clears "ray" itself
            lg = logging.getLogger(name)
            if not any(saved is lg for saved, _, _ in self._handlers):
                self._handlers.append((lg, list(lg.handlers), lg.propagate))
            lg.handlers = [self._file_handler]
            lg.propagate = False

    def _loud(self) -> None:
        for lg, handlers, prop in self._handlers:
            lg.handlers, lg.propagate = handlers, prop
        self._handlers = []
        if self._file_handler is not None:
            self._file_handler.close()
            self._file_handler = None

    def close(self) -> None:
        """Shut the local runtime down (or disconnect from the cluster); safe to call twice."""
        if self._ray is not None:
            try:
                if self._owned:
                    self._ray.shutdown()
            finally:
                self._ray = None
        self._loud()

    # --- pool.ScanEngine --------------------------------------------------------------------------------------

    def hash_images(self, images: Sequence[str]) -> list[str]:
        """Content hashes from the run's hash cache; the unknown ones computed by Ray tasks (pool.ray.hash_on)."""
        cache = hashing.active()
        known = {p: cache.lookup(p) for p in dict.fromkeys(images)}
        todo = [p for p, h in known.items() if h is None]
        on_ray = self.cfg.ray.hash_on == "ray" or (self.cfg.ray.hash_on == "auto" and bool(self.cfg.ray.address))
        if todo and not on_ray:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=4) as ex:  # hashlib and file reads release the GIL
                for p, h in zip(todo, ex.map(cache.hash, todo)):
                    known[p] = h
        elif todo:
            ray = self._start()
            ds = ray.data.from_items([{"path": p} for p in todo],
                                     override_num_blocks=max(1, -(-len(todo) // HASH_BATCH)))
            for b in ds.map_batches(_hash_batch, batch_size=HASH_BATCH, batch_format="numpy",
                                    num_cpus=1).iter_batches(batch_size=None, batch_format="numpy"):
                for p, size, mtime, h in zip(b["path"], b["size"], b["mtime"], b["hash"]):
                    # a file changed since the task read it: hash it here (its new bytes are the ones scored)
                    known[str(p)] = cache.record(str(p), int(size), int(mtime), str(h)) or cache.hash(str(p))
        return [str(known[p]) for p in images]

    def score(self, weights: Path, shards: Sequence[Sequence[tuple[str, str]]], settings: pool.ScanSettings,
              tick: Callable[[str], None]) -> Iterator[tuple[int, bytes]]:
        if not shards:
            return
        ray = self._start()
        rc = self.cfg.ray
        # a local runtime reads the model file itself; a cluster's nodes get its bytes through the object store
        source: Any = str(Path(weights).resolve()) if not rc.address else \
            [ray.put(Path(weights).read_bytes()), hashing.file_hash(weights)[:16]]
        fields = {k: getattr(settings, k) for k in ("imgsz", "conf", "iou", "batch", "device", "cand_conf", "top_k",
                                                    "max_candidates")}
        items = [{"shard": i, "paths": [img for _, img in s], "hashes": [h for h, _ in s]}
                 for i, s in enumerate(shards)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))  # one block per shard
        with warnings.catch_warnings():
            # max_restarts / max_task_retries have no named parameter in Ray 2.60 (pinned); Ray Data's own
            # default would restart a dying actor forever, and a worker that always dies must fail the scan
            warnings.simplefilter("ignore", DeprecationWarning)
            scored = ds.map_batches(
                _Scorer, batch_size=1, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(rc.num_workers, len(items))),
                num_cpus=rc.cpus_per_worker, num_gpus=rc.gpus_per_worker or None,
                fn_constructor_kwargs={"source": source, "settings": fields,
                                       "threads": max(1, int(rc.cpus_per_worker)), "gpu": rc.gpus_per_worker > 0},
                max_restarts=rc.max_retries, max_task_retries=rc.max_retries)
        it = scored.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)
        try:
            for b in it:
                for i, chunk in zip(b["shard"], b["chunk"]):
                    i = int(i)
                    yield i, np.asarray(chunk, dtype=np.uint8).tobytes()
                    for h, _ in shards[i]:  # after the scan wrote the shard: a stop here keeps it
                        tick(h)
        except pool.PoolError:
            raise
        except ray.exceptions.RayError as e:
            cause = _root_cause(e)
            if isinstance(cause, UserError):
                raise cause from None
            what = _worker_error(str(e)) or f"{type(cause).__name__}: {str(cause).strip()[:300]}"
            raise RayEngineError(f"the pool scan failed on Ray: {what} (in a scoring worker). The shards that "
                                 f"came back before it are cached and --resume goes on from them; raise "
                                 f"pool.ray.max_retries if workers were lost, or see Ray's logs under "
                                 f"{self.cfg.ray.temp_dir or default_temp_dir()}/session_latest/logs.") from None
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
