"""Data-parallel runs: the same recipe as ``trainer.run`` under ``torch.distributed``, each rank tracked like a
single run.

Recipe, per rank (one process each, top to bottom):

1. ``init_process_group``: gloo on the CPU, NCCL on CUDA (``cuda:<local rank>``).
2. Build the model, adapters and optimizer exactly as ``trainer.build`` does (every rank materializes the whole
   model, as a plain ``from_pretrained`` per rank does), then wrap it for ``plan.sharding``:

   - ``ddp``: ``torch.nn.parallel.DistributedDataParallel`` with its defaults (25 MiB buckets, gradients copied
     into the buckets, ``gradient_as_bucket_view=False``), as the Trainer and accelerate build it;
   - ``fsdp``: FSDP2 ``fully_shard`` on each decoder layer (the model's ``_no_split_modules``, as accelerate's
     transformer auto-wrap picks them), then on the whole model: ``full_shard`` reshards after the forward,
     ``shard_grad_op`` keeps the layers gathered until the backward, ``hybrid_shard`` shards within groups of
     ``shard_group_size`` ranks and replicates across them (a 2-D mesh);
   - ``zero1``-``zero3``: DeepSpeed's engine, ``deepspeed.initialize`` over the model and the optimizer the plan
     names (the client optimizer, as transformers' Trainer hands it over when the config names none) with the
     config ``tuneplan export --format deepspeed`` writes (``estimator.deepspeed_config``). On a machine without a
     GPU DeepSpeed picks its CPU accelerator over the gloo group (it JIT-builds its shared-memory comm op
     with the machine's compiler on first use). The step runs the engine's
     ``backward`` and ``step``. With ``offload`` the config's optimizer section (filled in as transformers' Trainer
     fills its "auto") makes the engine build DeepSpeed's CPU Adam, JIT-built the same way; on the CPU accelerator
     the offloaded state is host memory like the rest. FSDP2's ``offload`` params is ``CPUOffloadPolicy`` (pinned
     on CUDA; on the CPU it moves nothing).

   The optimizer is made over the wrapped model's parameters (FSDP2's sharded DTensors).
3. Each rank trains on its own seeded batch (``seed + rank``), a warm-up step and ``steps`` measured steps, as
   ``trainer.run`` does. CPU: every step under the live-tensor ``MemoryTracker`` (FSDP2's DTensors are unwrapped to
   their local shards; the collectives' buffers are ordinary tensors the tracker sees). CUDA: the allocator's
   counters, per rank.
4. Rank 0 gathers every rank's figures and writes ``{"per_rank": [...], "measured": <the largest rank's>}``.

Command lines::

    python -m trainer.dist --plan plan.json --nproc 2 --out result.json          # CPU: spawns 2 gloo ranks
    torchrun --nproc-per-node 4 -m trainer.dist --plan plan.json --out result.json  # a GPU machine: NCCL

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ranks are torchrun's; otherwise ``--nproc`` processes are
spawned on this machine on a free loopback port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from estimator import CUDA_ALLOC_ROUND, Plan, deepspeed_config

from .build import (
    LEARNING_RATE,
    BuildError,
    Built,
    assemble,
    build_model,
    make_config,
    optimizer_state_tensors,
    stack_module,
    text_vocab_size,
)
from .run import (
    CudaProbe,
    load_config,
    load_plan,
    make_batch,
    resolve_config,
    tracked_figures,
    train_step,
    versions,
    write_json,
)
from .tracker import MemoryTracker, attach_logits_scope, local_tensors


class DistBuildError(BuildError):
    """The plan's sharding cannot run on this stack (DeepSpeed's ZeRO, an uneven hybrid group)."""


# ---------------------------------------------------------------------------------------------------- wrapping


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's decoder layers: the modules whose class is in its ``_no_split_modules`` (what accelerate's
    transformer auto-wrap policy wraps)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def fsdp_mesh(plan: Plan, device: torch.device) -> Any:
    """The device mesh of ``plan``: 1-D over every rank, or (replicate, shard) for ``hybrid_shard``."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if plan.fsdp_strategy != "hybrid_shard":
        return init_device_mesh(device.type, (world,))
    group = plan.shard_group_size or world
    if world % group:
        raise DistBuildError(f"hybrid_shard needs num_gpus ({world}) divisible by shard_group_size ({group})")
    return init_device_mesh(device.type, (world // group, group), mesh_dim_names=("replicate", "shard"))


def wrap(model: nn.Module, plan: Plan, device: torch.device) -> nn.Module:
    """``model`` wrapped for ``plan.sharding`` (see the module docstring)."""
    if plan.sharding == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        ddp.register_comm_hook(_BucketRecorder(), _recording_allreduce)
        return ddp
    if plan.sharding != "fsdp":
        raise DistBuildError(f"{plan.sharding} is DeepSpeed's engine, made with the optimizer (zero_build)")
    from torch.distributed.fsdp import fully_shard

    mesh = fsdp_mesh(plan, device)
    reshard = plan.fsdp_strategy != "shard_grad_op"
    layers = decoder_layers(model)
    if not layers:
        raise DistBuildError("the model names no decoder layer class (_no_split_modules) to shard by")
    kw: dict[str, Any] = {}
    if plan.offload == "params":  # pinned host memory needs CUDA: a CPU run keeps its shards unpinned
        from torch.distributed.fsdp import CPUOffloadPolicy

        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard, **kw)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, **kw)
    return model


