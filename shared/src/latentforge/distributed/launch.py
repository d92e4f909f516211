"""``latentforge-launch``: torchrun with defaults that fit both this laptop and a GPU node.

    latentforge-launch train.py --lr 1e-4              # 1 process per GPU, or 1 on CPU
    latentforge-launch --nproc-per-node 2 -m livr.cli train ...
    latentforge-launch --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 -m ...

Every option of ``torchrun`` is accepted and passed through unchanged. Two differ in
their defaults: ``--nproc-per-node`` defaults to ``auto`` (the number of visible GPUs,
or 1 without CUDA: torchrun's own ``auto`` would start one process per CPU core), and a
single-node job without rendezvous options gets ``--standalone`` so that a free port is
picked. The equivalent plain command is printed with ``--dry-run``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Sequence

import torch

_MULTI_NODE_FLAGS = (
    "--nnodes",
    "--rdzv-endpoint",
    "--rdzv_endpoint",
    "--master-addr",
    "--master_addr",
    "--rdzv-backend",
    "--rdzv_backend",
)


def default_nproc() -> int:
    """One process per visible GPU, or one process on a CPU-only machine."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def _launcher_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split argv into launcher options and the program (script or ``-m module``) with its args."""
    launcher: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return launcher, list(argv[i + 1 :])
        if arg in ("-m", "--module"):
            return launcher, list(argv[i:])
        if not arg.startswith("-"):
            return launcher, list(argv[i:])
        launcher.append(arg)
        # Options given as "--opt value" consume the next token; flags and "--opt=value" do not.
        takes_value = "=" not in arg and arg not in (
            "--standalone",
            "--no-python",
            "--no_python",
            "--dry-run",
            "--run-path",
            "--run_path",
        )
        if takes_value and i + 1 < len(argv):
            launcher.append(argv[i + 1])
            i += 1
        i += 1
    return launcher, []


def torchrun_args(argv: Sequence[str]) -> list[str]:
    """The torchrun argument list that ``latentforge-launch argv`` runs."""
    launcher, program = _launcher_args(argv)
    if not program or program == ["-m"]:
        raise SystemExit("latentforge-launch: give a script to run, or -m MODULE (see --help)")
    launcher = [a for a in launcher if a != "--dry-run"]

    out: list[str] = []
    has_nproc = False
    i = 0
    while i < len(launcher):
        arg = launcher[i]
        name, _, inline = arg.partition("=")
        if name in ("--nproc-per-node", "--nproc_per_node"):
            has_nproc = True
            value = inline if inline else (launcher[i + 1] if i + 1 < len(launcher) else "")
            if not inline:
                i += 1
            if value in ("", "auto"):
                value = str(default_nproc())
            out += ["--nproc-per-node", value]
        else:
            out.append(arg)
        i += 1
    if not has_nproc:
        out = ["--nproc-per-node", str(default_nproc()), *out]
    if "--standalone" not in out and not any(a.split("=")[0] in _MULTI_NODE_FLAGS for a in out):
        out = ["--standalone", *out]
    return [*out, *program]


def killed_by_signal(torchrun_stderr: str) -> bool:
    """True when torchrun's failure report names a worker that died by a signal (exitcode < 0)."""
    return re.search(r"exitcode\s*:\s*-\d+", torchrun_stderr) is not None


def run_local(
    script: str | os.PathLike,
    args: Sequence[str] = (),
    *,
    nproc: int = 2,
    timeout_s: float = 300.0,
    relaunch_on_signal: int = 1,
) -> subprocess.CompletedProcess:
    """Run ``script`` as an ``nproc``-process job on this machine and wait for it.

    For tests and notebooks: the caller's own ``RANK``/``WORLD_SIZE`` are not passed on,
    every rank prints its Python stack if it dies by a signal, and a job in which a rank
    was killed by a signal (an aborted gloo I/O thread, the OOM killer) is started afresh
    up to ``relaunch_on_signal`` times, with a warning that keeps the first report. A job
    that exits with an error code is never relaunched.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONFAULTHANDLER"] = "1"
    cmd = [sys.executable, "-m", __name__, "--nproc-per-node", str(nproc), str(script), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    for _ in range(relaunch_on_signal):
        if proc.returncode == 0 or not killed_by_signal(proc.stderr):
            break
        warnings.warn(f"a rank died by a signal; relaunching:\n{proc.stderr[-3000:]}", stacklevel=2)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    return proc


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: latentforge-launch [torchrun options] (SCRIPT | -m MODULE) [args ...]")
        print(__doc__)
        print(f"default --nproc-per-node on this machine: {default_nproc()}")
        return
    args = torchrun_args(argv)
    if "--dry-run" in argv[: len(argv) - len(_launcher_args(argv)[1])]:
        print("torchrun " + shlex.join(args))
        return
    from torch.distributed.run import main as torchrun_main

    torchrun_main(args)


if __name__ == "__main__":
    main()
