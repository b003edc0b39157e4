"""Preference and RL objectives run by TRL's own trainers: the step's loss is the trainer's ``compute_loss``.

For ``objective`` other than ``sft`` the run builds TRL's trainer around the model ``trainer.build`` made (its
adapters, quantization and gradient checkpointing as the plan says): ``DPOTrainer`` for ``dpo`` (with a frozen
reference copy for full fine-tuning unless ``precompute_ref_log_probs``; with LoRA/QLoRA TRL disables the adapters
for the reference forward). The batch is the trainer's own collator applied to seeded random token ids: each row
``seq_len`` tokens, the first half the prompt, chosen and rejected the rest (``padded``: the last rejected one token
short); ``KTOTrainer`` for ``kto`` (the same ids unpaired, each with its neighbour's completion as the KL
completion); ``RewardTrainer`` for ``reward`` (the sequence-classification model ``trainer.build`` made, prompt +
chosen and prompt + rejected as its two rows); ``GRPOTrainer`` for ``grpo`` (generation, then the loss). The
optimizer stays the run's (torch AdamW, as the Trainer makes it); the tokenizer is a word-level one over the model's
vocabulary, built here (nothing is downloaded).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from estimator import Plan

from .build import GC_KWARGS, BuildError, build_model, stack_module

Phase = Callable[[str], contextlib.AbstractContextManager[None]]
"""Marks a block of the step as a phase of its own (``train_step``'s tracker and CUDA probe phases)."""

SUPPORTED = ("sft", "dpo", "orpo", "simpo", "kto", "reward", "grpo")
"""Objectives the real run reproduces with TRL's trainers (the others are estimated from TRL's code only)."""


@dataclass
class Objective:
    """The step's loss and batch as TRL's trainer makes them, and the reference model it holds."""

    loss: Callable[[dict[str, torch.Tensor], Phase], torch.Tensor]
    """The step's loss from its batch; ``Phase`` marks a part of it as a phase of its own (GRPO's generation)."""
    batch: dict[str, torch.Tensor]
    reference: list[torch.Tensor] = field(default_factory=list)
    trainer: Any = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # TRL's trainers warn about settings that do not apply to a step driven by hand (tokenizer padding side,
        # deprecated Trainer aliases); none changes what is allocated
        warnings.simplefilter("ignore")
        yield


def tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer whose ids are the model's vocabulary (t0 pad, t1 bos, t2 eos): ``"t5 t17"`` is
    ``[5, 17]``. The special tokens match whole words only: as plain added tokens they would also match inside
    words (``t102413`` would be ``t1`` and an unknown ``02413``), and a GRPO prompt of ``seq_len`` words would be
    longer than ``seq_len`` tokens."""
    tok = stack_module("tokenizers")
    vocab = {f"t{i}": i for i in range(vocab_size)}
    words = tok.Tokenizer(tok.models.WordLevel(vocab, unk_token="t0"))
    words.pre_tokenizer = tok.pre_tokenizers.WhitespaceSplit()
    fast = stack_module("transformers").PreTrainedTokenizerFast

    def special(word: str) -> Any:
        return tok.AddedToken(word, single_word=True, special=True)

    return fast(tokenizer_object=words, pad_token=special("t0"), bos_token=special("t1"), eos_token=special("t2"))


def preference_examples(plan: Plan, vocab_size: int, seed: int) -> list[dict[str, list[int]]]:
    """``batch_size`` pairs of seeded ids: prompt = the first half of ``seq_len``, chosen and rejected the rest."""
    gen = torch.Generator().manual_seed(seed)
    prompt, completion = plan.seq_len // 2, plan.seq_len - plan.seq_len // 2

    def ids(n: int) -> list[int]:
        return [int(x) for x in torch.randint(3, vocab_size, (n,), generator=gen)]

    out = [{"prompt_ids": ids(prompt), "chosen_ids": ids(completion), "rejected_ids": ids(completion)}
           for _ in range(plan.batch_size)]  # fmt: skip
    if plan.padding == "padded":
        out[-1]["rejected_ids"] = out[-1]["rejected_ids"][:-1]
    return out


def _reference(config: Mapping[str, Any], plan: Plan, device: torch.device) -> Any:
    """The frozen reference copy TRL loads for full fine-tuning: the same model, dtype and quantization."""
    ref = build_model(config, plan, device)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _common_args(plan: Plan, device: torch.device, name: str) -> dict[str, Any]:
    """Config fields every TRL trainer gets here: the plan's batch, no mixed precision switch, no logging or saving,
    and gradient checkpointing left as ``trainer.build`` set it (the trainer must not change it)."""
    return dict(
        output_dir=tempfile.mkdtemp(prefix=f"tuneplan-{name}-"), per_device_train_batch_size=plan.batch_size,
        report_to=[], use_cpu=device.type == "cpu", bf16=False, fp16=False, gradient_checkpointing=False,
        gradient_checkpointing_kwargs=dict(GC_KWARGS), logging_steps=10**6, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip


def _references(model: Any, ref: Any) -> list[torch.Tensor]:
    """The reference's tensors: the frozen copy, or the "ref" adapter TRL adds to a PEFT model it is handed."""
    if ref is not None:
        return [*ref.parameters(), *ref.buffers()]
    return [p for n, p in model.named_parameters() if ".ref." in n]


def _preference(
    kind: str, model: Any, config: Mapping[str, Any], plan: Plan, device: torch.device, vocab: int, seed: int
) -> Objective:
    """TRL's ``DPOTrainer`` (``kind`` "dpo") or ``KTOTrainer`` ("kto") around ``model``: its collator's batch, its
    ``compute_loss``. KTO's examples are unpaired (label alternating), each with the next example's completion as
    its KL completion, as TRL's dataset preparation makes them."""
    Dataset, trl = stack_module("datasets").Dataset, stack_module("trl")
    ref = _reference(config, plan, device) if plan.method == "full" and plan.holds_reference else None
    pairs = preference_examples(plan, vocab, seed)
    if kind == "dpo":
        Config, Trainer = trl.DPOConfig, trl.DPOTrainer
        data = Dataset.from_dict({"prompt": ["t5 t6"], "chosen": ["t7"], "rejected": ["t8"]})
        examples: list[dict[str, Any]] = pairs
    else:
        Config, Trainer = trl.KTOConfig, trl.KTOTrainer
        data = Dataset.from_dict({"prompt": ["t5 t6", "t5"], "completion": ["t7", "t8"], "label": [True, False]})
        examples = [{"prompt_ids": e["prompt_ids"], "completion_ids": e["chosen_ids"],
                     "KL_completion_ids": pairs[(i + 1) % len(pairs)]["chosen_ids"], "label": i % 2 == 0}
                    for i, e in enumerate(pairs)]  # fmt: skip
    with _quiet():
        args = Config(**_common_args(plan, device, kind), precompute_ref_log_probs=False)
        trainer = Trainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tokenizer(vocab))
    batch = {k: v.to(device) for k, v in trainer.data_collator(examples).items() if isinstance(v, torch.Tensor)}
    if plan.precompute_ref_log_probs:  # the reference log-probs come with the batch, as the precomputed dataset has
        keys = ("ref_chosen_logps", "ref_rejected_logps") if kind == "dpo" else ("ref_logps", "ref_KL_logps")
        batch |= {k: torch.zeros(plan.batch_size, device=device) for k in keys}
        trainer.precompute_ref_logps = True

    def loss(b: dict[str, torch.Tensor], _phase: Phase) -> torch.Tensor:
        with _quiet():
            out: torch.Tensor = trainer.compute_loss(model, b)
        return out

    return Objective(loss=loss, batch=batch, reference=_references(model, ref), trainer=trainer)


