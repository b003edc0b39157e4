"""What a training objective adds to the step, as TRL 1.16's trainers allocate it.

Preference and RL objectives change the step in three places: the rows of the forward (``_shape``: chosen and
rejected as two rows of one concatenated forward, GRPO's prompt + completion), the head (TRL's fused LM head, which
scores per-token log-probs in tiles, for ``dpo``, ``kto`` and ``grpo``; the experimental CPO/ORPO trainers' full
logits for ``orpo`` and ``simpo``), and what else is held: a frozen reference model and its forward, GRPO's
generation (a KV cache over the generation batch) or vLLM's share of the GPU.
Sources: ``trl/trainer/dpo_trainer.py`` (``_compute_loss``), ``kto_trainer.py``, ``grpo_trainer.py``
(``_generate_single_turn``, ``_get_per_token_logps_and_entropies``), ``trl/experimental/cpo``, ``.../orpo``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._arch import Architecture
from ._inventory import HEAD_INPUT, LINEAR, Inventory, Tensor
from ._plan import Plan

FUSED_HEAD_OBJECTIVES: tuple[str, ...] = ("dpo", "kto", "grpo")
"""Objectives whose trainer runs ``add_fused_lm_head`` (``model(..., fused_lm_head=True)``): no b·s·V logits."""


DROPOUT_DISABLED_OBJECTIVES: tuple[str, ...] = ("dpo", "kto", "orpo", "simpo", "reward")
"""Objectives whose TRL trainer sets every dropout of the model to 0 by default (``disable_dropout=True`` in
``DPOConfig``, ``KTOConfig``, ``RewardConfig`` and the experimental ``ORPOConfig``/``CPOConfig``:
``disable_dropout_in_model``); GRPO's default is False. LoRA's dropout then returns its input: no dropped-out copy
and no mask (measured on the CPU grid: reward LoRA with lora_dropout 0.05 allocates exactly what 0 does)."""


def lora_dropout_active(plan: Plan) -> bool:
    """Whether LoRA's dropout runs in the step: a non-zero ``lora_dropout`` that the objective's trainer keeps."""
    return plan.adapters and plan.lora_dropout > 0 and plan.objective not in DROPOUT_DISABLED_OBJECTIVES


def fused_head(plan: Plan) -> bool:
    """Whether the step's head is TRL's fused, chunked log-prob head (``loss: chunked``, or an objective whose
    trainer always patches it in)."""
    return plan.loss == "chunked" or plan.objective in FUSED_HEAD_OBJECTIVES


def objective_inventory(inv: Inventory, plan: Plan) -> Inventory:
    """The model the objective trains: a reward model is ``AutoModelForSequenceClassification`` (TRL's
    ``RewardTrainer``, ``num_labels=1``): the same backbone with a bias-free ``score`` linear of one output in place
    of lm_head (tied or not). Other objectives train the causal LM as it is."""
    if plan.objective != "reward":
        return inv
    kept = tuple(t for t in inv if t.role != "lm_head")
    score = Tensor("score.weight", (1, inv.arch.hidden_size), "lm_head", "score", LINEAR, False, 1, HEAD_INPUT)
    return Inventory(inv.arch, (*kept, score))


def reference_copy(plan: Plan) -> bool:
    """Whether a second, frozen copy of the model is held: full fine-tuning with an objective that compares with a
    reference (DPO and KTO unless ``precompute_ref_log_probs``, GRPO with ``beta > 0``). With LoRA/QLoRA TRL runs
    the reference as the same model with its adapters disabled (``use_adapter(model, None)``): no copy. TRL loads
    the copy with the policy's dtype and quantization config (``create_model_from_path``)."""
    return plan.method == "full" and plan.holds_reference


def reference_forward(plan: Plan) -> bool:
    """Whether the step runs a reference forward (under ``torch.no_grad``) between the policy's forward and its
    backward: a held copy, or the adapters disabled."""
    return plan.holds_reference


@dataclass(frozen=True)
class Generation:
    """GRPO's generation with transformers' ``generate`` on the training GPU, at its largest moment."""

    rows: int  # completions generated at once (the generation batch on one GPU)
    kv_cache: int  # every layer's K and V over prompt + completion
    work: int  # the largest transient: the decode step's logits and sampling, or the prefill's layer temporaries

    @property
    def bytes(self) -> int:
        return self.kv_cache + self.work


def kv_width(arch: Architecture) -> int:
    """Elements of K plus V per token and layer in transformers' cache: KV heads × head dim (each), or under MLA
    the expanded per-head keys (nope + rope) and values."""
    if arch.mla:
        return arch.num_attention_heads * (arch.attn_head_dim + arch.v_head_dim)
    return 2 * arch.num_key_value_heads * arch.head_dim


