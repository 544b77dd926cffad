"""Atomic, schema-checked writes and reads of the run's state files."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from al.core.errors import UserError

SCHEMA = 1


class StoreError(UserError):
    """A state file is missing, corrupt or of an unknown schema; the message names the file and the fix."""


class StoreWriteError(StoreError, OSError):
    """A write under the run directory failed (disk full, read-only, I/O error). Still an OSError, with the
    original errno, so code that handles OSError keeps working; the message is one line naming the path, the
    system's reason and what to free or fix."""

    def __str__(self) -> str:  # OSError's own would print "[Errno 28] ...: path" once errno is set
        return str(self.args[0]) if self.args else ""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def size_text(n: int) -> str:
    """Bytes for a person: 512 B, 12.3 kB, 45.6 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _mount(path: Path) -> tuple[Path, int | None]:
    """The mount point holding `path` (or its nearest existing parent) and its free bytes (None if unknown)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        free = None
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p, free


def io_error_text(path: Path, e: OSError, *, need: int | None = None) -> str:
    """One line for a failed write: the path, the system's reason and what to free or fix (no command: the
    caller adds how to continue)."""
    path = Path(path)
    reason = e.strerror or str(e)
    if e.errno in DISK_FULL:
        mount, free = _mount(path)
        want = max(need or 0, 1 << 20)  # a few state files at least; checkpoints say their own size
        have = "unknown" if free is None else size_text(free)
        return (f"{path}: disk full ({reason}): {have} free on {mount}, at least {size_text(want)} needed. "
                f"Free at least {size_text(want)} on {mount}.")
    if e.errno in NOT_WRITABLE:
        return (f"{path}: cannot write ({reason}). Make {path.parent} writable, or set run_dir to a writable "
                f"folder.")
    return f"{path}: I/O error ({reason}, errno {e.errno}). Check the disk and the folder {path.parent}."


def write_error(path: Path, e: OSError, *, need: int | None = None, prefix: str = "") -> StoreWriteError:
    """The StoreWriteError for `e` (raise it `from None`: the one line says all)."""
    err = StoreWriteError(prefix + io_error_text(path, e, need=need))
    err.errno, err.strerror, err.filename = e.errno, e.strerror, str(path)
    return err


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then os.replace: readers see the old or the new file, never half.
    An OSError (disk full, read-only folder, I/O error) becomes a StoreWriteError naming the path and the fix."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, StoreWriteError):
            raise
        raise write_error(path, e, need=len(data)) from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def is_temp_name(name: str) -> bool:
    """The name of what an interrupted write leaves: hidden and ending in .tmp (write_bytes_atomic's
    .NAME.XXXXXXXX.tmp, and the .NAME.tmp files and folders that other writers fill and then rename into place)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_temp(root: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    """Delete the temp files and folders (is_temp_name) under `root` that writes killed before their os.replace
    left behind (a kill -9 runs no cleanup). Safe only while nothing writes there: the caller holds the run lock.
    Folders named in `skip` are not entered (large link mirrors, moved-aside runs). Returns what was removed."""
    removed = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for d in [d for d in dirs if is_temp_name(d)]:
            shutil.rmtree(base / d, ignore_errors=True)
            removed.append(base / d)
        dirs[:] = [d for d in dirs if not is_temp_name(d) and d not in skip]
        for f in files:
            if is_temp_name(f):
                try:
                    (base / f).unlink()
                except OSError:
                    continue
                removed.append(base / f)
    return removed


def reserve(path: Path, size: int = 256 * 1024) -> None:
    """Keep `size` bytes of ballast at `path` (random bytes: no filesystem compresses them away). On a full disk
    the runner deletes it so that the failed state can still be saved; the next start writes it again."""
    try:
        if not path.is_file() or path.stat().st_size < size:
            write_bytes_atomic(path, os.urandom(size))
    except OSError:
        pass  # no room for the ballast now: it is a safety margin, not a requirement


def release(path: Path) -> None:
    """Delete the ballast written by reserve() (no error if it is absent or cannot be removed)."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: Path, obj: dict, *, schema: int = SCHEMA) -> None:
    """Write a state dict as JSON with its schema version, atomically."""
    data = {"schema": schema, **{k: v for k, v in obj.items() if k != "schema"}}
    try:
        text = json.dumps(data, indent=2, default=_default, allow_nan=False)
    except ValueError as e:  # JSON has no NaN or infinity; Python's json would write them anyway
        where = _non_finite(data)
        if where is None:
            raise ValueError(f"{path}: not written: {e}") from None
        raise ValueError(f"{path}: not written: {where} is not a finite number and JSON has no NaN or infinity "
                         f"(a value that was not measured is written as null: pass None)") from None
    write_text_atomic(path, text + "\n")


def _default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy arrays (as nested lists) and numpy scalars (as Python numbers)
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _non_finite(o: Any, where: str = "") -> str | None:
    """Where in `o` the first NaN or infinity is (e.g. "key 'a.b[2]' (nan)"), or None."""
    if isinstance(o, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in o.items())
    elif isinstance(o, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(o))
    elif isinstance(o, float):
        return None if math.isfinite(o) else f"key {where!r} ({o})"
    elif hasattr(o, "tolist") or hasattr(o, "item"):
        return _non_finite(_default(o), where)
    else:
        return None
    for w, v in items:
        found = _non_finite(v, w)
        if found:
            return found
    return None


def read_json(path: Path, *, schema: int | tuple[int, ...] = SCHEMA, required: tuple[str, ...] = (),
              fix: str | None = None) -> dict:
    """Read a state file written by write_json and check its schema (one number, or the accepted ones) and
    required keys. `fix` replaces the generic advice of the error messages (what re-creates this file)."""
    path = Path(path)
    accepted = (schema,) if isinstance(schema, int) else tuple(schema)
    # --resume alone goes on from the step that stopped, which reads this file; --repair finds the step that writes it
    redo = fix or ("Rebuild the run state with --repair (the run then goes on from the first step whose output is "
                   "missing or unreadable) and continue with --resume.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: file not found. {redo}") from None
    except OSError as e:  # permissions, an I/O error, a folder in the file's place: one line, no traceback
        raise StoreError(f"{path}: cannot read ({e.strerror or e}). Check the file, its permissions and the disk."
                         ) from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: corrupt JSON at line {e.lineno} ({e.msg}). "
                         f"{fix or redo[:-1] + ', or restore it from a backup.'}") from None
    except UnicodeDecodeError:
        raise StoreError(f"{path}: corrupt file (not UTF-8 text). "
                         f"{fix or redo[:-1] + ', or restore it from a backup.'}") from None
    if not isinstance(data, dict) or data.get("schema") not in accepted:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        want = " or ".join(str(a) for a in accepted)
        raise StoreError(f"{path}: schema {got!r}, expected {want}. This file was written by another version "
                         f"of the tool. {redo}")
    missing = [k for k in required if k not in data]
    if missing:
        raise StoreError(f"{path}: missing keys {missing}. {redo}")
    return data


def write_yaml(path: Path, obj: dict) -> None:
    write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write all rows (a full rewrite keeps the file free of duplicates when a step re-runs)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    write_text_atomic(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
