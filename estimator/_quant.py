"""Bytes of one weight tensor as bitsandbytes stores it.

Counted from ``bitsandbytes.functional.quantize_4bit`` / ``Int8Params`` (bitsandbytes 0.4x–0.50):

* 4-bit (NF4/FP4): packed ``uint8`` of ``ceil(numel / 2)`` bytes; per block of 64 an absmax. Without double
  quantization the absmax is fp32 (4 B a block, 4.5 bits a weight in all). With it (``compress_statistics``) the
  absmax is quantized to uint8 in blocks of 256 with an fp32 absmax each and an fp32 ``offset`` (≈ 4.127 bits a
  weight). Each quantized tensor also holds its own 16-entry fp32 ``code``; the 256-entry dynamic map of the
  second level is shared by all tensors and counted once.
* LLM.int8 (``Linear8bitLt``): int8 weights plus an fp32 scale per output row (``SCB``).

``alloc`` rounds each allocation to the CUDA caching allocator's 512-byte granularity when counting GPU memory.
Tests hold these sizes equal to the tensors bitsandbytes creates for a real model.
"""

from __future__ import annotations

BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
CODE_4BIT_BYTES = 16 * 4
DYNAMIC_MAP_BYTES = 256 * 4
CUDA_ALLOC_ROUND = 512

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def alloc(nbytes: int, cuda: bool) -> int:
    """Bytes one allocation takes: exact on CPU, rounded up to 512 B by the CUDA caching allocator."""
    if not cuda or nbytes == 0:
        return nbytes
    return -(-nbytes // CUDA_ALLOC_ROUND) * CUDA_ALLOC_ROUND


def four_bit_parts(numel: int, double_quant: bool) -> tuple[int, ...]:
    """The separate allocations of one 4-bit weight: packed data, absmax, [absmax2, offset], code."""
    blocks = -(-numel // BLOCKSIZE)
    packed = -(-numel // 2)
    if double_quant:
        nested = -(-blocks // NESTED_BLOCKSIZE)
        return (packed, blocks, 4 * nested, 4, CODE_4BIT_BYTES)
    return (packed, 4 * blocks, CODE_4BIT_BYTES)


def four_bit_bytes(numel: int, double_quant: bool, cuda: bool = False) -> int:
    return sum(alloc(p, cuda) for p in four_bit_parts(numel, double_quant))


def int8_parts(out_features: int, in_features: int) -> tuple[int, ...]:
    return (out_features * in_features, 4 * out_features)


def int8_bytes(out_features: int, in_features: int, cuda: bool = False) -> int:
    return sum(alloc(p, cuda) for p in int8_parts(out_features, in_features))


def bits_per_weight(quant_type: str, double_quant: bool) -> float:
    """Asymptotic storage cost of a large quantized matrix, in bits per weight."""
    if quant_type == "int8":
        return 8.0
    per_block = 4 * BLOCKSIZE + (8 + 32 / NESTED_BLOCKSIZE if double_quant else 32)
    return per_block / BLOCKSIZE
