"""Data parallelism, per rank: what one GPU holds under DDP, FSDP2 and DeepSpeed ZeRO, and what goes to host RAM.

Every figure here is per rank (one GPU); ``memory.per_rank`` in the contract reports them. Measured on gloo CPU
runs of the trainer (``trainer.dist``: 2 and 4 ranks, DDP and FSDP2 full shard / shard-grad-op, LoRA and full, 2
and 4 layers; docs/accuracy.md) unless a term says otherwise. DDP is within 0.1 % of those runs, FSDP2 full
fine-tuning within 0.1 % (every term derived from torch's ``_fully_shard``, per moment: ``Fsdp``), FSDP2 LoRA 0.6-1.0
% under them (single-GPU terms at its peak moments: the head's forward, the last layer's recompute). A rank whose
root's or a layer's all-gather output gloo frees late (``Fsdp.late_root``, ``Fsdp.late_layer``) is covered by the
range's high edge, not the estimate.

* **DDP** (``torch.nn.parallel.DistributedDataParallel``, defaults): every rank holds the whole model, its
  gradients and optimizer state, plus the reducer's gradient buckets, a flat copy of every gradient in its dtype
  (``gradient_as_bucket_view=False``, the Trainer's and accelerate's default), allocated when DDP is built and kept.
* **FSDP** (FSDP2 ``fully_shard`` on each decoder layer, then on the model): each parameter is sharded on dim 0,
  padded to a multiple of the group (``ceil(dim0 / n)`` rows per rank), and so are its gradient (views into one flat
  reduce-scatter output per layer group) and optimizer state (torch AdamW over the sharded DTensors). Before a
  group runs, its shards are all-gathered into one flat buffer (``n × shard`` bytes) and copied out into unsharded
  parameters, which live until the group reshards: ``full_shard`` after each layer's forward and backward (the
  backward prefetches the next layer's all-gather, so two layers are gathered at once there), ``shard_grad_op``
  only after the backward (every layer stays gathered from its forward to its backward). The root group
  (embeddings, final norm, lm_head) is gathered through the forward's end and again through the whole backward,
  and reduces its gradients (the lm_head's, unsharded until then) only at the backward's end. Each layer's
  backward reduce-scatters its gradients through one flat input, held until the next layer reduces
  (``Fsdp.reduce_pending``); in the forward, a layer's copy-out still holds the group before it, flat
  (``Fsdp.copy_out_at``).
  ``hybrid_shard``: the same within groups of ``shard_group_size``, replicated across them.
* **ZeRO 1/2/3** (DeepSpeed 0.19, the config ``deepspeed_config`` writes): the optimizer steps a flat fp32
  partition of the trained parameters per rank (master copy + AdamW's fp32 states), LoRA's adapters are cast to
  16 bits by the engine, stages 1/2 make two ``reduce_bucket_size`` buckets at each backward, stage 3 keeps one and
  shards the parameters (gathered one layer at a time, the next prefetched): ``zero_state`` in estimator/_memory.py.
  Measured on gloo runs of DeepSpeed's engine (its CPU accelerator; ``trainer.dist``): within 0.1 % on the tiny
  Llama, -0.3 … +1.8 % on a 115M-parameter one (docs/accuracy.md); not yet on GPUs, where its kernels' and NCCL's
  buffers add to it.
* **offload**: ``optimizer`` is ZeRO's ``offload_optimizer``: DeepSpeed's CPU Adam steps on the host, which holds
  the fp32 master partition, its fp32 gradient, the Adam states and pinned 16-bit buffers (``zero_offload``);
  ``params`` also moves the parameters' partitions there (ZeRO-3 ``offload_param``: ``zero_offload_params``;
  FSDP2 ``CPUOffloadPolicy``: the sharded parameters, gradients and optimizer state, ``offload_state``), leaving the
  gathered working set on the GPU. torch rounds each pinned block up to a power of two (``pinned``). ZeRO's offload
  runs on the gloo runs, where host and device are one memory: their sum is measured, the split and the pinned
  rounding are read from the code. FSDP2's offload is modelled: on the CPU it moves nothing, so a gloo run only
  bounds it (between the GPU's share and that share with the whole host offload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._inventory import EMBEDDING, Inventory, Tensor
from ._lora import AdapterPlan
from ._plan import Plan
from ._quant import alloc

LOAD_TENSOR = "tensor"  # loading keeps one checkpoint tensor on the host at a time
LOAD_FULL = "full"  # loading keeps the whole state dict on the host (FSDP's rank 0)


DEEPSPEED_REDUCE_BUCKET = 500_000_000
"""DeepSpeed's ``zero_optimization.reduce_bucket_size`` default in elements (``deepspeed/runtime/zero/config.py``);
``deepspeed_config`` leaves it at that, as accelerate's DeepSpeed plugin does."""


