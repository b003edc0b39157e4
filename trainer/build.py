"""Build the model, adapters and optimizer a plan describes, with random weights and no download.

The model is built on the ``meta`` device from its config, then materialized one module at a time on the target
device: each module's tensors are allocated, initialised with the model's own ``_init_weights`` and, for QLoRA,
the linears are quantized right away (``bnb.nn.Params4bit(...).to(device)``), so the 16-bit copy of one linear
at a time is all that ever exists. A 70B QLoRA therefore never needs the 16-bit model in memory. The linears
that are quantized are the ones transformers' own loader picks (``replace_with_bnb_linear`` with
``get_keys_to_not_convert``), and the pipeline after loading is the stock one::

    qlora: quantized load -> prepare_model_for_kbit_training (when plan.upcast_non_quantized) -> get_peft_model
    lora:  16-bit load -> gradient checkpointing -> get_peft_model
    full:  plan.dtype load (fp32 for mixed_precision, with torch.autocast at run time) -> gradient checkpointing

``loader="pretrained"`` takes the ordinary route instead (a random checkpoint written with ``save_pretrained``
and read back with ``from_pretrained(quantization_config=BitsAndBytesConfig(...))``): for tiny models, to check
that the direct route builds the same thing.

Optimizers (plan.optimizer, named as transformers' ``TrainingArguments.optim``):
``adamw_torch`` torch.optim.AdamW (torch's default foreach choice); ``adamw_8bit`` / ``paged_adamw_8bit`` /
``paged_adamw_32bit`` bitsandbytes.optim (paged ones need CUDA and raise on CPU, no fallback);
``sgd`` torch.optim.SGD exactly as the Trainer builds it (lr only, so momentum 0 and *no* optimizer state);
``adafactor`` transformers.optimization.Adafactor(scale_parameter=False, relative_step=False, lr).
``trust_remote_code`` is never used.

Loss (plan.loss): ``standard`` is the model's own forward with ``labels`` (transformers' ``ForCausalLMLoss``);
``chunked`` adds TRL's fused LM head to the base model exactly as ``trl.SFTTrainer`` does
(``trl.trainer.utils.add_fused_lm_head(..., outputs=("log_probs", "entropy", "is_top1"))``), and a step calls the
model with ``fused_lm_head=True``: TRL's ``ChunkedLogProbFunction`` scores the tokens tile by tile, so the
``b x s x V`` logits never exist whole (its torch fallback runs on the CPU, its Triton kernel on CUDA).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from estimator import Plan, attention_implementation, checkpoint_tie, legacy_config

LEARNING_RATE = 1e-4
DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
GC_KWARGS: dict[str, Any] = {"use_reentrant": False}


def stack_module(name: str) -> Any:
    """Import a training-stack module untyped: transformers / peft / bitsandbytes ship partial annotations that
    would make every call site an error, and the shapes of their objects are checked by the tests instead."""
    return importlib.import_module(name)


@contextlib.contextmanager
def compile_on_first_call() -> Iterator[None]:
    """Inside it, ``torch.compile(fn, **kwargs)`` returns ``fn`` wrapped to be compiled, with the same arguments, on
    its first call: what runs is unchanged, only when it is compiled.

    bitsandbytes wraps its CPU kernels in ``torch.compile`` as it is imported (``backends/default/ops.py``,
    ``_try_torch_compile``), and ``torch.compile`` imports torch's compiler stack (``torch._inductor`` and networkx,
    578 modules, 1.7–2 s of a traced estimate on 2 cores) the moment it is called, whether or not a kernel ever runs.
    A traced step never runs them (their fake implementations run under FakeTensorMode), so there nothing is
    compiled and nothing of the compiler is imported; where one does run, it is compiled then, and a failure to
    compile still falls back to the plain kernel (bitsandbytes catches it around the call)."""
    compile_now = torch.compile

    def compile_later(model: Any = None, **kwargs: Any) -> Any:
        if model is None:  # used as @torch.compile(**kwargs)
            return lambda fn: compile_later(fn, **kwargs)
        compiled: Any = None

        @functools.wraps(model)
        def call(*args: Any, **kw: Any) -> Any:
            nonlocal compiled
            if compiled is None:
                compiled = compile_now(model, **kwargs)
            return compiled(*args, **kw)

        return call

    torch.compile = compile_later
    try:
        yield
    finally:
        torch.compile = compile_now


def import_bitsandbytes() -> None:
    """Import bitsandbytes, if installed, with its CPU kernels compiled on first call (``compile_on_first_call``):
    before transformers or PEFT import it, in a process that traces."""
    if "bitsandbytes" in sys.modules:
        return
    with compile_on_first_call(), contextlib.suppress(ImportError):
        importlib.import_module("bitsandbytes")


class BuildError(RuntimeError):
    """The plan cannot be built on this device / stack (e.g. a paged optimizer without CUDA)."""


@dataclass
class Built:
    """Everything a run needs, plus the tensors to pre-register with the tracker."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lm_head: nn.Module | None
    autocast_dtype: torch.dtype | None
    trainable: list[nn.Parameter] = field(default_factory=list)
    params_total: int = 0
    params_trainable: int = 0
    vocab_size: int = 0
    kept: dict[str, Any] = field(default_factory=dict)
    """What the training loop keeps between steps: a plain loop's ``out`` (its logits) until the next forward."""


