"""When gloo frees a collective's output: how often it outlives the caller's last reference, and by how long.

Each rank calls ``dist.all_gather_into_tensor(out, inp)`` (synchronous: it returns after the work's ``wait()``),
drops its only reference to ``out`` and checks whether the output's storage was released at once (a weakref
callback on its ``UntypedStorage``). ``ProcessGroupGloo::runLoop`` marks a work completed inside ``execute`` and
only then, back on its worker thread, drops its own reference to the work (``workInProgress_[i].reset()``), which
holds the work's tensors: when that thread is not scheduled at once, the buffer outlives the caller. FSDP2's
all-gather outputs are such buffers (docs/accuracy.md, the per-rank gloo runs).

With ``--fsdp N`` it runs the trainer's FSDP2 full fine-tune of the tiny Llama on 2 gloo ranks N times, with and
without ``CPUOffloadPolicy`` (one group of ranks runs both plans, the offload one first, as
tests/trainer/test_dist_runs.py does), and counts each rank's peak by how far it is above the lowest peak of all
(the timely one: the same tensors with and without offload on the CPU): 0 when no output was freed late at the
peak, up to one decoder layer's flat all-gather output (``Fsdp.late_layer``) when one was, the estimate's range
printed beside it.

    python -m bench.gloo_release            # 4 ranks x 3,000 all-gathers of 128 KiB, about a minute on 2 cores
    python -m bench.gloo_release --fsdp 20  # 20 x 2 plans x 2 ranks, about 4 minutes on 2 cores
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


def fsdp_peaks(runs: int) -> dict[str, list[int]]:
    """Per plan (``offload=params``, ``offload=none``): every rank's peak less the timely one, over ``runs`` runs."""
    from tests.trainer.trainer_cases import dist_plan
    from trainer.dist import dist_runs

    plans = [dist_plan("full", "fsdp", 2).replace(offload="params"), dist_plan("full", "fsdp", 2)]
    above: dict[str, list[int]] = {p.offload: [] for p in plans}
    for _ in range(runs):
        for p, result in zip(plans, dist_runs(plans), strict=True):
            above[p.offload] += [int(r["measured"]["peak_allocated"]) for r in result["per_rank"]]
    timely = min(min(v) for v in above.values())  # the same tensors with and without offload on the CPU
    return {k: sorted(v - timely for v in vals) for k, vals in above.items()}


def print_fsdp(runs: int) -> None:
    from estimator import estimate
    from tests.trainer.trainer_cases import dist_plan

    mem = estimate(dist_plan("full", "fsdp", 2)).memory
    low, high = mem.tensor_range
    print(f"estimate without offload: {mem.peak_allocated:,} B, range {low:,} .. {high:,} B")
    for offload, extra in fsdp_peaks(runs).items():
        late = [e for e in extra if e]
        sizes = ", ".join(f"+{e:,} B" for e in sorted(set(late)))
        print(f"offload={offload}: {len(late)} of {len(extra)} rank-runs above the timely peak ({sizes or 'none'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--fsdp", type=int, default=0, metavar="N", help="N runs of the FSDP2 plans instead")
    args = parser.parse_args(argv)
    if args.fsdp:
        print_fsdp(args.fsdp)
        return 0
    for rank, calls, delays in run(args.ranks, args.calls):
        late = len(delays)
        tail = f", median {delays[late // 2] * 1e3:.2f} ms, max {delays[-1] * 1e3:.2f} ms" if delays else ""
        print(f"rank {rank}: {late} of {calls} outputs ({late / calls:.1%}) freed after the caller dropped them{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