def generation(arch: Architecture, plan: Plan, ad: int, ld: int, ab: int = 4) -> Generation | None:
    """GRPO's generation phase when transformers generates (``vllm_mode: none``; None otherwise).

    TRL generates the whole generation batch of one GPU at once: ``per_device_train_batch_size ×
    steps_per_generation`` completions (``steps_per_generation`` defaults to ``gradient_accumulation_steps``), each
    up to ``max_completion_length`` tokens after the prompt. Held: transformers' ``DynamicCache`` (K and V of every
    layer, ``ad`` bytes: the stream's dtype) over prompt + completion, plus one layer's K or V copy as ``torch.cat``
    grows it. Transient: the larger of a decode step's logits (``logits_to_keep=1``: rows × V in the head's dtype,
    the fp32 copy ``generate`` takes, the softmax probabilities) and the prefill's over the prompt: the embedding
    output, the two residual sums and the norm's output (four b·s·h in the stream's dtype), the rotary cos and sin
    cast to it, and the MLP's: without adapters its three intermediates; with LoRA on it (``ab``: the adapters'
    dtype) the activation's output, the base projection's output, LoRA's b·s·i output and its scaled copy, and the
    fp32 cast of the layer's input (an upper bound where the MLP is not adapted). No gradients exist then
    (``zero_grad(set_to_none=True)``). Measured on the CPU grid's GRPO runs, their generation a phase of its own:
    the prefill's transient is exact to the byte; held beside the whole KV cache (at the prefill the cache holds the
    prompt only) the phase is an upper bound, +2.2 % (LoRA, 64 + 64 tokens) and +17 % (QLoRA, 64 + 192 tokens).
    Before the trainer generated with a KV cache (its config had ``use_cache`` false, which ``generate`` follows)
    the run measured a cache-less generation 16-46 % above this. Sliding-window layers are counted at the full
    length (an upper bound).
    """
    if plan.objective != "grpo" or plan.vllm_mode != "none":
        return None
    rows = plan.batch_size * plan.grad_accum_steps
    length = plan.seq_len + plan.max_completion_length
    per_token_layer = kv_width(arch) * ad
    kv = rows * length * per_token_layer * arch.num_hidden_layers + rows * length * per_token_layer // 2
    decode = rows * arch.vocab_size * (ld + 4 + 4)
    width = max(arch.intermediate_size, arch.moe_intermediate_size * max(arch.num_experts_per_tok, 1))
    h, prompt = arch.hidden_size, rows * plan.seq_len
    mlp = (2 * ad + 2 * ab) * width + ab * h if plan.adapters else 3 * ad * width
    prefill = prompt * (4 * ad * h + mlp + 2 * arch.head_dim * ad)
    return Generation(rows=rows, kv_cache=kv, work=max(decode, prefill))


def vllm_reserved(plan: Plan, device_bytes: int | None) -> int:
    """vLLM in colocate mode: the share of the GPU's memory it reserves in the training process
    (``vllm_gpu_memory_utilization`` × the device's total memory, for its weights and KV cache), outside torch's
    allocator. 0 for other modes, or when the plan names no GPU (``device_bytes`` None)."""
    if plan.objective != "grpo" or plan.vllm_mode != "colocate" or device_bytes is None:
        return 0
    return int(plan.vllm_gpu_memory_utilization * device_bytes)


def objective_notes(plan: Plan) -> list[str]:
    """What the objective's model counts and leaves out, in words."""
    o = plan.objective
    if o == "sft":
        return []
    notes = [f"objective {o}: modelled on TRL 1.16's trainer"]
    if plan.pairs:
        notes.append(f"chosen and rejected run as one forward of {plan.rows} rows (2 × batch_size)")
    if plan.adapters and plan.lora_dropout > 0 and o in DROPOUT_DISABLED_OBJECTIVES:
        notes.append(f"lora_dropout is not counted: TRL's {o} trainer disables dropout by default (disable_dropout)")
    if reference_copy(plan):
        notes.append("a frozen copy of the model is held as the reference (memory.components.reference)")
    elif reference_forward(plan):
        notes.append(
            "the reference is this model with TRL's frozen 'ref' copy of the adapter (or, when TRL wraps the model "
            "from peft_config, with the adapters disabled): a no-grad forward, no copy of the model"
        )
    if o in ("orpo", "simpo"):
        notes.append("ORPO/SimPO (TRL's experimental CPO/ORPO trainers) make full logits; derived from the code")
    if o == "grpo":
        if plan.vllm_mode == "colocate":
            notes.append("vLLM colocate: its share of the GPU (vllm_gpu_memory_utilization) is added to the total")
        elif plan.vllm_mode == "server":
            notes.append("vLLM server: generation runs on other GPUs; this GPU holds none of it")
        else:
            notes.append("generation with transformers' generate: its KV cache is the 'generation' phase")
    if o == "reward":
        notes.append("reward: the sequence-classification score head (one logit) replaces lm_head: no b·s·V logits")
        if plan.adapters:
            notes.append("reward: PEFT's SEQ_CLS task keeps a trainable copy of the score head (modules_to_save)")
        if plan.upcast_non_quantized:
            notes.append(
                "reward with QLoRA after prepare_model_for_kbit_training needs bf16 autocast: the fp32 final norm "
                "feeds TRL's bf16 copy of the score head; TRL's reward script does not prepare the model "
                "(prepare_kbit false)"
            )
    return notes