# ---------------------------------------------------------------------------------------------------- config


def make_config(config: Mapping[str, Any], plan: Plan) -> Any:
    """The transformers config object a run builds its model from (``config_object``), without a KV cache; with
    one label for reward modelling (TRL's RewardTrainer: the model's only output is the reward score)."""
    cfg = config_object(config, **({"num_labels": 1} if plan.objective == "reward" else {}))
    cfg.use_cache = False
    return cfg


def config_object(config: Mapping[str, Any], **overrides: Any) -> Any:
    """The transformers config object of the model ``from_pretrained`` loads for the checkpoint ``config`` (a
    config.json dict) describes, from the dict alone (no remote code, no download): a legacy config read as
    transformers 5 reads it (``legacy_config``: RefinedWebModel / RefinedWeb as falcon), the code pointers and
    provenance keys dropped (``auto_map``, ``_name_or_path``, ``transformers_version``), ``overrides`` applied and
    the tie set to the one the checkpoint has (``tie_as_loaded``). ``BuildError`` for a model_type transformers does
    not know (one only a repo's own code defines)."""
    transformers = stack_module("transformers")
    data = legacy_config(config)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise BuildError("the config has no model_type")
    if not isinstance(model_type, str) or model_type not in transformers.CONFIG_MAPPING:
        raise BuildError(f"model_type {model_type!r} is not one transformers {transformers.__version__} knows")
    for key in ("transformers_version", "_name_or_path", "auto_map"):
        data.pop(key, None)
    cfg = transformers.AutoConfig.for_model(model_type, **data, **overrides)
    tie_as_loaded(config, cfg)
    return cfg


def tie_as_loaded(config: Mapping[str, Any], cfg: Any) -> None:
    """Set ``cfg``'s tie to the one ``from_pretrained`` loads for the checkpoint ``config`` describes
    (``estimator.checkpoint_tie``, with the config classes' own defaults): a composite config transformers 4 wrote
    without the flag, over a text config that does not tie, has its own lm_head."""
    text = cfg.get_text_config(decoder=True)
    composite, own = getattr(cfg, "tie_word_embeddings", None), getattr(text, "tie_word_embeddings", None)
    if text is not cfg and isinstance(composite, bool) and isinstance(own, bool):
        cfg.tie_word_embeddings = checkpoint_tie(config, composite, own)


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def base_dtype(plan: Plan) -> torch.dtype:
    """Dtype of the base weights as loaded (before any prepare_model_for_kbit_training upcast)."""
    if plan.method == "full" and plan.mixed_precision:
        return torch.float32
    return torch_dtype(plan.dtype)


