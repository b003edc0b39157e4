"""Training memory: the totals are derived from named parts, and sharding divides what it should."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from estimator import (
    COMPONENTS,
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    CUDA_RUNTIME_BYTES,
    TENSOR_COMPONENTS,
    ConfigError,
    Estimate,
    EstimatorError,
    HeadLoss,
    Plan,
    adapter_plan,
    build_inventory,
    catalog,
    dtype_flow,
    estimate,
    forward_activations,
    head_loss,
    layer_sizes,
    parse_config,
)

LIVE = TENSOR_COMPONENTS  # live tensors at the peak

MODELS = ("llama-3.1-8b", "qwen2.5-1.5b", "mixtral-8x7b", "gpt2", "gemma-2-9b")


def _mem(**kw: object) -> dict:
    return estimate(Plan(**{"lora_dropout": 0.0, "seq_len": 1024} | kw)).to_dict()["memory"]  # type: ignore[arg-type]


def _term(mem: dict, name: str) -> int:
    return next(t["bytes"] for t in mem["terms"] if t["name"] == name)


@pytest.mark.parametrize(
    "model,method,sharding,num_gpus,device,gc",
    list(
        itertools.product(MODELS, ("full", "lora", "qlora"), ("ddp", "zero3"), (1, 4), ("cuda", "cpu"), (True, False))
    ),
)
def test_components_add_up_to_the_peak(model: str, method: str, sharding: str, num_gpus: int, device: str,
                                       gc: bool) -> None:  # fmt: skip
    mem = _mem(model=model, method=method, sharding=sharding, num_gpus=num_gpus, device=device,
               gradient_checkpointing=gc)  # fmt: skip
    comps = mem["components"]
    assert min(comps.values()) >= 0
    context = _term(mem, "cuda_context")
    assert sum(comps.values()) == mem["total"]
    assert sum(comps[c] for c in LIVE) + comps["overhead"] == mem["peak_allocated"] + context
    assert mem["peak_allocated"] == max(mem["phases"].values()) + (CUBLAS_WORKSPACE_BYTES if device == "cuda" else 0)
    assert mem["peak_allocated"] <= mem["peak_reserved"] <= mem["total"]
    if device == "cpu":
        assert context == 0 and mem["total"] == mem["peak_allocated"] == mem["peak_reserved"]
    else:
        assert context == CUDA_CONTEXT_BYTES + CUDA_RUNTIME_BYTES


def test_zero_stages_shard_what_they_say() -> None:
    one = _mem(model="llama-3.1-8b", method="full")["components"]
    z1 = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero1")["components"]
    z2 = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero2")["components"]
    z3 = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero3")["components"]
    # DeepSpeed's optimizer steps one flat fp32 partition per rank: the master copy and AdamW's two fp32 states,
    # 12 B an element over 8 GPUs (bf16 AdamW alone keeps 4 B an element: its two states in the parameters' dtype)
    params = 8_030_261_248
    part = -(-params // 8)
    assert one["optimizer"] == 2 * 2 * params
    assert z1["optimizer"] == 3 * -(-4 * part // 512) * 512
    assert z1["weights"] == one["weights"]
    assert z2["optimizer"] == z1["optimizer"]
    assert z3["weights"] < one["weights"] // 4  # a shard plus two gathered layers
    # the two gathered layers are two whole decoder layers (bf16): Llama-3.1-8B's embeddings and lm_head are
    # 128256 x 4096 each, its final norm 4096, the rest is 32 decoder layers
    layer = (one["weights"] - 2 * 128256 * 4096 * 2 - 4096 * 2) / 32
    assert 2 * layer * 0.999 < z3["weights"] - one["weights"] / 8 < 2 * layer * 1.001


def test_zero_offload_moves_deepspeeds_own_host_buffers() -> None:
    """ZeRO-2 ``offload_optimizer`` (DeepSpeed 0.19, ``stage_1_and_2.py``) on 2 GPUs, Llama-3.1-8B full: the host
    holds the fp32 master partition and its fp32 gradient, the 16-bit copy-back buffer and a 16-bit buffer of the
    largest parameter (the embeddings), all pinned, each block rounded up to a power of two by torch's pinned
    allocator; and CPU Adam's two fp32 states. The GPU loses the optimizer state and gains that buffer's twin."""
    params, largest = 8_030_261_248, 128256 * 4096
    part = params // 2
    pinned = {4 * part: 2**34, 2 * part: 2**33, 2 * largest: 2**30}  # each size and its power of two
    assert all(2 ** (n.bit_length() - 1) < n <= p == 2 ** (n.bit_length()) for n, p in pinned.items())
    base = _mem(model="llama-3.1-8b", method="full", num_gpus=2, sharding="zero2")
    off = _mem(model="llama-3.1-8b", method="full", num_gpus=2, sharding="zero2", offload="optimizer")
    assert off["host"]["offload"] == 2 * 2**34 + 2**33 + 2**30 + 2 * 4 * part
    assert off["components"]["optimizer"] == 0 < base["components"]["optimizer"]
    assert off["host_peak"] == off["host"]["runtime"] + max(off["host"]["loading"], off["host"]["offload"])
    # on one GPU too (ZeRO-Offload's own case): before, the offload was dropped there and the host under-counted
    one = _mem(model="llama-3.1-8b", method="full", num_gpus=1, sharding="zero2", offload="optimizer")
    assert one["host"]["offload"] > 16 * params and one["components"]["optimizer"] == 0
    # a CPU run pins nothing: the same buffers at their own sizes
    cpu = _mem(model="llama-3.1-8b", method="full", num_gpus=2, sharding="zero2", offload="optimizer", device="cpu")
    assert cpu["host"]["offload"] == 2 * 4 * part + 2 * part + 2 * largest + 2 * 4 * part


def test_zero3_offload_moves_the_gradient_partition_and_bounds_the_reuse_window() -> None:
    """ZeRO-3 ``offload_optimizer`` moves the 16-bit gradient partition to the host (``grad_partitions_flat_buffer``)
    beside the fp32 master, its fp32 gradient and CPU Adam's states; ``offload_param`` also every parameter's 16-bit
    partition, leaving the gathered layers. The range's high edge carries what the reuse window may keep gathered
    (1e9 elements of Llama-3.1-8B's 8e9, twice: parameters and all-gather buffers)."""
    from estimator import DEEPSPEED_REDUCE_BUCKET

    z3 = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero3")
    opt = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero3", offload="optimizer")
    par = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero3", offload="params")
    assert opt["components"]["gradients"] == 2 * DEEPSPEED_REDUCE_BUCKET  # the bucket only: the partition moved
    assert par["components"]["weights"] < opt["components"]["weights"] - 1_900_000_000  # 8e9 x 2 B / 8 moved
    assert par["host"]["offload"] > opt["host"]["offload"] + 2_000_000_000  # pinned one parameter at a time
    layer = 218_112_000 * 2  # one Llama-3.1-8B decoder layer, bf16
    window = (1_000_000_000 + layer // 2) * 2
    high = z3["range"]["peak_allocated"][1] - z3["peak_allocated"]
    assert high >= 2 * window + 2 * layer


def test_zero3_keeps_a_model_within_the_reuse_distance_gathered_through_the_step() -> None:
    """DeepSpeed releases a module's parameters only if their next use is beyond ``stage3_max_reuse_distance``
    (1e9 elements) of the step's trace: a smaller model stays gathered whole, with as many bytes of all-gather
    buffers (the gloo run of a 115M Llama with parameter offload: -13.79 % with two layers held). Qwen2.5-0.5B's
    partitioned parameters (all but those under ``stage3_param_persistence_threshold``, 1e5 elements: norms and
    biases) are held so at the loss; Llama-3.1-8B's 8e9 keep two layers, its window in the range's high edge."""
    small = _mem(model="qwen2.5-0.5b", method="lora", num_gpus=4, sharding="zero3")
    assert small["peak_phase"] == "loss_backward"
    config = next(m.config for m in catalog.models() if m.id == "qwen2.5-0.5b")
    inv = build_inventory(parse_config(config))
    partitioned = sum(t.total for t in inv if t.numel >= 100_000)
    assert partitioned < 1_000_000_000
    two_layers = 2 * 2 * sum(t.total for t in inv if t.layers > 1) // inv.arch.num_hidden_layers  # bf16
    assert _term(small, "zero3_reused") == 2 * 2 * partitioned - two_layers
    big = _mem(model="llama-3.1-8b", method="full", num_gpus=8, sharding="zero3")
    assert _term(big, "zero3_reused") == 0


def test_zero_infinity_pages_the_state_to_nvme_through_host_buffers() -> None:
    """ZeRO-3 with ``offload_device`` nvme (DeepSpeed 0.19's defaults, read from its code): the fp32 master, its
    gradient and the Adam states (16 B an element of the rank's partition) and, with offload params, every 16-bit
    parameter partition go to the NVMe path; the host keeps 4 page-locked swap buffers of the largest sub-group in
    fp32, that sub-group's fp32 gradient, the 16-bit gradient partition (pinned, a power of two) and, with offload
    params, 5 buffers of 1e8 16-bit elements and the trained partition (pinned). The GPU holds what it holds with
    cpu offload."""
    params = 8_030_261_248
    part = -(-params // 8)  # 1,003,782,656 elements: one sub-group of at most 1e9, and a second of the rest
    base = {"model": "llama-3.1-8b", "method": "full", "num_gpus": 8, "sharding": "zero3"}
    cpu = _mem(**base, offload="optimizer")
    opt = _mem(**base, offload="optimizer", offload_device="nvme")
    par = _mem(**base, offload="params", offload_device="nvme")
    assert opt["host"]["nvme"] == 16 * part
    assert opt["host"]["offload"] == 4 * 4 * 10**9 + 4 * 10**9 + 2**31  # 2 B x part: 2.0 GB, pinned as 2 GiB
    assert opt["peak_allocated"] == cpu["peak_allocated"] and cpu["host"]["nvme"] == 0
    assert par["host"]["nvme"] > opt["host"]["nvme"] + 2 * params // 8 * 0.99  # + the 16-bit partitions
    assert par["host"]["offload"] == opt["host"]["offload"] + 5 * 10**8 * 2 + 2**31
    assert any("ZeRO-Infinity" in n and "sub_group_size" in n for n in opt["notes"])
    assert opt["per_rank"]["basis"] == "modelled" and cpu["per_rank"]["basis"] == "measured"


def test_zero_buffers_are_deepspeeds_default_buckets() -> None:
    """Stages 1/2 make two reduce buckets of 5e8 16-bit elements at each backward (overlap_comm), gone by the
    optimizer step; stage 3 keeps one with its 16-bit gradient partition. LoRA's adapters are 16-bit under the
    engine."""
    from estimator import DEEPSPEED_REDUCE_BUCKET

    lora = _mem(model="llama-3.1-8b", method="lora")
    z2 = _mem(model="llama-3.1-8b", method="lora", num_gpus=2, sharding="zero2")
    z3 = _mem(model="llama-3.1-8b", method="lora", num_gpus=2, sharding="zero3")
    assert z2["components"]["adapters"] * 2 == lora["components"]["adapters"]
    bucket = 2 * DEEPSPEED_REDUCE_BUCKET  # bytes
    made = (z2["phases"]["backward"] - z2["phases"]["forward"]) - (
        lora["phases"]["backward"] - lora["phases"]["forward"]
    )
    assert 2 * bucket <= made < 2 * bucket + lora["components"]["adapters"]  # + the gradient partition
    assert z2["phases"]["optimizer"] < z2["phases"]["forward"]  # the buckets are gone
    assert bucket <= z3["components"]["gradients"] < bucket + lora["components"]["adapters"]


def test_ddp_replicates_and_adds_gradient_buckets() -> None:
    one = _mem(model="qwen2.5-1.5b", method="full")
    ddp = _mem(model="qwen2.5-1.5b", method="full", num_gpus=4, sharding="ddp")
    assert ddp["components"]["weights"] == one["components"]["weights"]
    assert ddp["peak_allocated"] > one["peak_allocated"]


def test_qlora_fp32_gqa_attention_on_cuda_uses_the_math_path() -> None:
    """Measured on an H200 (bench/results/gpu_h200.json): b·a·s² fp32 per layer without checkpointing."""
    cuda = _mem(model="llama-3.1-8b", method="qlora", gradient_checkpointing=False, seq_len=2048)
    cpu = _mem(model="llama-3.1-8b", method="qlora", gradient_checkpointing=False, seq_len=2048, device="cpu")
    per_layer_s2 = 4 * 32 * 2048 * 2048
    assert _term(cuda, "activations_per_layer") - _term(cpu, "activations_per_layer") >= per_layer_s2
    assert any("math path" in n for n in cuda["notes"])
    lora = _mem(model="llama-3.1-8b", method="lora", gradient_checkpointing=False, seq_len=2048)
    assert not any("math path" in n for n in lora["notes"])


def test_o_proj_input_is_its_own_tensor_on_the_math_path() -> None:
    """SDPA's math path saves q, k, v and the probabilities but not its output, which comes out in (b, heads, s, d):
    transformers' ``transpose(1, 2).contiguous()`` copies it, and o_proj keeps that copy (QLoRA without dropout: the
    adapter saves its input itself). A fused kernel's output is the copy's source, saved already. Found on the CPU
    grid's live tensors (`llama-qlora-math-gc`: -1.76 % before, one b·s·h fp32; held by the real run in
    tests/trainer/test_accuracy.py, as the rotary ``torch.cat`` rule is by `phi3-qlora-gc`)."""
    T, qd, kd, heads = 1024, 4096, 1024, 32  # Llama-3.1-8B, batch 1, 1,024 tokens; one layer

    def per_layer(backend: str) -> int:
        mem = _mem(model="llama-3.1-8b", method="full", gradient_checkpointing=False, sdpa_backend=backend)
        return _term(mem, "activations_per_layer")

    math = 3 * 4 * T * qd + 4 * heads * T * T + 2 * T * qd  # fp32 q, k, v, probabilities; o_proj's bf16 input
    flash = 2 * T * (2 * qd + 2 * kd) + 4 * T * heads  # bf16 q, k, v, output (o_proj's input), log-sum-exp
    assert per_layer("math") - per_layer("flash") == math - flash


def test_adapter_bytes_count_every_trainable_parameter_dora_on_embeddings_too() -> None:
    """Adapters in memory are 4 B for each parameter PEFT trains (its count: ``params.lora``)."""
    for targets in (["embed_tokens", "q_proj"], "all-linear"):
        plan = {"model": "llama-3.2-1b", "method": "lora", "use_dora": True, "target_modules": targets,
                "seq_len": 512, "device": "cpu"}  # fmt: skip
        d = estimate(Plan.from_dict(plan)).to_dict()
        assert d["memory"]["components"]["adapters"] == 4 * d["params"]["lora"]


def test_saved_lora_inputs_are_counted_by_what_each_adapted_module_reads() -> None:
    """A dense MLP's ``gate_proj`` and a shared expert's ``gate_proj`` share a leaf name but not a layer: a LoRA on
    one adds its saved input (dropout copy + mask + lora_A output) to its own layers only."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "qwen2_moe.json"
    cfg = json.loads(path.read_text()) | {"num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3]}

    def activations(*targets: str) -> int:
        plan = Plan(config=cfg, method="lora", target_modules=("k_proj", *targets), lora_dropout=0.1,
                    gradient_checkpointing=False, device="cpu", seq_len=64)  # fmt: skip
        mem = estimate(plan).memory
        assert mem.peak_phase == "loss_backward"
        return mem.components["activations"]

    base = activations()
    dense = activations("mlp.gate_proj") - base  # 4 dense layers (0, 2, 3, 4)
    shared = activations("shared_expert.gate_proj") - base  # 2 MoE layers (1, 5)
    both = activations("gate_proj") - base
    assert dense > 0 and shared > 0
    assert dense // 4 == shared // 2 and dense % 4 == shared % 2 == 0
    assert dense + shared == both


def _many_plans() -> list[Plan]:
    """Every catalog model × method × device × optimizer (paged or not) × checkpointing × one / four GPUs."""
    plans = []
    for model, method, device, optimizer, gc, (gpus, sharding) in itertools.product(
        catalog.models(), ("full", "lora", "qlora"), ("cuda", "cpu"),
        ("adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"), (True, False),
        ((1, "ddp"), (4, "ddp"), (4, "zero3")),
    ):  # fmt: skip
        try:
            plans.append(Plan.from_dict({"model": model.id, "method": method, "device": device, "optimizer": optimizer,
                                         "gradient_checkpointing": gc, "num_gpus": gpus, "sharding": sharding,
                                         "seq_len": 1024, "allow_long_context": True}))  # fmt: skip
        except EstimatorError:
            continue
    return plans


def test_components_add_up_to_the_total_over_many_plans() -> None:
    """On CUDA ``sum(components) == total`` exactly, the allocator cache being ``peak_reserved - peak_allocated`` and
    paged optimizer state a component of its own; on the CPU ``sum(components) == peak_allocated == total``."""
    plans = _many_plans()
    assert len(plans) > 4000
    paged_seen = 0
    for plan in plans:
        try:
            mem = estimate(plan).memory
        except EstimatorError:
            continue
        comps = mem.components
        assert tuple(comps) == COMPONENTS
        assert min(comps.values()) >= 0, plan
        assert sum(comps.values()) == mem.total, plan
        assert comps["allocator_cache"] == mem.peak_reserved - mem.peak_allocated
        if plan.device == "cpu":
            assert mem.total == mem.peak_allocated == mem.peak_reserved
            assert comps["overhead"] == comps["allocator_cache"] == comps["optimizer_paged"] == 0
        if not plan.optimizer.startswith("paged") or plan.device == "cpu":
            assert comps["optimizer_paged"] == 0
        paged_seen += comps["optimizer_paged"] > 0
        tensor_peak = next(t.bytes for t in mem.terms if t.name == "tensor_peak")
        assert sum(comps[c] for c in LIVE) == tensor_peak == max(mem.phases.values())
    assert paged_seen > 100


def test_terms_that_are_parts_of_a_figure_add_up_to_it() -> None:
    """The head/loss terms add up to the ``logits`` component (at a forward or loss-backward peak), the CUDA context
    and cuBLAS workspace to ``overhead``; one-term components equal their term; names are unique."""
    seen_logits = 0
    for plan in _many_plans()[::5]:
        try:
            mem = estimate(plan).memory
        except EstimatorError:
            continue
        comps = mem.components
        names = [t.name for t in mem.terms]
        assert len(names) == len(set(names))
        parts = {c: sum(t.bytes for t in mem.terms if t.component == c) for c in COMPONENTS}
        for c in ("weights", "adapters", "optimizer", "overhead", "allocator_cache", "optimizer_paged"):
            assert parts[c] == comps[c], (c, plan)
        if mem.peak_phase in ("forward", "loss_backward"):
            assert parts["logits"] == comps["logits"] > 0
            seen_logits += 1
        else:
            assert comps["logits"] == 0 and parts["logits"] > 0  # the loss's own peak, not at the step's peak
        assert {t.name for t in mem.terms if t.component == ""} == {"tensor_peak"}
    assert seen_logits > 100


def test_one_logits_figure_behind_the_component_the_terms_and_the_note() -> None:
    """Llama 3.1 8B, QLoRA, 1 × 2048: the loss's backward holds the saved log-softmax and the two fp32 gradients of
    the cross-entropy backward, 12 B × b·s·V; the component, its terms, the allocator's cached fp32 block and the
    plain-language note are all that figure."""
    est = estimate(Plan(model="llama-3.1-8b", method="qlora", seq_len=2048))
    mem, n = est.memory, 2048 * 128_256
    assert mem.peak_phase == "loss_backward"
    terms = {t.name: t.bytes for t in mem.terms if t.component == "logits"}
    assert terms == {"log_softmax": 4 * n, "grad_log_softmax": 4 * n, "grad_logits": 4 * n}
    assert mem.components["logits"] == 12 * n
    assert mem.components["allocator_cache"] == 4 * n  # one fp32 b·s·V block (above the 512 MiB floor)
    assert any(f"cost {12 * n / 2**30:.2f} GiB at the peak" in note for note in est.to_dict()["notes"])


def _head(model: str, method: str) -> tuple[HeadLoss, int]:
    """The head/loss figure of ``model`` at 1 × 512, and its b·s·V."""
    plan = Plan(model=model, method=method, seq_len=512)  # type: ignore[arg-type]
    entry = catalog.find_model(model)
    assert entry is not None
    inv = build_inventory(parse_config(entry.config))
    return head_loss(inv.arch, plan, dtype_flow(inv, adapter_plan(inv, plan), plan)), 512 * inv.arch.vocab_size


def test_head_loss_parts() -> None:
    """fp32 logits need no upcast copy; Gemma 2's final-logit soft-capping keeps its tanh output in both phases."""
    qlora, n = _head("llama-3.1-8b", "qlora")  # lm_head in fp32 after prepare_model_for_kbit_training
    assert qlora.parts("forward") == {"logits": 4 * n, "logits_fp32": 0, "log_softmax": 4 * n, "softcap_output": 0}
    lora, n = _head("llama-3.1-8b", "lora")
    assert lora.bytes("forward") == 10 * n and lora.bytes("loss_backward") == 12 * n
    gemma, n = _head("gemma-2-9b", "lora")
    assert gemma.parts("loss_backward")["softcap_output"] == 2 * n
    assert gemma.bytes("loss_backward") == 14 * n and gemma.peak_phase == "loss_backward"


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_paged_optimizer_state_on_the_cpu_is_ordinary_memory(method: str) -> None:
    """bitsandbytes (0.50, ``Optimizer8bit.get_state_buffer``) falls back to non-paged state on the CPU: a paged
    optimizer there holds what its non-paged twin holds, in the allocated peak (its large states used to vanish)."""

    def run(optimizer: str, device: str = "cpu") -> Estimate:
        return estimate(Plan(model="qwen2.5-1.5b", method=method, optimizer=optimizer, device=device,  # type: ignore[arg-type]
                             seq_len=512))  # fmt: skip

    paged8, plain8 = run("paged_adamw_8bit").memory, run("adamw_8bit").memory
    assert paged8.components == plain8.components and paged8.total == plain8.total
    paged32 = run("paged_adamw_32bit")
    assert paged32.memory.components["optimizer"] == 8 * paged32.params()["trainable"]  # exp_avg + exp_avg_sq, fp32
    assert paged32.memory.components["optimizer_paged"] == 0
    assert paged32.memory.total == paged32.memory.peak_allocated == sum(paged32.memory.components.values())
    if method == "full":  # on CUDA the states of >= 1e5 elements are in managed memory
        assert run("paged_adamw_32bit", "cuda").memory.components["optimizer_paged"] > 0


def test_full_fine_tuning_mlp_backward_peak_holds_the_output_projections_gradients() -> None:
    """At a layer's MLP backward the output projection (weight and bias) has its gradients, by what it reads (the
    MLP's hidden activation), not by a width: GPT-2's c_proj, not c_fc's bias. The recorded CPU run of
    ``gpt2-full-gc`` measured exactly that (bench/results/accuracy_cpu.json)."""
    from trainer.accuracy import CPU_CASES

    recorded = json.loads((Path(__file__).resolve().parents[2] / "bench" / "results" / "accuracy_cpu.json").read_text())
    measured = next(c for c in recorded["cases"] if c["id"] == "gpt2-full-gc" and c["mode"] == "real")["measured"]
    mem = estimate(next(c for c in CPU_CASES if c.id == "gpt2-full-gc").make_plan()).memory
    assert mem.peak_phase == measured["peak_phase"] == "backward"
    assert mem.components["gradients"] == measured["components"]["gradients"]
    # GPT-2's tanh-GELU ends in a product: both factors' gradients at once, as a gated MLP's (-1.57 % with one)
    assert measured["peak_allocated"] <= mem.peak_allocated <= 1.01 * measured["peak_allocated"]


def test_attention_backward_peak_holds_every_mlp_lora_gradient_of_the_layer() -> None:
    """In the attention's backward (eager: b·a·s² probabilities) the MLP's LoRA gradients of the layer exist: all
    of them, Phi-3's fused gate_up_proj as well as down_proj (the width test missed the 2·i-wide gate_up_proj)."""
    est = estimate(Plan(model="phi-3-mini", method="lora", attn_implementation="eager", batch_size=2, seq_len=1024))
    mem, r = est.memory, est.plan.lora_r
    assert mem.peak_phase == "backward" and mem.phases["backward"] > mem.phases["loss_backward"]
    mlp = [a for a in est.adapters.adapted if a.reads in ("mlp_input", "mlp_hidden")]
    assert sorted(a.module.rsplit(".", 1)[-1] for a in mlp) == ["down_proj", "gate_up_proj"]
    assert mem.components["gradients"] == sum(4 * r * (a.in_features + a.out_features) for a in mlp)


LLAMA4_TINY = {
    "model_type": "llama4_text", "hidden_size": 256, "intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048, "max_position_embeddings": 512,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "intermediate_size_mlp": 512, "head_dim": 64,
    "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "attention_chunk_size": 256,
}  # fmt: skip
LLAMA4_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_llama4_nope_layers_are_read_as_transformers_reads_them() -> None:
    """Llama4TextConfig: ``no_rope_layers[i]`` is 1 where layer i uses rope; by default every fourth is NoPE."""
    assert parse_config(LLAMA4_TINY).nope_layers == (3,)
    assert parse_config(LLAMA4_TINY | {"no_rope_layer_interval": 2}).nope_layers == (1, 3)
    assert parse_config(LLAMA4_TINY | {"no_rope_layers": [1, 0, 1, 1]}).nope_layers == (1,)
    with pytest.raises(ConfigError, match="no_rope_layers must be a list of 0/1 flags"):
        parse_config(LLAMA4_TINY | {"no_rope_layers": [1, 2, 1, 1]})


def test_llama4_layers_save_what_a_real_forward_saves() -> None:
    """Bytes each decoder layer saves for backward in a real CPU forward of the tiny Llama 4 (QLoRA, fp32 stream, no
    checkpointing; ``torch.autograd.graph.saved_tensors_hooks`` over ``trainer.build``'s model, distinct storages
    by the layer that saved them first, 2026-12-02): the dense layer 2 9,953,280 B, the MoE layer 1 with rope
    12,070,912 B, the MoE layer 3 without rope (no qk-norm, no chunked mask, K/V not repeated) 10,224,640 B. The
    MoE layers' routing index tensors (10 KiB) are not counted."""
    plan = Plan.from_dict({"config": LLAMA4_TINY, "method": "qlora", "device": "cpu", "batch_size": 2, "seq_len": 256,
                           "target_modules": list(LLAMA4_TARGETS), "lora_dropout": 0.0, "padding": "none",
                           "gradient_checkpointing": False})  # fmt: skip
    inv = build_inventory(parse_config(LLAMA4_TINY))
    sizes = layer_sizes(inv.arch, plan, dtype_flow(inv, adapter_plan(inv, plan), plan))
    assert sizes[2] == 9_953_280
    assert sizes[1] - 12_070_912 == sizes[3] - 10_224_640 == 10_240


@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_llama4_backward_peaks_in_the_last_moe_layer_with_rope(method: str) -> None:
    """With checkpointing the tiny Llama 4's step peaks in layer 1's recompute (CPU grid: llama4-qlora-gc,
    llama4-lora-gc), not in its last layer, which has no rope: the moment holds two stored layer inputs and the two
    later layers' LoRA gradients, not four inputs."""
    plan = Plan.from_dict({"config": LLAMA4_TINY, "method": method, "device": "cpu", "batch_size": 2, "seq_len": 256,
                           "target_modules": list(LLAMA4_TARGETS), "lora_dropout": 0.0, "padding": "none"})  # fmt: skip
    inv = build_inventory(parse_config(LLAMA4_TINY))
    f = dtype_flow(inv, adapter_plan(inv, plan), plan)
    fwd = forward_activations(inv, adapter_plan(inv, plan), plan, f)
    assert fwd.last_largest == 1
    roped = LLAMA4_TINY | {"no_rope_layers": [1, 1, 1, 1]}
    plan = Plan.from_dict(plan.to_dict() | {"config": roped})
    inv = build_inventory(parse_config(roped))
    adapters = adapter_plan(inv, plan)
    assert forward_activations(inv, adapters, plan, dtype_flow(inv, adapters, plan)).last_largest == 3


def _tiny_fsdp(layers: int, strategy: str, method: str = "full") -> dict:
    """The trainer tests' tiny Llama (h 128, MLP 256, vocabulary 1024) over 2 FSDP2 ranks, as the gloo runs hold it."""
    config = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": layers,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 512,
              "tie_word_embeddings": False}  # fmt: skip
    dtype = "float32" if method == "full" else "bfloat16"
    return _mem(config=config, batch_size=2, seq_len=64, device="cpu", method=method, sharding="fsdp", num_gpus=2,
                fsdp_strategy=strategy, dtype=dtype, padding="none")  # fmt: skip


ROOT = 2 * 1024 * 128 * 4 + 128 * 4  # embeddings, lm_head, final norm (fp32), gathered: the root group
LAYER = (2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 256 + 2 * 128) * 4  # one decoder layer (fp32), gathered
HEAD_GRADS = 1024 * 128 * 4 + 128 * 4  # lm_head's and the final norm's gradients, unsharded until the end
DOWN_GRAD = 256 * 128 * 4  # the down projection's weight gradient: the layer's own at the MLP's backward


def test_fsdp_first_layer_backward_holds_the_root_grads_unsharded_and_a_pending_reduce_scatter() -> None:
    """2 layers, full fine-tuning: the peak is the first layer's MLP backward (the gloo ranks' live set): the root
    and the layer gathered (no prefetch below the first layer), the head's gradients unsharded, the last layer's
    gradients both as its pending reduce-scatter input (flat, unsharded) and as its reduced shard."""
    for strategy in ("full_shard", "shard_grad_op"):
        mem = _tiny_fsdp(2, strategy)
        assert mem["peak_phase"] == "backward"
        assert mem["per_rank"]["parts"]["gathered_at_peak"] == ROOT + LAYER
        assert mem["components"]["gradients"] == HEAD_GRADS + LAYER + LAYER // 2 + DOWN_GRAD


def test_fsdp_layers_between_the_ends_hold_a_prefetch_and_a_pending_reduce_scatter() -> None:
    """4 layers: the second layer's backward (full_shard: the layer and the first one prefetched, the third's
    reduce-scatter input pending, two reduced shards) and the next-to-last's (shard_grad_op: the first three
    gathered since the forward, the last one's input pending, one reduced shard) are above both ends."""
    fs = _tiny_fsdp(4, "full_shard")
    assert fs["per_rank"]["parts"]["gathered_at_peak"] == ROOT + 2 * LAYER
    assert fs["components"]["gradients"] == HEAD_GRADS + LAYER + 2 * (LAYER // 2) + DOWN_GRAD
    sgo = _tiny_fsdp(4, "shard_grad_op")
    assert sgo["per_rank"]["parts"]["gathered_at_peak"] == ROOT + 3 * LAYER
    assert sgo["components"]["gradients"] == HEAD_GRADS + LAYER + LAYER // 2 + DOWN_GRAD


def test_fsdp_first_layer_copy_out_still_holds_the_root_all_gather() -> None:
    """full_shard's forward peaks at the first layer's copy-out: the root gathered and its flat all-gather output
    (held by ``wait_for_unshard``'s local until it returns), the layer's output and parameters, the embedding
    output and the rotary cos/sin (the gloo ranks, exact less the batch's ids)."""
    mem = _tiny_fsdp(2, "full_shard")
    static = sum(mem["per_rank"]["parts"][k] for k in ("weights_shard", "optimizer_shard"))
    assert mem["phases"]["forward"] == static + 2 * ROOT + 2 * LAYER + 2 * 64 * 128 * 4 + 2 * 64 * 32 * 4


@pytest.mark.parametrize("strategy", ["full_shard", "shard_grad_op", "hybrid_shard"])
def test_fsdp_components_add_up_to_the_peak(strategy: str) -> None:
    for model, method, gc in itertools.product(
        ("llama-3.1-8b", "mixtral-8x7b"), ("full", "lora", "qlora"), (True, False)
    ):
        extra = {"shard_group_size": 4} if strategy == "hybrid_shard" else {}
        mem = _mem(model=model, method=method, sharding="fsdp", fsdp_strategy=strategy, num_gpus=8,
                   gradient_checkpointing=gc, quant_storage="bfloat16", **extra)  # fmt: skip
        comps = mem["components"]
        assert min(comps.values()) >= 0, (model, method, gc, comps)
        assert sum(comps.values()) == mem["total"]
        assert mem["peak_allocated"] == max(mem["phases"].values()) + CUBLAS_WORKSPACE_BYTES


def test_fsdp_offload_on_one_gpu_says_it_is_not_counted() -> None:
    """One GPU under FSDP is estimated as one GPU: its CPU offload moves nothing in the estimate, and a note says
    so rather than leaving the host figure silently without it."""
    one = estimate(Plan(model="llama-3.1-8b", method="full", sharding="fsdp", offload="params")).to_dict()
    assert one["memory"]["host"]["offload"] == 0
    assert any("FSDP on one GPU" in n and "not counted" in n for n in one["notes"])


def test_fsdp_cpu_offload_pins_each_shard_on_its_own() -> None:
    """FSDP2's CPUOffloadPolicy pins every parameter shard and every gradient shard as its own block, which torch's
    pinned allocator rounds up to a power of two; AdamW's state on the host is not pinned. A CPU plan pins nothing:
    its host figure is the bytes themselves, and the rounding adds at most as much again to the pinned part."""
    kw = {"model": "llama-3.1-8b", "method": "full", "sharding": "fsdp", "num_gpus": 8, "offload": "params"}
    gpu, cpu = _mem(**kw)["host"]["offload"], _mem(**kw, device="cpu")["host"]["offload"]
    states = 2 * 2 * 8_030_261_248 // 8  # AdamW's two bf16 states of the rank's shard, unpinned
    assert cpu < gpu < cpu + (cpu - states) and gpu > cpu * 1.02