def dist_build(config: Mapping[str, Any], plan: Plan, device: torch.device) -> Built:
    """Model + wrapper + optimizer of one rank."""
    model = build_model(config, plan, device)
    vocab = text_vocab_size(make_config(config, plan))
    if plan.sharding.startswith("zero"):
        return zero_build(model, plan, device, vocab)
    wrapped = wrap(model, plan, device)
    built = assemble(wrapped, plan, device, vocab)
    built.lm_head = _inner_lm_head(model)
    return built


TRAINER_AUTO: dict[str, Any] = {"lr": LEARNING_RATE, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
"""What transformers' Trainer puts in a DeepSpeed optimizer section's ``"auto"`` values (its TrainingArguments
defaults, with the trainer's learning rate)."""


class ZeroStep:
    """The optimizer a step sees under DeepSpeed: ``step`` is the engine's (its reduction, clipping, the client
    optimizer's step on the fp32 partitions, the 16-bit copy back, the gradients zeroed), ``state`` the client
    optimizer's state plus the fp32 partitions it steps (what ``optimizer_state_tensors`` counts)."""

    def __init__(self, engine: Any, zero: Any) -> None:
        self.engine, self.zero = engine, zero

    def step(self) -> None:
        self.engine.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        del set_to_none  # the engine's step has zeroed them

    @property
    def state(self) -> dict[Any, dict[str, Any]]:
        out: dict[Any, dict[str, Any]] = dict(self.zero.optimizer.state)
        for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
            for i, t in enumerate(getattr(self.zero, name, None) or ()):
                out[(name, i)] = {"fp32": t}
        return out


def zero_build(model: nn.Module, plan: Plan, device: torch.device, vocab: int) -> Built:
    """DeepSpeed's engine over the model and the plan's optimizer (``deepspeed.initialize``)."""
    if plan.offload_device == "nvme" and not _async_io_available():
        raise DistBuildError(
            "offload_device nvme needs DeepSpeed's async I/O op, which builds against libaio (the libaio-dev "
            "package): install it on the machine that runs the job, or plan offload_device cpu"
        )
    built = assemble(model, plan, device, vocab)
    config = deepspeed_config(plan) | {"zero_allow_untested_optimizer": True}  # what transformers' Trainer adds
    for section in ("offload_optimizer", "offload_param"):  # the exported placeholder path: a scratch folder here
        where = config["zero_optimization"].get(section)
        if isinstance(where, dict) and where.get("device") == "nvme":
            where["nvme_path"] = tempfile.mkdtemp(prefix="tuneplan-nvme-")
    client: Any = built.optimizer
    if "optimizer" in config:  # offload: the engine builds DeepSpeed's CPU Adam from the section, "auto" filled in
        params = config["optimizer"]["params"]
        config["optimizer"]["params"] = {k: TRAINER_AUTO[k] if v == "auto" else v for k, v in params.items()}
        client = None
    trained = [p for p in model.parameters() if p.requires_grad]
    engine, zero, _, _ = stack_module("deepspeed").initialize(
        model=model, optimizer=client, model_parameters=trained, config=config
    )
    built.model, built.optimizer = engine, ZeroStep(engine, zero)  # type: ignore[assignment]
    built.kept["backward"] = engine.backward
    return built


def _async_io_available() -> bool:
    """Whether DeepSpeed's async I/O op (ZeRO-Infinity's NVMe swapping) can be built here."""
    builder = stack_module("deepspeed.ops.op_builder").AsyncIOBuilder()
    return bool(builder.is_compatible(verbose=False))


def _inner_lm_head(model: nn.Module) -> nn.Module | None:
    from .build import output_embeddings

    return output_embeddings(model)


# ---------------------------------------------------------------------------------------------------- tracking


def preregister_local(tracker: MemoryTracker, built: Built, plan: Plan, batch: Mapping[str, torch.Tensor]) -> None:
    """What exists before the step, each under its category (DTensors by their local shards)."""
    trained = "adapters" if plan.adapters else "weights"
    model = built.model
    for p in model.parameters():
        tracker.register_many(local_tensors(p), trained if p.requires_grad else "weights")
        tracker.register(getattr(p, "ds_tensor", None), trained if p.requires_grad else "weights")  # ZeRO-3's part
    for b in model.buffers():
        tracker.register_many(local_tensors(b), "weights")
    from .build import quant_state_tensors

    tracker.register_many(quant_state_tensors(model), "weights")
    for t in optimizer_state_tensors(built.optimizer):
        tracker.register_many(local_tensors(t), "optimizer")
    for buf in wrapper_buffers(model):
        tracker.register(buf, "gradients")
    tracker.register_many(batch.values(), "activations")
    if isinstance(built.optimizer, ZeroStep):  # DeepSpeed's buffers kept between steps (ZeRO-3's reduce bucket...)
        tracker.register_uncounted(_live_tensors(), "gradients")


def _live_tensors() -> list[torch.Tensor]:
    """Every tensor object alive in this process (``gc``), at the start of a step: what a wrapper keeps."""
    import gc

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.device.type != "meta"]