def bnb_config(plan: Plan) -> Any:
    BitsAndBytesConfig = stack_module("transformers").BitsAndBytesConfig

    if plan.quant_type == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=plan.quant_type,
        bnb_4bit_use_double_quant=plan.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(plan.dtype),
        bnb_4bit_quant_storage=torch.uint8 if plan.quant_storage == "uint8" else torch_dtype(plan.quant_storage),
    )


# ---------------------------------------------------------------------------------------------------- model


TEXT_ONLY_CAUSAL = ("mllama",)
"""Vision-language model types whose causal-LM class is the language model alone (``MllamaForCausalLM``: no tower,
no projector, no images): the image-text-to-text class is built, as for every other VLM."""


def model_class(cfg: Any, objective: str = "sft") -> Any:
    """The auto class that builds the trainable model: the causal LM, or for a vision-language model type (which
    has none) the image-text-to-text one (``Qwen2VLForConditionalGeneration``: its LM head and loss are the same);
    for ``objective`` "reward" the sequence-classification model TRL's ``RewardTrainer`` loads
    (``AutoModelForSequenceClassification``: the backbone and a one-logit ``score`` linear, no lm_head)."""
    transformers = stack_module("transformers")
    auto = transformers.models.auto.modeling_auto
    if objective == "reward":
        if cfg.model_type not in auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
            raise BuildError(f"transformers has no sequence-classification model for {cfg.model_type!r}")
        return transformers.AutoModelForSequenceClassification
    causal = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if cfg.model_type in causal and cfg.model_type not in TEXT_ONLY_CAUSAL:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForImageTextToText


def text_vocab_size(cfg: Any) -> int:
    """The language model's vocabulary (a multimodal config keeps it in its text config)."""
    return int(cfg.get_text_config().vocab_size)


def meta_model(cfg: Any, plan: Plan) -> Any:
    """The model on the meta device; for QLoRA with its linears already swapped for bitsandbytes layers."""
    auto = model_class(cfg, plan.objective)

    with torch.device("meta"):
        model = auto.from_config(
            cfg,
            dtype=base_dtype(plan),
            attn_implementation=attention_implementation(cfg.model_type, plan.attn_implementation),
        )
    if plan.method == "qlora":
        replace_with_bnb_linear = stack_module("transformers.integrations.bitsandbytes").replace_with_bnb_linear
        get_keys_to_not_convert = stack_module("transformers.quantizers.base").get_keys_to_not_convert
        qcfg = bnb_config(plan)
        with torch.device("meta"):  # the bitsandbytes layers too: nothing is allocated or initialised here
            model = replace_with_bnb_linear(
                model, modules_to_not_convert=get_keys_to_not_convert(model), quantization_config=qcfg
            )
        # What from_pretrained sets on a bnb-loaded model; prepare_model_for_kbit_training and PEFT read it.
        if plan.quant_type == "int8":
            model.is_loaded_in_8bit = True
        else:
            model.is_loaded_in_4bit = True
        model.config.quantization_config = qcfg
    return model


def _init_std(model: nn.Module) -> float:
    cfg = getattr(model, "config", None)
    for name in ("initializer_range", "init_std"):
        value = getattr(cfg, name, None)
        if isinstance(value, float) and value > 0:
            return value
    return 0.02


def _is_bnb_layer(module: nn.Module) -> bool:
    try:
        bnb = stack_module("bitsandbytes")
    except ImportError:  # pragma: no cover - bitsandbytes is part of the train extra
        return False
    return isinstance(module, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt)


