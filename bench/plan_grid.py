"""Every catalog model × method × a grid of batch / sequence / checkpointing (and a few other switches), estimated
and written as JSON, so that a refactor can prove it changed no number.

    python -m bench.plan_grid --write /tmp/before.json        # on the old code
    python -m bench.plan_grid --compare /tmp/before.json      # on the new code: lists every plan whose JSON differs

``--ignore`` takes dotted keys left out of the comparison (keys a change adds on purpose, e.g.
``memory.components.allocator_cache``); a key present on one side only is reported unless ignored. Exit code 1 when
anything differs. The grid (about 4,000 plans) runs in under a minute on two cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

from estimator import EstimatorError, Plan, catalog, estimate

BATCHES = (1, 3, 8)
SEQ_LENS = (256, 2048, 8192)
GC = (True, False)
# (label, plan changes) on top of each model × method, at batch 2 × 1024 tokens
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("eager", {"attn_implementation": "eager"}),
    ("flash", {"attn_implementation": "flash_attention_2"}),
    ("dropout0", {"lora_dropout": 0.0}),
    ("fp16", {"dtype": "float16"}),
    ("fp32", {"dtype": "float32"}),
    ("cpu", {"device": "cpu"}),
    ("adamw8", {"optimizer": "adamw_8bit"}),
    ("paged8", {"optimizer": "paged_adamw_8bit"}),
    ("sgd", {"optimizer": "sgd"}),
    ("adafactor", {"optimizer": "adafactor"}),
    ("dora", {"use_dora": True}),
    ("r64-qv", {"lora_r": 64, "target_modules": ("q_proj", "v_proj")}),
    ("save-head", {"modules_to_save": ("lm_head",)}),
    ("int8", {"quant_type": "int8"}),
    ("fp4-nodq", {"quant_type": "fp4", "double_quant": False}),
    ("mixed", {"mixed_precision": True}),
    ("zero3x8", {"num_gpus": 8, "sharding": "zero3"}),
    ("zero2x4", {"num_gpus": 4, "sharding": "zero2"}),
    ("ddp2", {"num_gpus": 2}),
    ("gpu", {"gpu": "rtx-4090"}),
    ("gpu-h100", {"gpu": "h100-sxm", "batch_size": 4}),
)


def plans() -> Iterator[tuple[str, dict[str, Any]]]:
    for model in catalog.models():
        for method in ("full", "lora", "qlora"):
            base = {"model": model.id, "method": method, "allow_long_context": True}
            for b, s, gc in itertools.product(BATCHES, SEQ_LENS, GC):
                yield (
                    f"{model.id}/{method}/b{b}/s{s}/gc{int(gc)}",
                    base
                    | {
                        "batch_size": b,
                        "seq_len": s,
                        "gradient_checkpointing": gc,
                    },
                )
            for label, changes in VARIANTS:
                yield f"{model.id}/{method}/{label}", base | {"batch_size": 2, "seq_len": 1024} | changes


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, fields in plans():
        try:
            plan = Plan(**fields)
            out[key] = estimate(plan).to_dict()
        except EstimatorError as exc:
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def diff(a: Any, b: Any, path: str, ignore: set[str], found: list[str]) -> None:
    if path in ignore:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else str(k)
            if sub in ignore:
                continue
            if k not in a or k not in b:
                found.append(f"{sub}: only in {'new' if k not in a else 'old'}")
            else:
                diff(a[k], b[k], sub, ignore, found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff(x, y, f"{path}[{i}]" if not isinstance(x, dict) else path, ignore, found)
    elif a != b:
        found.append(f"{path}: {json.dumps(a)[:120]} -> {json.dumps(b)[:120]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", help="write every plan's JSON to FILE")
    group.add_argument("--compare", metavar="FILE", help="compare every plan's JSON with FILE")
    parser.add_argument("--ignore", action="append", default=[], help="dotted key to leave out (repeatable)")
    args = parser.parse_args(argv)
    results = run()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as fh:
            json.dump(results, fh, sort_keys=True)
        errors = sum(1 for r in results.values() if "error" in r)
        print(f"{len(results)} plans written to {args.write} ({errors} refused by the estimator)")
        return 0
    with open(args.compare, encoding="utf-8") as fh:
        before = json.load(fh)
    ignore = set(args.ignore)
    changed = 0
    for key in sorted(set(before) | set(results)):
        found: list[str] = []
        if key not in before or key not in results:
            found.append("plan only in " + ("new" if key not in before else "old"))
        else:
            diff(before[key], results[key], "", ignore, found)
        if found:
            changed += 1
            if changed <= 20:
                print(f"{key}:\n  " + "\n  ".join(found[:8]))
    print(f"{len(results)} plans compared: {changed} differ")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