class _BucketRecorder:
    """DDP's gradient buckets, as the last backward handed them to the all-reduce (by bucket index)."""

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}


def _recording_allreduce(state: _BucketRecorder, bucket: Any) -> Any:
    """DDP's default all-reduce (``ddp_comm_hooks.default_hooks.allreduce_hook``: divide, all-reduce in place),
    noting the bucket's flat buffer: the same buffers and the same ops, so the same memory."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    state.buffers[bucket.index()] = bucket.buffer()
    return allreduce_hook(None, bucket)  # type: ignore[arg-type]


# DDP checks a hook's annotations as objects, which ``from __future__ import annotations`` makes strings
_recording_allreduce.__annotations__ = {
    "state": _BucketRecorder,
    "bucket": dist.GradBucket,  # type: ignore[attr-defined]
    "return": torch.futures.Future[torch.Tensor],
}


def wrapper_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The tensors a wrapper keeps between steps: DDP's gradient buckets (as of the last backward)."""
    state = getattr(model, "_comm_hooks", None)
    out: list[torch.Tensor] = []
    for _hook, hook_state in state or ():
        if isinstance(hook_state, _BucketRecorder):
            out += hook_state.buffers.values()
    return out


@contextlib.contextmanager
def dist_tracking(
    tracker: MemoryTracker, built: Built, plan: Plan, batch: Mapping[str, torch.Tensor]
) -> Iterator[None]:
    preregister_local(tracker, built, plan, batch)
    remove_logits = attach_logits_scope(tracker, built.lm_head) if built.lm_head is not None else None
    try:
        with tracker:
            yield
    finally:
        if remove_logits is not None:
            remove_logits()