def materialize(
    model: Any, device: torch.device | str, *, fake: bool = False, upcast: bool = False, init: bool = True
) -> None:
    """Allocate every meta tensor on ``device`` one module at a time (quantizing bitsandbytes layers at once).

    Tied parameters stay tied (one new tensor per distinct meta tensor). ``fake``: under an active
    ``FakeTensorMode`` (the traced dry run): bnb weights become a plain uint8 ``Parameter`` carrying the
    ``quant_state`` that ``bnb.functional.quantize_4bit`` returns under fake mode. ``upcast``: make 16-bit
    non-quantized *parameters* fp32, as ``prepare_model_for_kbit_training`` does (used when PEFT was applied on
    meta, i.e. before the prepare step could run). ``init``: run the model's ``_init_weights`` (rotary buffers,
    norms = 1, normal weights); skipped for fake tensors, whose values do not exist.
    """
    device = torch.device(device)
    std = _init_std(model)
    init_fn = getattr(model, "_init_weights", None)
    if not callable(init_fn) and hasattr(model, "get_base_model"):
        init_fn = getattr(model.get_base_model(), "_init_weights", None)
    # id(meta tensor) -> (meta tensor, its replacement). Holding the meta tensor keeps its id from being reused
    # by another object while the walk goes on, so a tie is only ever found where one exists.
    done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    inits = _sub_model_inits(model)
    for module in model.modules():
        fresh = False
        bnb_layer = _is_bnb_layer(module)
        for name, p in list(module._parameters.items()):
            if p is None or not p.is_meta:
                continue
            if id(p) in done:
                module._parameters[name] = done[id(p)][1]
                continue
            if bnb_layer and name == "weight":
                new = _quantized_weight(module, p, device, fake=fake, init=init, std=std)
            else:
                dtype = p.dtype
                if bnb_layer and name == "bias":
                    dtype = getattr(module, "compute_dtype", None) or dtype
                if upcast and dtype in (torch.float16, torch.bfloat16):
                    dtype = torch.float32
                new = nn.Parameter(torch.empty(p.shape, dtype=dtype, device=device), requires_grad=p.requires_grad)
                if bnb_layer and init and not fake:
                    with torch.no_grad():
                        new.zero_()
                fresh = True
            done[id(p)] = (p, new)
            module._parameters[name] = new
        for name, b in list(module._buffers.items()):
            if b is None or not b.is_meta:
                continue
            if id(b) not in done:
                done[id(b)] = (b, torch.empty(b.shape, dtype=b.dtype, device=device))
                fresh = True
            module._buffers[name] = done[id(b)][1]
        own_init = inits.get(id(module), init_fn)
        if fresh and init and not fake and not bnb_layer and callable(own_init):
            with torch.no_grad():
                own_init(module)


def _sub_model_inits(model: Any) -> dict[int, Any]:
    """id(module) -> the ``_init_weights`` of the innermost ``PreTrainedModel`` holding it, as transformers'
    ``initialize_weights`` dispatches (``smart_apply``): a composite model's sub-models (Gemma 3's SigLIP tower)
    initialise their own modules, e.g. the position ids buffer of ``SiglipVisionEmbeddings``."""
    transformers = stack_module("transformers")
    out: dict[int, Any] = {}
    for sub in model.modules():  # parents before children: the innermost sub-model's init wins
        if isinstance(sub, transformers.PreTrainedModel):
            for module in sub.modules():
                out[id(module)] = sub._init_weights
    return out


def _quantized_weight(
    module: Any, meta_weight: Any, device: torch.device, *, fake: bool, init: bool, std: float
) -> Any:
    bnb = stack_module("bitsandbytes")

    out_features, in_features = module.out_features, module.in_features
    if isinstance(module, bnb.nn.Linear8bitLt):
        if fake:
            raise BuildError("the traced dry run supports 4-bit QLoRA (nf4/fp4), not int8")
        w = torch.empty((out_features, in_features), dtype=torch.float16, device=device)
        if init:
            w.normal_(0.0, std)
        return bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False).to(device)
    compute = module.compute_dtype or torch.bfloat16
    w = torch.empty((out_features, in_features), dtype=compute, device=device)
    old = meta_weight
    if fake:
        q, qs = bnb.functional.quantize_4bit(
            w,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            quant_storage=old.quant_storage,
        )
        param: Any = nn.Parameter(q, requires_grad=False)
        param.quant_state = qs
        return param
    if init:
        w.normal_(0.0, std)
    param4: torch.Tensor = bnb.nn.Params4bit(
        w,
        requires_grad=False,
        blocksize=old.blocksize,
        compress_statistics=old.compress_statistics,
        quant_type=old.quant_type,
        quant_storage=old.quant_storage,
        module=module,
    ).to(device)
    del w
    return param4


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # gradient_checkpointing_enable is a deprecated alias in transformers 5 but the only name in older 5.x
        warnings.simplefilter("ignore", FutureWarning)
        yield


