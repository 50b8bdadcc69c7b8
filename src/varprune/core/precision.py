"""Numeric precision of training and inference: fp32, or autocast to bf16 / fp16.

`train.precision`, `finetune.precision` and `evaluate.precision` take `auto`, `fp32`, `bf16` or
`fp16`. Autocast runs the matrix products and convolutions in the low-precision type and keeps
reductions, norms and the loss in fp32 (torch's op lists); the weights stay fp32, so a
checkpoint is the same file whatever precision trained it.

- `auto`: bf16 on a CUDA GPU that supports it (Ampere and newer), else fp16 on CUDA; fp32 on
  the CPU, so CPU results do not move unless bf16 is asked for.
- `bf16`: the exponent range of fp32, so no loss scaling; on CPUs with AVX512-BF16 or AMX it
  is the fast path, elsewhere it is emulated and slower than fp32.
- `fp16`: CUDA only, with a gradient scaler (its range is small); refused on the CPU.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ValueError):
    """A precision this device cannot run; the message says which and what to use instead."""


def resolve(precision: str, device: torch.device) -> str:
    """The concrete precision (`fp32`, `bf16` or `fp16`) that `precision` means on `device`."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionError("precision fp16 needs a CUDA GPU (on the CPU use bf16, or fp32)")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def needs_scaler(precision: str) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    return precision == "fp16"


def from_legacy(cfg: dict) -> str:
    """`precision` of a config slice, honouring the former `amp` flag: `amp: false` with precision
    `auto` (the default) means fp32, as it did; `amp: true` was fp16 on CUDA and fp32 on the CPU,
    which `auto` keeps on the CPU (on CUDA it now takes bf16 where the GPU has it)."""
    precision = str(cfg.get("precision") or "auto")
    if precision == "auto" and cfg.get("amp") is False:
        return "fp32"
    return precision
