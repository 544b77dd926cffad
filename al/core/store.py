"""Atomic, schema-checked writes and reads of the run's state files."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from al.core.errors import UserError

SCHEMA = 1


class StoreError(UserError):
    """A state file is missing, corrupt or of an unknown schema; the message names the file and the fix."""


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then os.replace: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: Path, obj: dict, *, schema: int = SCHEMA) -> None:
    """Write a state dict as JSON with its schema version, atomically."""
    data = {"schema": schema, **{k: v for k, v in obj.items() if k != "schema"}}
    write_text_atomic(path, json.dumps(data, indent=2, default=_default) + "\n")


def _default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path, *, schema: int = SCHEMA, required: tuple[str, ...] = ()) -> dict:
    """Read a state file written by write_json and check its schema and required keys."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: file not found. Re-run the step that writes it (--resume re-runs it).") from None
    except json.JSONDecodeError as e:
        raise StoreError(
            f"{path}: corrupt JSON at line {e.lineno} ({e.msg}). Delete the file and run with --resume to "
            f"re-create it, or restore it from a backup."
        ) from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise StoreError(f"{path}: schema {got!r}, expected {schema}. This file was written by another version "
                         f"of the tool; delete it and run with --resume to re-create it.")
    missing = [k for k in required if k not in data]
    if missing:
        raise StoreError(f"{path}: missing keys {missing}. Delete the file and run with --resume to re-create it.")
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