DEEPSPEED_PERSISTENCE = 100_000
"""DeepSpeed ZeRO-3's ``stage3_param_persistence_threshold`` default in elements: a parameter under it stays whole on
every rank (``ds_persist``) beside its partition: LoRA's factors, norms (``partition_parameters.py``)."""
DEEPSPEED_REUSE_DISTANCE = 1_000_000_000
"""DeepSpeed ZeRO-3's ``stage3_max_reuse_distance`` default in elements: a module's parameters stay gathered after
it runs when they are used again within this many elements of the module trace (``partitioned_param_coordinator``)."""
DEEPSPEED_SUB_GROUP = 1_000_000_000
"""DeepSpeed ZeRO-3's ``sub_group_size`` default in elements: its optimizer steps the fp32 partition in sub-groups of
at most this many, one at a time (``stage3.py``, ``_prepare_fp32_grad_for_sub_group``)."""


def deepspeed_config(plan: Plan) -> dict[str, Any]:
    """The DeepSpeed JSON of a plan: micro-batch, accumulation, the ZeRO stage of its sharding, the 16-bit mode, and
    for ``offload`` the host offload of the optimizer (and of ZeRO-3's parameters) with DeepSpeed's AdamW.

    One source: ``tuneplan export --format deepspeed`` writes it, ``trainer.dist`` runs it, and the ZeRO terms of the
    memory model read their buffers' sizes from it (``overlap_comm``: two reduce buckets, not one)."""
    stage = int(plan.sharding[-1]) if plan.sharding.startswith("zero") else 0
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": plan.batch_size,
        "gradient_accumulation_steps": plan.grad_accum_steps,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": plan.dtype == "bfloat16"},
        "fp16": {"enabled": plan.dtype == "float16"},
    }
    if stage and plan.offload != "none":
        where: dict[str, Any] = {"device": plan.offload_device, "pin_memory": True}
        if plan.offload_device == "nvme":
            where["nvme_path"] = NVME_PATH
        zero["offload_optimizer"] = dict(where)
        if plan.offload == "params":
            zero["offload_param"] = dict(where)
        # ZeRO-Offload steps on the host with DeepSpeed's CPU Adam, which the engine builds from this section (a
        # torch optimizer handed in is refused: ``zero_force_ds_cpu_optimizer``); transformers fills in "auto"
        config["optimizer"] = {"type": "AdamW", "params": dict.fromkeys(OFFLOAD_OPTIMIZER_PARAMS, "auto")}
    return config


NVME_PATH = "/local_nvme"
"""The ``nvme_path`` an exported ZeRO-Infinity config names (DeepSpeed's documentation's example): the user's own
NVMe mount goes there."""
NVME_PARAM_BUFFERS = (5, 100_000_000)
"""DeepSpeed's ``offload_param`` ``buffer_count`` and ``buffer_size`` defaults (elements; ``zero/offload_config.py``):
the pinned host buffers parameters are swapped in and out of NVMe through."""
NVME_PARAM_MAX_IN_CPU = 1_000_000_000
"""``offload_param.max_in_cpu`` default (elements): the trained parameters' 16-bit partition kept in host RAM."""
NVME_OPTIMIZER_BUFFERS = 4
"""``offload_optimizer.buffer_count`` default: the pinned host buffers, one sub-group each, the optimizer state is
swapped through."""

OFFLOAD_OPTIMIZER_PARAMS = ("lr", "betas", "eps", "weight_decay")
"""The ``optimizer.params`` an offloaded DeepSpeed config leaves to transformers' Trainer (``"auto"``: its
TrainingArguments' learning rate, Adam betas and epsilon, weight decay)."""


def shard_ranks(plan: Plan) -> int:
    """GPUs one copy of the sharded state is spread over (1 for DDP and a single GPU)."""
    if plan.num_gpus == 1 or plan.sharding == "ddp":
        return 1
    if plan.sharding == "fsdp" and plan.fsdp_strategy == "hybrid_shard":
        return plan.shard_group_size or plan.num_gpus
    return plan.num_gpus