def _odds_ratio(kind: str, model: Any, plan: Plan, device: torch.device, vocab: int, seed: int) -> Objective:
    """TRL's experimental ``ORPOTrainer`` (``kind`` "orpo") or ``CPOTrainer`` with SimPO's loss ("simpo":
    ``loss_type="simpo"``, ``cpo_alpha=0``) around ``model``: no reference model; each pair's text tokenized by the
    trainer's own ``tokenize_row`` and padded by its collator, the loss its ``compute_loss`` (chosen and rejected in
    one concatenated forward)."""
    Dataset = stack_module("datasets").Dataset
    with _quiet():  # trl.experimental warns on its first import that its API may change
        mod = stack_module("trl.experimental.orpo" if kind == "orpo" else "trl.experimental.cpo")
    if kind == "orpo":
        Config, Trainer, extra = mod.ORPOConfig, mod.ORPOTrainer, {}
    else:
        Config, Trainer, extra = mod.CPOConfig, mod.CPOTrainer, {"loss_type": "simpo", "cpo_alpha": 0.0}
    data = Dataset.from_dict({"prompt": ["t5 t6"], "chosen": ["t7"], "rejected": ["t8"]})
    limit = {"max_length": plan.seq_len + 8}
    with _quiet():
        args = Config(**_common_args(plan, device, kind), **limit, **extra)
        trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer(vocab))

    def text(ids: list[int]) -> str:
        return " ".join(f"t{i}" for i in ids)

    # the trainer adds bos to the prompt and eos to each answer: one token short each, the rows are seq_len long as
    # in the other objectives; it tokenizes prompt + answer as one string, so an answer starts with a space
    pairs = preference_examples(plan, vocab, seed)
    rows = [{"prompt": text(e["prompt_ids"][1:]), "chosen": " " + text(e["chosen_ids"][:-1]),
             "rejected": " " + text(e["rejected_ids"][:-1])} for e in pairs]  # fmt: skip
    with _quiet():
        examples = [trainer.tokenize_row(r) for r in rows]
        batch = {k: v.to(device) for k, v in trainer.data_collator(examples).items() if isinstance(v, torch.Tensor)}
    batch["input_ids"] = batch["chosen_input_ids"]  # the step reads the device from it (the same tensor)

    def loss(b: dict[str, torch.Tensor], _phase: Phase) -> torch.Tensor:
        with _quiet():
            out: torch.Tensor = trainer.compute_loss(model, {k: v for k, v in b.items() if k != "input_ids"})
        return out

    return Objective(loss=loss, batch=batch, reference=[], trainer=trainer)


