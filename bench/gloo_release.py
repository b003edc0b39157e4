"""When gloo frees a collective's output: how often it outlives the caller's last reference, and by how long.

Each rank calls ``dist.all_gather_into_tensor(out, inp)`` (synchronous: it returns after the work's ``wait()``),
drops its only reference to ``out`` and checks whether the output's storage was released at once (a weakref
callback on its ``UntypedStorage``). ``ProcessGroupGloo::runLoop`` marks a work completed inside ``execute`` and
only then, back on its worker thread, drops its own reference to the work (``workInProgress_[i].reset()``), which
holds the work's tensors: when that thread is not scheduled at once, the buffer outlives the caller. FSDP2's
all-gather outputs are such buffers (docs/accuracy.md, the per-rank gloo runs).

    python -m bench.gloo_release            # 4 ranks x 3,000 all-gathers of 128 KiB, about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import weakref
from typing import Any


def _stamp(freed: list[float]) -> Any:
    """A weakref callback that records when the referent was released."""

    def stamp(_ref: Any) -> None:
        freed.append(time.perf_counter())

    return stamp


def _rank(rank: int, world: int, port: int, calls: int, results: Any) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    delays: list[float] = []
    try:
        for _ in range(calls):
            inp = torch.full((32768,), float(rank))
            out = torch.empty(32768 * world)
            freed: list[float] = []
            storage = out.untyped_storage()
            ref = weakref.ref(storage, _stamp(freed))
            dist.all_gather_into_tensor(out, inp)
            del storage, out
            dropped = time.perf_counter()
            while not freed:
                time.sleep(0)
            if freed[0] > dropped:
                delays.append(freed[0] - dropped)
            del ref
    finally:
        dist.destroy_process_group()
    results.put((rank, calls, sorted(delays)))


def run(world: int = 4, calls: int = 3000) -> list[tuple[int, int, list[float]]]:
    """Per rank: (rank, calls, the delays of the outputs released after the caller dropped them, in seconds)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_rank, args=(r, world, port, calls, results)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    out: list[tuple[int, int, list[float]]] = []
    while not results.empty():
        out.append(results.get())
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    for rank, calls, delays in run(args.ranks, args.calls):
        late = len(delays)
        tail = f", median {delays[late // 2] * 1e3:.2f} ms, max {delays[-1] * 1e3:.2f} ms" if delays else ""
        print(f"rank {rank}: {late} of {calls} outputs ({late / calls:.1%}) freed after the caller dropped them{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
