"""Start a verify run under its limits, then become it::

    python -m app.jobs.launch --parent PID [--memory-bytes N] -- -m trainer.run --plan ... --out ...

Run by the job runner in place of ``python -m trainer.run`` (standard library only; it imports nothing of the app):

1. **Dies with its server.** On Linux it asks the kernel for ``SIGKILL`` when the thread that started it ends
   (``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``); that thread is the runner's worker, which lives as long as
   the server. If the server is already gone (its pid is no longer the parent), it exits at once. A server killed
   with ``kill -9`` so takes its runs with it; the next server also reaps any it finds from their recorded pids.
2. **Capped memory.** ``RLIMIT_DATA`` (the process's private writable memory: heap, anonymous mappings) is set to
   ``--memory-bytes``: a run that would take more fails its allocation (a ``MemoryError`` / "can't allocate
   memory") instead of pushing the host into swap or its out-of-memory killer. Shared mappings (a GPU driver's
   device memory) are outside this limit.
3. ``exec``: the run replaces this process (same pid, same process group), so the runner's pid is the run's.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 70


def die_with_parent() -> bool:
    """Ask for SIGKILL when the parent thread ends (Linux); whether the kernel took the request."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def cap_memory(limit: int) -> None:
    """Cap the private writable memory of this process (and what it execs) at ``limit`` bytes."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parent", type=int, required=True, help="pid of the server that starts the run")
    parser.add_argument("--memory-bytes", type=int, default=0, help="RLIMIT_DATA of the run (0: no cap)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the arguments of python")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the run's python arguments after --")
    die_with_parent()
    if os.getppid() != args.parent:  # the server died before the signal was armed
        print("the server that started this run is gone: not running it", file=sys.stderr)
        return EXIT_ORPHANED
    if args.memory_bytes > 0:
        cap_memory(args.memory_bytes)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *command])
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    raise SystemExit(main())