def _grads_to_tracker(tracker: MemoryTracker, built: Built) -> None:
    for p in built.model.parameters():
        if p.grad is not None:
            tracker.register_many(local_tensors(p.grad), "gradients")


# ---------------------------------------------------------------------------------------------------- one rank


def rank_run(plan: Plan, config: Mapping[str, Any], device: torch.device, steps: int, seed: int) -> dict[str, Any]:
    """Build, wrap, warm up and measure ``steps`` steps on this rank."""
    cuda = device.type == "cuda"
    rank = dist.get_rank()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    built = dist_build(config, plan, device)
    load_time = time.perf_counter() - t0
    batch = make_batch(built.vocab_size, plan, device, seed + rank)
    out: dict[str, Any] = {"rank": rank, "load_time_s": load_time}
    round_to = CUDA_ALLOC_ROUND if cuda else 0
    first = MemoryTracker(round_to=round_to)
    with dist_tracking(first, built, plan, batch):
        loss = train_step(
            built, batch, tracker=first, plan=plan, after_backward=lambda: _grads_to_tracker(first, built)
        )
    out["first_step"] = tracked_figures(first)
    # One more untracked step: DDP rebuilds its buckets in the second iteration's forward, in the order the
    # gradients became ready; from the third on, every step is alike.
    loss = train_step(built, batch, plan=plan)
    tracker = MemoryTracker(round_to=round_to)
    probe = CudaProbe(device) if cuda else None
    times: list[float] = []
    losses = [float(loss.item())]
    for _ in range(steps):
        t0 = time.perf_counter()
        if cuda:
            loss = train_step(built, batch, probe=probe, plan=plan)
            torch.cuda.synchronize(device)
        else:
            with dist_tracking(tracker, built, plan, batch):
                loss = train_step(
                    built, batch, tracker=tracker, plan=plan, after_backward=lambda: _grads_to_tracker(tracker, built)
                )
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.item()))
    out["step_time_s"] = sum(times) / len(times)
    out["loss"] = losses
    out["measured"] = probe.summary() if probe is not None else tracked_figures(tracker)
    return out


def _worker(rank: int, world: int, port: int, plans: list[dict[str, Any]], configs: list[dict[str, Any]],
            steps: int, seed: int, threads: int, results: Any) -> None:  # fmt: skip
    """One spawned rank: join the gloo group, run every plan in turn, put each result on ``results``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for i, (plan_dict, config) in enumerate(zip(plans, configs, strict=True)):
            try:
                results.put((i, rank_run(Plan.from_dict(plan_dict), config, torch.device("cpu"), steps, seed)))
            except Exception as exc:
                results.put((i, {"rank": rank, "error": f"{type(exc).__name__}: {exc}"}))
                raise
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dist_run(
    plan: Plan, config: Mapping[str, Any] | None = None, *, nproc: int | None = None, steps: int = 1, seed: int = 0,
    threads: int = 1, timeout_s: float = 600.0,
) -> dict[str, Any]:  # fmt: skip
    """Spawn ``nproc`` (default ``plan.num_gpus``) gloo ranks on this machine's CPU and gather their figures."""
    return dist_runs([plan], [config], nproc=nproc, steps=steps, seed=seed, threads=threads, timeout_s=timeout_s)[0]