def reward(model: Any, plan: Plan, device: torch.device, vocab: int, seed: int) -> Objective:
    """TRL's ``RewardTrainer`` around ``model`` (``AutoModelForSequenceClassification`` with one label, PEFT's
    ``SEQ_CLS`` task for LoRA/QLoRA): each pair as the trainer's processed dataset holds it (``chosen_ids`` = prompt
    + chosen, ``rejected_ids`` = prompt + rejected, ``seq_len`` tokens each), padded by its
    ``DataCollatorForPreference`` into one batch of 2 × ``batch_size`` rows (chosen first, with an attention mask),
    the loss its ``compute_loss``: one forward, the score of each row's last non-pad token, ``-logsigmoid(chosen -
    rejected)``. The trainer sets the model's ``pad_token_id`` to the tokenizer's (t0) for that pooling and, for a
    quantized model, casts the trainable parameters to bf16."""
    if plan.upcast_non_quantized:
        raise BuildError(
            "reward with QLoRA after prepare_model_for_kbit_training cannot run without bf16 autocast: the final norm "
            "is fp32 and TRL casts the score head's trainable copy to bf16 (a dtype mismatch in its matmul); TRL's "
            "reward script does not prepare the model: set prepare_kbit false"
        )
    Dataset, trl = stack_module("datasets").Dataset, stack_module("trl")
    data = Dataset.from_dict({"chosen_ids": [[5, 7]], "rejected_ids": [[5, 8]]})
    with _quiet():
        args = trl.RewardConfig(**_common_args(plan, device, "reward"))
        trainer = trl.RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer(vocab))
    pairs = preference_examples(plan, vocab, seed)
    examples = [{"chosen_ids": e["prompt_ids"] + e["chosen_ids"], "rejected_ids": e["prompt_ids"] + e["rejected_ids"]}
                for e in pairs]  # fmt: skip
    batch = {k: v.to(device) for k, v in trainer.data_collator(examples).items() if isinstance(v, torch.Tensor)}

    def loss(b: dict[str, torch.Tensor], _phase: Phase) -> torch.Tensor:
        with _quiet():  # compute_loss adds use_cache to the dict it is given: a copy, the batch stays as it is
            out: torch.Tensor = trainer.compute_loss(model, dict(b))
        return out

    return Objective(loss=loss, batch=batch, reference=[], trainer=trainer)