def shard_bytes(nbytes: int, dim0: int, n: int) -> int:
    """One rank's share of a tensor of ``nbytes`` with ``dim0`` rows, sharded on dim 0 over ``n`` ranks: FSDP2 pads
    dim 0 to a multiple of ``n`` (``ceil(dim0 / n)`` rows each)."""
    if n == 1 or dim0 <= 0:
        return nbytes
    row = nbytes // dim0 if nbytes % dim0 == 0 else 0
    if row == 0:  # not row-major whole rows (a packed 4-bit weight): shard its bytes as one flat dimension
        return -(-nbytes // n)
    return -(-dim0 // n) * row


@dataclass(frozen=True)
class Held:
    """One parameter tensor as a rank holds it (bytes of one instance, repeated over ``layers``)."""

    nbytes: int
    dim0: int
    layers: int
    trainable: bool
    elements: int
    per: int  # bytes per element (0 for packed / quantized storage)


@dataclass(frozen=True)
class Fsdp:
    """FSDP2's per-rank terms: what is gathered at each moment of the step, and the gradient buffers its backward
    holds beyond each parameter's gradient shard."""

    n: int
    root: int  # the root group's parameters, gathered (embeddings, final norm, lm_head, their adapters)
    layer: int  # one decoder layer's parameters, gathered (the all-gather output is as large)
    layers: int
    reshard: bool  # full_shard / hybrid_shard: each layer is freed after its forward
    head_grads: int = 0  # the root group's gradients made before the layers' backward, beyond their shard
    reduce_input: int = 0  # one decoder layer's gradients as the flat reduce-scatter input

    def gathered(self, moment: str) -> int:
        """Bytes gathered beyond the shards at ``moment``: ``forward`` (the head's peak: the root gathered, the last
        layer's all-gather output, and every layer under shard_grad_op), ``loss_backward`` (the last layer's
        all-gather prefetched), ``backward_last`` / ``backward_first`` (``gathered_at`` the last / the first
        layer), ``optimizer`` (nothing: every group resharded)."""
        if moment == "optimizer":
            return 0
        if moment == "backward_last":
            return self.gathered_at(self.layers - 1)
        if moment == "backward_first":
            return self.gathered_at(0)
        every = self.layers * self.layer
        # FSDP2 keeps each all-gather's output until the next all-gather is issued (``AllGatherState``), so after
        # the last layer's forward its output is still held when the head runs
        per_moment = {
            "forward": self.layer + (0 if self.reshard else every),
            "loss_backward": self.layer if self.reshard else every,
        }
        return self.root + per_moment[moment]

    def gathered_at(self, index: int) -> int:
        """Bytes gathered beyond the shards in the backward of decoder layer ``index`` (0: the first).

        The root group stays gathered through the whole backward (its pre-backward hook gathers it again at the
        loss). ``full_shard``: the layer's own parameters, copied out of its all-gather (``FSDPParamGroup.
        pre_backward`` → ``unshard``, ``wait_for_unshard``: the flat output is dropped right after the copy-out in
        the backward), and the next layer's flat all-gather output, prefetched by the same hook
        (``_backward_prefetch``) and held until that layer's own pre-backward (none below the first layer).
        ``shard_grad_op``: every layer from the first to this one, gathered since the forward (each is resharded
        after its backward, ``reshard_after_backward``)."""
        held = self.layer * (1 + min(index, 1)) if self.reshard else (index + 1) * self.layer
        return self.root + held

    @property
    def late_root(self) -> int:
        """The root group's flat all-gather output, which a collective backend may free after the loss's backward
        has begun (``full_shard`` re-gathers the root at the start of every backward: ``fully_shard(model,
        reshard_after_forward=True)`` reshards it after the forward). FSDP2 drops the buffer right after its
        copy-out, but gloo's worker thread holds the collective's work, and with it the buffer, until its own
        bookkeeping is done (``ProcessGroupGloo::runLoop``): timing, not a tensor the step keeps, so not in the
        estimate; the range's high edge covers it (``bench/gloo_release.py`` measures the effect alone).
        ``shard_grad_op`` keeps the root gathered from the forward: nothing is re-gathered."""
        return self.root if self.reshard else 0

    @property
    def late_layer(self) -> int:
        """A decoder layer's flat all-gather output in the backward, freed late like the root's (``late_root``):
        ``full_shard`` re-gathers each layer in its pre-backward (or prefetches it in the layer after's) and drops
        the flat output after the copy-out, but gloo's worker thread may hold it while the layer's backward runs
        (seen on the 2-rank gloo runs of tests/trainer/test_dist_runs.py, with and without ``CPUOffloadPolicy``: the
        backward's peak higher by exactly one layer's output, or part of it, on 5 of 40 rank-runs each, ``python -m
        bench.gloo_release --fsdp 20``). Not in the estimate; the range's high edge covers it. ``shard_grad_op``
        re-gathers nothing in the backward."""
        return self.layer if self.reshard else 0

    def copy_out_at(self, index: int) -> int:
        """Bytes gathered beyond the shards while decoder layer ``index`` copies its parameters out in the forward:
        the layer's flat all-gather output and its copied-out parameters, and the group before it (the root for the
        first layer) still gathered, flat: ``wait_for_unshard`` drops ``comm_ctx.all_gather_state`` before the
        copy-out, but its own ``prev_all_gather_state`` (the walrus-bound local) holds that output until it
        returns. Under ``shard_grad_op`` every layer before it stays gathered too."""
        previous = self.root if index == 0 else self.layer
        kept = 0 if self.reshard else index * self.layer
        return self.root + previous + 2 * self.layer + kept

    def reduce_pending(self, index: int) -> int:
        """The reduce-scatter input held in the backward of decoder layer ``index``: the layer after it reduced
        last (``foreach_reduce`` copies its unsharded gradients into one flat input, and FSDP2 keeps the input in
        ``reduce_scatter_states`` until the next group's ``post_backward``; the last one is dropped at the end of
        the backward). None in the last layer's backward, the first to reduce."""
        return self.reduce_input if index < self.layers - 1 else 0


def fsdp_terms(held: list[Held], root_held: list[Held], n: int, layers: int, plan: Plan, head_grads: int = 0) -> Fsdp:
    """The gathered working set of FSDP2 over ``n`` ranks (``held``: every parameter tensor; ``root_held``: those
    outside the decoder layers; ``head_grads``: the root group's gradients made before the layers' backward,
    unsharded)."""
    layer = sum(n * shard_bytes(h.nbytes, h.dim0, n) for h in held if h.layers > 1)
    root = sum(n * shard_bytes(h.nbytes, h.dim0, n) * h.layers for h in root_held)
    reduce_input = sum(n * shard_bytes(h.nbytes, h.dim0, n) for h in held if h.layers > 1 and h.trainable)
    return Fsdp(n=n, root=root, layer=layer, layers=layers, reshard=plan.fsdp_strategy != "shard_grad_op",
                head_grads=head_grads - -(-head_grads // n), reduce_input=reduce_input)  # fmt: skip


def base_tensor_dim0(t: Tensor) -> int:
    """The tensor's first dimension as torch holds it (an ``nn.Embedding`` / ``nn.Linear`` weight: rows)."""
    return t.shape[0] if t.shape else 1


LOAD_WORKERS = 4  # transformers 5's loading threads (``core_model_loading.GLOBAL_WORKERS = min(4, os.cpu_count())``)
CHECKPOINT_BYTES = 2  # bytes per element of the checkpoint read: a 16-bit safetensors file, as the Hub's models ship
CPU_QUANTIZE_BYTES = {"nf4": 14, "fp4": 14, "int8": 10}  # bitsandbytes' CPU quantize temporaries per element


def load_bytes(plan: Plan) -> int:
    """Bytes per element of a non-quantized weight as ``from_pretrained`` makes it (``trainer.build.base_dtype``)."""
    if plan.method == "full" and plan.mixed_precision:
        return 4
    return 4 if plan.dtype == "float32" else 2


def loading_host_bytes(inv: Inventory, plan: Plan) -> tuple[int, str]:
    """Anonymous host RAM that loading holds beyond the process and the model's own tensors, per rank, and how it
    loads.

    From transformers 5's loader (``modeling_utils`` opens every safetensors file with ``safe_open(...,
    backend="mmap")``; ``core_model_loading.convert_and_load_state_dict_in_model`` materializes each tensor with
    ``tensor[...].to(device, dtype)``): ``tensor[...]`` is a zero-copy view of the mapped file, so a tensor whose
    dtype does not change is copied from the page cache straight to the GPU with no host copy. Counted:

    * a dtype change (a 16-bit checkpoint read into fp32 weights: full fine-tuning with mixed precision, or
      ``dtype`` float32) on a GPU: torch's blocking host-to-device copy converts on the host (``copy_`` with
      temporaries, ``aten/src/ATen/native/cuda/Copy.cu``), an fp32 copy per tensor in flight, and the loader's
      ``LOAD_WORKERS`` threads each hold one: the ``LOAD_WORKERS`` largest tensors in fp32 (bitsandbytes'
      quantize-on-load loads without threads: its largest non-quantized tensor);
    * quantize-on-load on the CPU device: bitsandbytes' CPU ``quantize_4bit`` (fp32 copy, scaled copy, int32 codes,
      uint8 codes and the packed halves: 14 bytes per element of the largest quantized linear; ``int8_vectorwise_
      quant``: 10); on a GPU it quantizes there (no host copy);
    * on the CPU device a converted tensor is the weight itself (counted by the training peak): nothing beyond.

    FSDP (accelerate's ``cpu_ram_efficient_loading``, the documented way to load once rather than once per rank):
    rank 0 holds the whole state dict in the load dtype and broadcasts it (modelled, not measured). The mapped
    checkpoint pages a load reads are resident (``RssFile``, in ``top``'s RES) until the files close, but they are
    clean page cache the kernel reclaims under pressure: ``mapped_bytes``, reported, not counted.

    Measured (``python -m bench.host_ram``, docs/accuracy.md): a 311 M-parameter Llama's bf16 load adds 0 MiB of
    anonymous memory (the weights stay views of the file), fp32 from bf16 on the CPU keeps exactly its fp32
    weights with no transient, QLoRA on the CPU peaks 13.0 bytes per element of the largest linear above its
    kept weights (14 modelled). The GPU terms are from torch's and transformers' code, not measured here.
    """
    per, cpu = load_bytes(plan), plan.device == "cpu"
    if plan.sharding == "fsdp" and plan.num_gpus > 1:
        return sum(t.numel * per * t.layers for t in inv), LOAD_FULL
    if plan.quantized and cpu:
        largest = max((t.numel for t in inv if t.bnb_quantized), default=0)
        return largest * CPU_QUANTIZE_BYTES[plan.quant_type], LOAD_TENSOR
    if cpu or per == CHECKPOINT_BYTES:
        return 0, LOAD_TENSOR
    if plan.quantized:
        return per * max((t.numel for t in inv if not t.bnb_quantized), default=0), LOAD_TENSOR
    sizes = sorted((t.numel for t in inv for _ in range(min(t.layers, LOAD_WORKERS))), reverse=True)
    return per * sum(sizes[:LOAD_WORKERS]), LOAD_TENSOR


def mapped_bytes(inv: Inventory, plan: Plan) -> int:
    """Checkpoint bytes a load reads through the memory map (resident, reclaimable; see ``loading_host_bytes``): on
    a GPU every tensor (each is copied to the device); on the CPU device the tensors converted or quantized (a
    tensor kept in the checkpoint's dtype stays an unread view of the file until training touches it)."""
    if plan.device != "cpu" or load_bytes(plan) != CHECKPOINT_BYTES:
        return sum(t.total for t in inv) * CHECKPOINT_BYTES
    if plan.quantized:
        return sum(t.total for t in inv if t.bnb_quantized) * CHECKPOINT_BYTES
    return 0


def adapter_held(adapters: AdapterPlan, plan: Plan, per_saved: int) -> list[Held]:
    """The trainable adapter tensors (LoRA A and B, DoRA magnitude: fp32; ``modules_to_save`` copies)."""
    out: list[Held] = []
    r = plan.lora_r
    for a in adapters.adapted:
        out += [Held(4 * r * a.in_features, r, a.layers, True, r * a.in_features, 4),
                Held(4 * r * a.out_features, a.out_features, a.layers, True, r * a.out_features, 4)]  # fmt: skip
        if plan.use_dora:
            out.append(Held(4 * a.out_features, a.out_features, a.layers, True, a.out_features, 4))
    for t in adapters.saved_modules:
        out.append(Held(t.numel * per_saved, base_tensor_dim0(t), t.layers, True, t.numel, per_saved))
    return out


def is_root_tensor(t: Tensor) -> bool:
    """Held by the root group (outside the decoder layers): embeddings, final norm, lm_head."""
    return t.layers == 1 or t.kind == EMBEDDING


def sharded_alloc(items: list[Held], n: int, cuda: bool) -> int:
    """Bytes of the shards of ``items`` on one rank (each its own allocation)."""
    return sum(alloc(shard_bytes(h.nbytes, h.dim0, n), cuda) * h.layers for h in items)


__all__ = [
    "CHECKPOINT_BYTES",
    "CPU_QUANTIZE_BYTES",
    "LOAD_FULL",
    "LOAD_TENSOR",
    "LOAD_WORKERS",
    "Fsdp",
    "Held",
    "adapter_held",
    "base_tensor_dim0",
    "fsdp_terms",
    "is_root_tensor",
    "load_bytes",
    "loading_host_bytes",
    "mapped_bytes",
    "shard_bytes",
    "shard_ranks",
    "sharded_alloc",
]
