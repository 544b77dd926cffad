"""Multi-GPU training (training.device: [0, 1, ...]) through Ultralytics' own DDP, under the loop's rules.

With several devices Ultralytics' trainer does not train in its own process: it writes a script and runs
`python -m torch.distributed.run --nproc_per_node N ... script`, whose elastic agent starts one process per GPU.
Those processes are grandchildren of the training child (al.yolo.train_worker), and PR_SET_PDEATHSIG, which makes
the training child die with the orchestrator, is not inherited. So the command goes through this module twice:

    python -m al.yolo.ddp --launch <training child pid> torch.distributed.run --nproc_per_node N ... \\
        -m al.yolo.ddp <script>

`--launch` (the agent) and each rank set PR_SET_PDEATHSIG=SIGKILL, check that their parent is still the one they
were started by (it may have died before the flag was set), then run torch.distributed.run / the script in-process.
A kill -9 of the orchestrator thus takes the training child, the agent and every rank with it, and --resume works
as with one device.

Two more things Ultralytics' DDP launcher does are changed for the loop (install()): it deletes the save directory
of a fresh training, which here is iterations/iteration_K/ with the loop's spec, log and progress files in it (the
retrain step already removed the old weights), and its command is wrapped as above.

`check_devices` refuses a device list this machine does not have before anything trains.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
from collections.abc import Sequence
from typing import Any

from al.core.errors import UserError

ENV_PARENT = "AL_DDP_PARENT"
"""Pid of the process that started a DDP rank (the agent); the training callbacks' orphan check reads it."""


class DeviceError(UserError):
    """training.device names GPUs this machine does not have; the message says what it has."""


def requested(device: str | Sequence[int]) -> list[int] | None:
    """The CUDA devices of a multi-device request ([0, 1] or '0,1'), or None for one device / cpu / auto."""
    if isinstance(device, str):
        if "," not in device:
            return None
        return [int(s) for s in device.split(",") if s.strip()]
    return list(device)


def check_devices(device: str | Sequence[int], *, key: str = "training.device") -> None:
    """Refuse a device list naming GPUs that are not here (no CUDA, fewer GPUs), naming `key` and the fix."""
    want = requested(device)
    if want is None and isinstance(device, str) and device.isdigit():
        want = [int(device)]
    if not want:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [d for d in want if d >= have]
    if len(want) > 1 and not _importable("cloudpickle"):  # Ultralytics' DDP hands the trainer over with it
        raise DeviceError(f"{key} = {want}: multi-GPU training needs the cloudpickle package (Ultralytics' DDP "
                          f"launcher uses it and cannot install it offline): pip install 'cloudpickle>=3.1.1'")
    if missing:
        what = "no usable CUDA GPU" if have == 0 else f"{have} CUDA GPU{'s' if have > 1 else ''} (0..{have - 1})"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        fix = (f"set {key} to devices it has (e.g. {list(range(have)) if have > 1 else 0}) or 'cpu'" if have else
               f"set {key} to 'cpu' or 'auto', or run on a machine with those GPUs")
        raise DeviceError(f"{key} = {list(want) if len(want) > 1 else want[0]} asks for CUDA device"
                          f"{'s' if len(missing) > 1 else ''} {missing}, but this machine has {what}"
                          f"{f' (CUDA_VISIBLE_DEVICES={visible})' if visible is not None else ''}: {fix}; then "
                          f"--resume.")


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def trainer_device(device: str | Sequence[int]) -> str:
    """The device argument for Ultralytics' trainer: '0,1' for several (its trainer counts the world size from the
    string), else the one device."""
    want = requested(device)
    if want is not None:
        return ",".join(str(d) for d in want)
    from al.yolo.detector import resolve_device

    return resolve_device(device)


def wrap_command(cmd: list[str], parent: int) -> list[str]:
    """Ultralytics' [python, -m, torch.distributed.run, ..., script] -> the same through this module (agent and
    ranks die with their parent)."""
    if len(cmd) < 4 or cmd[1] != "-m":
        raise ValueError(f"unexpected DDP command from Ultralytics: {cmd}")
    python, module, *args = cmd[0], cmd[2], *cmd[3:]
    *launcher_args, script = args
    return [python, "-m", "al.yolo.ddp", "--launch", str(parent), module, *launcher_args, "-m", "al.yolo.ddp", script]


def install() -> None:
    """Make Ultralytics' DDP launch keep the iteration folder and go through wrap_command (call in the training
    child before it trains)."""
    from ultralytics.engine import trainer as trainer_mod

    original = trainer_mod.generate_ddp_command
    if getattr(original, "_al_wrapped", False):
        return

    def generate(trainer: Any) -> tuple[list[str], str]:
        resume = trainer.resume
        trainer.resume = True  # Ultralytics rmtree()s save_dir unless resuming: it holds the loop's own files
        try:
            cmd, file = original(trainer)
        finally:
            trainer.resume = resume
        return wrap_command(cmd, os.getpid()), file

    generate._al_wrapped = True  # type: ignore[attr-defined]  # a marker on the function object
    trainer_mod.generate_ddp_command = generate


def die_with_parent(expected_parent: int | None = None) -> None:
    """PR_SET_PDEATHSIG=SIGKILL; exit at once when the parent is already gone (or is not `expected_parent`)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(3)  # the parent died before the flag was set: nobody waits for this process


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--launch":  # the agent: python -m al.yolo.ddp --launch PID MODULE ARGS...
        die_with_parent(int(argv[1]))
        os.environ[ENV_PARENT] = str(os.getpid())  # what each rank checks its parent against
        module, rest = argv[2], argv[3:]
        sys.argv = [module, *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    if len(argv) != 1:
        print("usage: python -m al.yolo.ddp --launch PID MODULE ARGS... | python -m al.yolo.ddp SCRIPT",
              file=sys.stderr)
        return 2
    parent = os.environ.get(ENV_PARENT)  # a rank: started by the agent above
    die_with_parent(int(parent) if parent else None)
    sys.argv = [argv[0]]
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