def enable_gc(model: Any) -> None:
    with _quiet():
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(GC_KWARGS))


def lora_config(plan: Plan) -> Any:
    """PEFT's config for the plan. A reward model's task type is ``SEQ_CLS``: PEFT then adds ``classifier`` and
    ``score`` to ``modules_to_save`` (a trainable copy of the score head) and leaves the head out of
    ``all-linear`` (``PeftModelForSequenceClassification``, ``_maybe_include_all_linear_layers``)."""
    LoraConfig = stack_module("peft").LoraConfig

    target: Any = plan.target_modules if plan.target_modules == "all-linear" else list(plan.target_modules)
    return LoraConfig(
        r=plan.lora_r,
        lora_alpha=plan.lora_alpha,
        lora_dropout=plan.lora_dropout,
        target_modules=target,
        modules_to_save=list(plan.modules_to_save) or None,
        use_dora=plan.use_dora,
        task_type="SEQ_CLS" if plan.objective == "reward" else "CAUSAL_LM",
    )


def _pretrained_model(cfg: Any, plan: Plan, device: torch.device) -> Any:
    """The ordinary route (tiny models only): random checkpoint -> from_pretrained with the bnb config."""
    auto = model_class(cfg, plan.objective)

    with tempfile.TemporaryDirectory(prefix="tuneplan-ckpt-") as tmp:
        torch.manual_seed(0)
        auto.from_config(cfg, dtype=base_dtype(plan)).save_pretrained(tmp)
        kwargs: dict[str, Any] = {}
        if plan.method == "qlora":
            kwargs["quantization_config"] = bnb_config(plan)
        return auto.from_pretrained(
            tmp,
            dtype=base_dtype(plan),
            attn_implementation=attention_implementation(cfg.model_type, plan.attn_implementation),
            device_map={"": str(device)},
            use_safetensors=True,
            **kwargs,
        )


def build_model(config: Mapping[str, Any], plan: Plan, device: torch.device | str, *, loader: str = "direct") -> Any:
    """The trainable model for ``plan`` on ``device`` (PEFT-wrapped for lora/qlora), in train mode."""
    device = torch.device(device)
    cfg = make_config(config, plan)
    model: Any
    if loader == "direct":
        model = meta_model(cfg, plan)
        materialize(model, device)
    elif loader == "pretrained":
        model = _pretrained_model(cfg, plan, device)
    else:
        raise BuildError(f"unknown loader {loader!r}")
    model.config.use_cache = False
    if plan.method == "qlora":
        if plan.upcast_non_quantized:
            prepare_model_for_kbit_training = stack_module("peft").prepare_model_for_kbit_training
            with _quiet():
                model = prepare_model_for_kbit_training(
                    model,
                    use_gradient_checkpointing=plan.gradient_checkpointing,
                    gradient_checkpointing_kwargs=dict(GC_KWARGS),
                )
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            if plan.gradient_checkpointing:
                enable_gc(model)
    elif plan.gradient_checkpointing:
        enable_gc(model)
    if plan.adapters:
        get_peft_model = stack_module("peft").get_peft_model
        if plan.method == "lora":
            for p in model.parameters():
                p.requires_grad_(False)
        model = get_peft_model(model, lora_config(plan))
    add_chunked_loss(model, plan)
    model.train()
    return model


# What trl.SFTTrainer asks of its fused LM head (sft_trainer.py, SFTTrainer.__init__: add_fused_lm_head(...)).
SFT_FUSED_OUTPUTS = ("log_probs", "entropy", "is_top1")