def grpo(model: Any, config: Mapping[str, Any], plan: Plan, device: torch.device, vocab: int, seed: int) -> Objective:
    """TRL's ``GRPOTrainer`` around ``model``: each step generates the generation batch with transformers'
    ``generate`` (``_prepare_inputs``: ``batch_size × grad_accum_steps`` completions, ``num_generations`` per
    prompt, exactly ``max_completion_length`` tokens each: ``min_new_tokens`` keeps a random model from stopping
    early), scores them, then runs the trainer's ``compute_loss`` (the reference forward when ``beta > 0``)."""
    Dataset, trl = stack_module("datasets").Dataset, stack_module("trl")
    GRPOConfig, GRPOTrainer = trl.GRPOConfig, trl.GRPOTrainer

    ref = _reference(config, plan, device) if plan.method == "full" and plan.holds_reference else None
    gen = torch.Generator().manual_seed(seed)
    prompts_n = plan.batch_size * plan.grad_accum_steps // plan.num_generations
    prompts = [" ".join(f"t{int(i)}" for i in torch.randint(3, vocab, (plan.seq_len,), generator=gen))
               for _ in range(prompts_n)]  # fmt: skip

    def reward(completions: list[Any], **_: Any) -> list[float]:
        return [float(i % 2) for i in range(len(completions))]

    with _quiet():
        args = GRPOConfig(
            **_common_args(plan, device, "grpo"),
            gradient_accumulation_steps=plan.grad_accum_steps,
            num_generations=plan.num_generations,
            max_completion_length=plan.max_completion_length,
            beta=plan.beta,
            generation_kwargs={"min_new_tokens": plan.max_completion_length},
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer(vocab),
        )
    if ref is not None:
        trainer.ref_model = ref
    # generate with a KV cache, as a checkpoint loaded with from_pretrained does: its generation_config takes
    # use_cache from config.json (true); the run's config was built with use_cache false (nothing is cached in
    # training), which generate would otherwise follow, recomputing the whole sequence for every new token
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.generation_config.use_cache = True
    examples = [{"prompt": p} for p in prompts for _ in range(plan.num_generations)]
    trainer.current_gradient_accumulation_steps = plan.grad_accum_steps  # set by Trainer.train each step

    def loss(_: dict[str, torch.Tensor], phase: Phase) -> torch.Tensor:
        with _quiet():
            trainer.model.train()
            with phase("generation"):  # the completions, their rewards and the reference's log-probs
                inputs = trainer._prepare_inputs(examples)
            out: torch.Tensor = trainer.compute_loss(model, inputs)
        return out

    reference = _references(model, ref)
    batch = {"input_ids": torch.empty(0, dtype=torch.long, device=device)}  # the step makes its own
    return Objective(loss=loss, batch=batch, reference=reference, trainer=trainer)


def objective(
    model: Any, config: Mapping[str, Any], plan: Plan, device: torch.device, vocab: int, seed: int
) -> Objective | None:
    """The objective's loss and batch (None for ``sft``: the model's own loss on the run's batch)."""
    if plan.objective == "sft":
        return None
    if plan.objective in ("dpo", "kto"):
        return _preference(plan.objective, model, config, plan, device, vocab, seed)
    if plan.objective == "grpo":
        return grpo(model, config, plan, device, vocab, seed)
    if plan.objective in ("orpo", "simpo"):
        return _odds_ratio(plan.objective, model, plan, device, vocab, seed)
    if plan.objective == "reward":
        return reward(model, plan, device, vocab, seed)
    raise BuildError(
        f"objective {plan.objective!r} has no real run yet (the runs reproduce: {', '.join(SUPPORTED)}); "
        "its estimate is derived from TRL's code"
    )
