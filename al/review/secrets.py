"""An API key or token for a review backend: read from an environment variable or a secrets file, and kept out of
every message, repr and log (the place it came from is safe to show; the value never is)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from al.core.errors import ReviewError

log = logging.getLogger("al")


@dataclass(frozen=True)
class Secret:
    """The secret and where it was read from."""

    value: str
    where: str

    def scrub(self, text: Any) -> str:
        """text without the secret (as is, and as it appears percent-encoded in a URL)."""
        s = str(text)
        if self.value:
            for form in {self.value, quote(self.value, safe=""), quote_plus(self.value)}:
                s = s.replace(form, "***")
        return s

    def __repr__(self) -> str:  # keep the secret out of reprs, tracebacks' locals and debug dumps
        return f"{type(self).__name__}(where={self.where!r})"

    __str__ = __repr__


def from_env(env: str) -> str | None:
    """The environment variable's value, stripped; None when unset or blank."""
    return os.environ.get(env, "").strip() or None


def read_secrets_file(f: Path, env: str, *, names: tuple[str, ...], key: str) -> str | None:
    """The secret in a secrets file: a line `name=<value>` (or `export name=...`) for `env` or one of `names`, or
    the file's one bare line; None when the file holds neither. `key`: the config key naming the file (for the
    messages)."""
    try:
        text = f.read_text(encoding="utf-8")
    except OSError as e:
        raise ReviewError(f"{f}: cannot read the secrets file ({e.strerror}). Fix {key} or set the environment "
                          f"variable {env}.") from None
    if os.name == "posix" and f.stat().st_mode & 0o077:
        log.warning("%s: the secrets file is readable by other users; chmod 600 it", f)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for ln in lines:
        m = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*)$", ln)
        if m and m.group(1) in (env, *names):
            value = m.group(2).strip().strip("'\"")
            if value:
                return value
    if len(lines) == 1 and not re.search(r"[=:\s]", lines[0]):
        return lines[0]
    return None
