"""A local Label Studio server for a run (`al-loop label-studio --config CFG`): Label Studio from its own virtual
environment (.venv-label-studio, made by scripts/label_studio_setup.sh; it pins its own dependencies, apart from
the tool's), its data under <run_dir>/label_studio, bound to 127.0.0.1, with a user and an API token made at the
first start (the token from review.label_studio.api_key_env or its secrets_file, else generated).

The token and the password reach the server through its environment only. The server's own database stores them
(as every Label Studio does); nothing the loop writes holds them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from al.core.config import LabelStudioReviewConfig
from al.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-label-studio"
SETUP = REPO / "scripts" / "label_studio_setup.sh"
USERNAME = "al-loop@localhost"
"""The user made at the first start (Label Studio users are e-mail addresses)."""
START_TIMEOUT_S = 900.0
"""The first start migrates the database: minutes on a small machine."""


class LabelStudioError(UserError):
    """The local Label Studio server cannot be set up or started (the message says what to do)."""


def executable(explicit: str | None = None) -> Path:
    """The label-studio command: explicit, $AL_LABEL_STUDIO, the project's .venv-label-studio, else PATH."""
    for cand in (explicit, os.environ.get("AL_LABEL_STUDIO"), str(VENV / "bin" / "label-studio")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    found = shutil.which("label-studio")
    if found:
        return Path(found)
    raise LabelStudioError(f"Label Studio is not installed: run `al-loop label-studio --setup` (or bash {SETUP}) "
                           f"to install it in its own virtual environment {VENV}, or set AL_LABEL_STUDIO to a "
                           f"label-studio executable.")


def setup(say: Callable[[str], None] = print) -> Path:
    """Install Label Studio in .venv-label-studio (pinned; skipped when the pins did not change)."""
    if not SETUP.is_file():
        raise LabelStudioError(f"{SETUP} not found: the set-up script ships with the source tree; install Label "
                               f"Studio yourself (pip install label-studio==1.23.2 in its own venv) and set "
                               f"AL_LABEL_STUDIO to its label-studio executable.")
    say(f"[LABEL STUDIO] installing Label Studio in {VENV} (minutes the first time)")
    res = subprocess.run(["bash", str(SETUP)], cwd=REPO)
    if res.returncode != 0:
        raise LabelStudioError(f"{SETUP} failed (exit {res.returncode}); see its output above.")
    return executable()


def bind_address(url: str) -> tuple[str, int]:
    """(host, port) of a local server URL; only http on 127.0.0.1 / localhost is served."""
    u = urlparse(url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost") or (u.path or "/") != "/":
        raise LabelStudioError(f"review.label_studio.url = {url!r}: a local server is served at "
                               f"http://127.0.0.1:<port> (no path); set the url to that form, e.g. "
                               f"http://127.0.0.1:8080.")
    return "127.0.0.1", u.port or 80


def port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port (connections of a server stopped just now, in TIME_WAIT, do not count: the
    server binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    """GET <url>/health/ answers {"status": "UP"}."""
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=5) as r:  # noqa: S310 (a local http URL)
            return json.loads(r.read() or b"{}").get("status") == "UP"
    except (OSError, ValueError, urllib.error.URLError):
        return False


@dataclass
class Credentials:
    """The API token and the login of the server's user (never written by the loop; shown only on a terminal)."""

    token: str = field(repr=False)
    password: str = field(repr=False)
    username: str = USERNAME
    token_generated: bool = False
    password_generated: bool = False

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"


def credentials(lcfg: LabelStudioReviewConfig) -> Credentials:
    """The token from api_key_env, else secrets_file (a missing file gets a new token, mode 600), else a new
    one; the password from LABEL_STUDIO_PASSWORD, else a new one."""
    from al.review.label_studio import read_secrets_file

    env = lcfg.api_key_env
    token, made = os.environ.get(env, "").strip(), False
    f = lcfg.secrets_file
    if not token and f is not None and Path(f).is_file():
        token = read_secrets_file(Path(f), env) or ""
        if not token:
            raise LabelStudioError(f"{f}: no token in the secrets file (review.label_studio.secrets_file); write a "
                                   f"line {env}=<token>, or delete the file to have one generated.")
    if not token:
        token, made = secrets.token_hex(20), True  # a legacy token: 40 characters, Label Studio's limit
        if f is not None:
            Path(f).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"{env}={token}\n")
    if len(token) < 6 or len(token) > 40:
        raise LabelStudioError(f"The token from {env} has {len(token)} characters; Label Studio takes 6 to 40. "
                               f"Unset it to have one generated.")
    password = os.environ.get("LABEL_STUDIO_PASSWORD", "")
    return Credentials(token=token, password=password or secrets.token_urlsafe(12), token_generated=made,
                       password_generated=not password,
                       username=os.environ.get("LABEL_STUDIO_USERNAME") or USERNAME)


def server_env(creds: Credentials, data_dir: Path, lcfg: LabelStudioReviewConfig) -> dict[str, str]:
    """The server's environment: the user and token to make, legacy tokens on, data under data_dir, and nothing
    that calls out (no version check, analytics or error reporting)."""
    env = {k: v for k, v in os.environ.items() if k != lcfg.api_key_env}
    env.update({
        "LABEL_STUDIO_USERNAME": creds.username, "LABEL_STUDIO_PASSWORD": creds.password,
        "LABEL_STUDIO_USER_TOKEN": creds.token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "LABEL_STUDIO_SENTRY_DSN": "",
        "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@dataclass
class Server:
    """A running local Label Studio (its process group is ours to stop)."""

    url: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen
    first_start: bool

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


def start(url: str, data_dir: Path, creds: Credentials, lcfg: LabelStudioReviewConfig, *,
          exe: Path | None = None) -> Server:
    """Start Label Studio at url (127.0.0.1 only) with its data in data_dir; returns before it is ready (wait())."""
    host, port = bind_address(url)
    if not port_free(host, port):
        raise LabelStudioError(f"Port {port} of {host} is in use (is Label Studio already running? {url}/health/). "
                               f"Stop that server, or set review.label_studio.url to another port.")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    first = not (data_dir / "label_studio.sqlite3").is_file()
    log = data_dir / "server.log"
    cmd = [str(exe or executable()), "start", "--no-browser", "--internal-host", host, "--port", str(port),
           "--host", url, "--data-dir", str(data_dir)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=server_env(creds, data_dir, lcfg), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=data_dir)
    return Server(url=url, data_dir=data_dir, log=log, proc=proc, first_start=first)


def wait(server: Server, timeout: float = START_TIMEOUT_S, poll: float = 0.5) -> float:
    """Wait until the server answers its health check; the seconds it took. A server that exits, or is not up in
    time, is stopped and reported with the end of its log."""
    t0 = time.monotonic()
    while not healthy(server.url):
        if server.proc.poll() is not None:
            raise LabelStudioError(f"Label Studio exited (code {server.proc.returncode}) before it was up; the end "
                                   f"of {server.log}:\n{server.log_tail()}")
        if time.monotonic() - t0 > timeout:
            server.stop()
            raise LabelStudioError(f"Label Studio was not up at {server.url} after {timeout:.0f} s; the end of "
                                   f"{server.log}:\n{server.log_tail()}")
        time.sleep(poll)  # polling the health endpoint, not a fixed wait
    return time.monotonic() - t0