def add_chunked_loss(model: Any, plan: Plan) -> None:
    """``plan.loss == "chunked"``: TRL's fused LM head on the base model, as ``SFTTrainer`` adds it."""
    if plan.loss != "chunked":
        return
    try:
        add_fused_lm_head = stack_module("trl.trainer.utils").add_fused_lm_head
    except ImportError as exc:  # pragma: no cover - trl is part of the train extra
        raise BuildError("loss 'chunked' runs TRL's fused LM head: pip install trl") from exc
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    add_fused_lm_head(base, outputs=SFT_FUSED_OUTPUTS)


def output_embeddings(model: Any) -> nn.Module | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get = getattr(base, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Module) else None


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters, de-duplicating tied ones; a 4-bit weight counts its logical size."""
    total = trainable = 0
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        n = math.prod(qs.shape) if qs is not None and getattr(qs, "shape", None) is not None else p.numel()
        if type(p).__name__ == "Int8Params":
            n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


def make_optimizer(
    params: list[nn.Parameter], plan: Plan, device: torch.device | str, *, foreach: bool | None = None
) -> torch.optim.Optimizer:
    """The optimizer plan.optimizer names, configured as transformers' Trainer configures it."""
    device = torch.device(device)
    name = plan.optimizer
    if not params:
        raise BuildError("nothing to train: the plan leaves no trainable parameter")
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=LEARNING_RATE, foreach=foreach)
    if name == "sgd":
        # The Trainer passes only lr: plain SGD, momentum 0, so no state at all.
        return torch.optim.SGD(params, lr=LEARNING_RATE, foreach=foreach)
    if name == "adafactor":
        Adafactor = stack_module("transformers.optimization").Adafactor
        adafactor: torch.optim.Optimizer = Adafactor(
            params, lr=LEARNING_RATE, scale_parameter=False, relative_step=False
        )
        return adafactor
    if name.startswith("paged_") and device.type != "cuda":
        raise BuildError(f"optimizer {name} pages its state through CUDA unified memory and needs a CUDA device")
    bnb = stack_module("bitsandbytes")
    optimizer: torch.optim.Optimizer
    if name == "adamw_8bit":
        optimizer = bnb.optim.AdamW(params, lr=LEARNING_RATE, optim_bits=8, is_paged=False)
    elif name == "paged_adamw_8bit":
        optimizer = bnb.optim.AdamW(params, lr=LEARNING_RATE, optim_bits=8, is_paged=True)
    elif name == "paged_adamw_32bit":
        optimizer = bnb.optim.AdamW(params, lr=LEARNING_RATE, optim_bits=32, is_paged=True)
    else:
        raise BuildError(f"unknown optimizer {name!r}")
    return optimizer


def build(config: Mapping[str, Any], plan: Plan, device: torch.device | str, *, loader: str = "direct") -> Built:
    """Model + optimizer for a real run."""
    model = build_model(config, plan, device, loader=loader)
    return assemble(model, plan, device, text_vocab_size(make_config(config, plan)))


def assemble(
    model: Any, plan: Plan, device: torch.device | str, vocab_size: int, *, foreach: bool | None = None
) -> Built:
    """The optimizer over the model's trainable parameters, and the counts a run reports (real and traced runs)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, plan, device, foreach=foreach)
    total, n_trainable = count_params(model)
    autocast = torch_dtype(plan.dtype) if plan.method == "full" and plan.mixed_precision else None
    return Built(
        model=model,
        optimizer=optimizer,
        lm_head=output_embeddings(model),
        autocast_dtype=autocast,
        trainable=trainable,
        params_total=total,
        params_trainable=n_trainable,
        vocab_size=vocab_size,
    )


def quant_state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The bitsandbytes quantization-state tensors (absmax, code, offset, nested absmax/code, int8 SCB)."""
    out: list[torch.Tensor] = []
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        while qs is not None:
            for attr in ("absmax", "code", "offset"):
                t = getattr(qs, attr, None)
                if isinstance(t, torch.Tensor):
                    out.append(t)
            qs = getattr(qs, "state2", None)
        for attr in ("SCB", "CB"):
            t = p.__dict__.get(attr)
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                out.append(value)
    return out
