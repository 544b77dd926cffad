"""The one content-hash service: SHA-1 of a file's bytes, cached by (path, size, mtime_ns).

Every caller (the pool scan, the split-overlap check at session start, the manifest, the review package and the
Roboflow round-trip) goes through file_hash(). A step that hashes many files runs inside
`with persisted(paths.hash_cache):` so that the hashes survive the process (cache/hashes.json under the run,
written atomically when the block ends); elsewhere an in-process cache keyed the same way is used. The digest is the
same SHA-1 of the content as before, so manifests and pool score caches written earlier stay valid.

A file rewritten in place keeps its path but gets a new mtime_ns (and usually a new size), so its entry no longer
matches and it is read again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from al.core import store

log = logging.getLogger("al")

CACHE_SCHEMA = 1
ALGORITHM = "sha1"
CHUNK = 1 << 20


def digest(path: str | Path) -> str:
    """SHA-1 of the file's bytes, read in chunks (the only place a file is read for its content hash)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _key(path: str | Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


class HashCache:
    """Content hashes by (absolute path, size, mtime_ns); with a `file`, loaded from and saved to it."""

    def __init__(self, file: Path | None = None):
        self.file = Path(file) if file is not None else None
        self._entries: dict[str, tuple[int, int, str]] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if self.file is not None:
            self._entries = _load(self.file)

    def hash(self, path: str | Path) -> str:
        """The content hash of `path`, read from disk only when its size or mtime changed since last time."""
        name, size, mtime = _key(path)
        with self._lock:
            hit = self._entries.get(name)
        if hit is not None and hit[0] == size and hit[1] == mtime:
            return hit[2]
        h = digest(path)
        with self._lock:
            self._entries[name] = (size, mtime, h)
            self._dirty = True
        return h

    def lookup(self, path: str | Path) -> str | None:
        """The cached hash of `path` when its size and mtime are unchanged, else None (nothing is read)."""
        name, size, mtime = _key(path)
        with self._lock:
            hit = self._entries.get(name)
        return hit[2] if hit is not None and hit[0] == size and hit[1] == mtime else None

    def record(self, path: str | Path, size: int, mtime_ns: int, h: str) -> str | None:
        """Record `h`, computed elsewhere (another process) from the file at (size, mtime_ns), if the file is still
        that one; returns `h`, or None when the file changed since (then hash it again)."""
        name, cur_size, cur_mtime = _key(path)
        if (cur_size, cur_mtime) != (size, mtime_ns):
            return None
        with self._lock:
            self._entries[name] = (size, mtime_ns, h)
            self._dirty = True
        return h

    def remember(self, path: str | Path, h: str) -> None:
        """Record a hash known without reading the file (a copy of a file whose hash is known)."""
        name, size, mtime = _key(path)
        with self._lock:
            self._entries[name] = (size, mtime, h)
            self._dirty = True

    def save(self) -> None:
        """Write the cache file atomically if anything was added (no-op without a file)."""
        if self.file is None or not self._dirty:
            return
        with self._lock:
            entries = {name: list(e) for name, e in self._entries.items()}
            self._dirty = False
        try:
            store.write_json(self.file, {"algorithm": ALGORITHM, "entries": entries}, schema=CACHE_SCHEMA)
        except BaseException:
            self._dirty = True
            raise

    def __len__(self) -> int:
        return len(self._entries)


def _load(file: Path) -> dict[str, tuple[int, int, str]]:
    """The entries of a cache file; a missing one is empty, an unreadable or foreign one is warned about and
    rebuilt (it is only a shortcut: every hash can be computed again)."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("schema") != CACHE_SCHEMA or data.get("algorithm") != ALGORITHM:
            raise ValueError(f"schema {data.get('schema')!r}, algorithm {data.get('algorithm')!r}")
        return {str(name): (int(size), int(mtime), str(h)) for name, (size, mtime, h) in data["entries"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("hash cache %s unreadable (%s); it is rebuilt, files are hashed again", file, e)
        return {}


_memory = HashCache()
"""Used outside a persisted() block (tools, tests, the TUI's worker threads)."""
_active: ContextVar[HashCache | None] = ContextVar("al_hash_cache", default=None)
_runs: dict[Path, HashCache] = {}
_runs_lock = threading.Lock()


def active() -> HashCache:
    """The run's cache inside persisted(), else the in-process one (an empty cache is still the active one)."""
    cache = _active.get()
    return _memory if cache is None else cache


def file_hash(path: str | Path) -> str:
    """SHA-1 of the file's content, from the active cache."""
    return active().hash(path)


def remember(path: str | Path, h: str) -> None:
    """Tell the active cache the hash of a file just written with known content."""
    active().remember(path, h)


def run_cache(file: Path) -> HashCache:
    """The process's one cache for a run's cache file (loaded on first use)."""
    file = Path(file).absolute()
    with _runs_lock:
        cache = _runs.get(file)
        if cache is None:
            cache = _runs[file] = HashCache(file)
        return cache


@contextlib.contextmanager
def persisted(file: Path) -> Iterator[HashCache]:
    """Within the block, file_hash() uses (and fills) the run's cache at `file`; it is saved when the block ends,
    also when it ends by an error or a stop (what was hashed stays hashed)."""
    cache = run_cache(file)
    token = _active.set(cache)
    try:
        yield cache
    finally:
        _active.reset(token)
        try:
            cache.save()
        except OSError as e:  # a cache that cannot be written must not fail the step that used it
            log.warning("hash cache %s not saved (%s)", cache.file, e)