def dist_runs(
    plans: list[Plan], configs: list[Mapping[str, Any] | None] | None = None, *, nproc: int | None = None,
    steps: int = 1, seed: int = 0, threads: int = 1, timeout_s: float = 600.0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Several plans on one spawned group of gloo ranks (each rank imports the stack once), one result each."""
    import torch.multiprocessing as mp

    world = nproc or plans[0].num_gpus
    cfgs = [resolve_config(p, c) for p, c in zip(plans, configs or [None] * len(plans), strict=True)]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    args = ([p.to_dict() for p in plans], cfgs, steps, seed, threads, results)
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        got = _collect(procs, results, world * len(plans), timeout_s)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    by_plan: list[list[dict[str, Any]]] = [[] for _ in plans]
    for i, one in got:
        by_plan[i].append(one)
    return [gather_result(p, c, "cpu", r, steps, seed) for p, c, r in zip(plans, cfgs, by_plan, strict=True)]


def _collect(procs: list[Any], results: Any, expected: int, timeout_s: float) -> list[tuple[int, dict[str, Any]]]:
    """``expected`` results from the ranks; a rank that fails or dies (or a run past ``timeout_s``) ends the run
    with a ``BuildError``."""
    got: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected:
        if not results.empty():
            got.append(results.get())
            if "error" in got[-1][1]:
                raise BuildError(f"rank {got[-1][1]['rank']}: {got[-1][1]['error']}")
            continue
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead and results.empty():
            raise BuildError(f"a rank died (exit code {dead[0]}) before reporting")
        if time.monotonic() > deadline:
            raise BuildError(f"the ranks did not finish within {timeout_s:g} s")
        time.sleep(0.05)
    return got


def gather_result(plan: Plan, cfg: Mapping[str, Any], device: str, per_rank: list[dict[str, Any]], steps: int,
                  seed: int) -> dict[str, Any]:  # fmt: skip
    per_rank = sorted(per_rank, key=lambda r: int(r["rank"]))
    errors = [f"rank {r['rank']}: {r['error']}" for r in per_rank if "error" in r]
    if errors:
        raise BuildError("; ".join(errors))
    top = max(per_rank, key=lambda r: int(r["measured"]["peak_allocated"]))
    return {
        "mode": "real",
        "distributed": {"world_size": len(per_rank), "backend": "nccl" if device == "cuda" else "gloo",
                        "sharding": plan.sharding, "fsdp_strategy": plan.fsdp_strategy},
        "plan": plan.to_dict(),
        "config": dict(cfg),
        "device": device,
        "versions": versions(),
        "steps": steps,
        "seed": seed,
        "oom": False,
        "notes": [],
        "per_rank": per_rank,
        "measured": dict(top["measured"]) | {"rank": top["rank"]},
        "step_time_s": max(float(r["step_time_s"]) for r in per_rank),
        "load_time_s": max(float(r["load_time_s"]) for r in per_rank),
        "loss": top["loss"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- CLI


def torchrun_run(
    plan: Plan, config: Mapping[str, Any] | None, device_name: str, steps: int, seed: int
) -> dict[str, Any] | None:
    """This process as one of torchrun's ranks (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set): NCCL on CUDA (one
    GPU per rank), gloo on the CPU; rank 0 gathers every rank's figures and returns the result, the others None."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    cuda = device_name == "cuda"
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    cfg = resolve_config(plan, config)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        try:
            one = rank_run(plan, cfg, device, steps, seed)
        except Exception as exc:  # reported by rank 0 with the others' figures
            one = {"rank": rank, "error": f"{type(exc).__name__}: {exc}"}
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(one, gathered, dst=0)
    finally:
        dist.destroy_process_group()
    return gather_result(plan, cfg, device_name, list(gathered), steps, seed) if gathered is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure a data-parallel training step of a plan, per rank")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--config")
    parser.add_argument("--nproc", type=int, default=None, help="ranks to spawn on the CPU (default: num_gpus)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="under torchrun: cuda when a GPU is visible, else cpu (spawned ranks: cpu)")  # fmt: skip
    parser.add_argument("--print-result", action="store_true", help="also print 'TUNEPLAN-RESULT <json>' (one line)")
    args = parser.parse_args(argv)
    plan = load_plan(args.plan)
    try:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # under torchrun
            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            result = torchrun_run(plan, load_config(args.config), device, args.steps, args.seed)
            if result is None:
                return 0  # not rank 0: rank 0 writes the result
        else:
            result = dist_run(plan, load_config(args.config), nproc=args.nproc, steps=args.steps, seed=args.seed,
                              threads=args.threads)  # fmt: skip
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, result)
    if args.print_result:  # a Ray job's result comes back in its logs
        print("TUNEPLAN-RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
