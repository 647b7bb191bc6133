"""Mixed precision: one autocast context and one gradient scaler for training and evaluation.

Weights, optimiser state and everything that travels stay float32; only the forward and
backward passes run in bf16/fp16 under ``torch.autocast``. fp16's narrow range needs a gradient
scaler (loss scaled up before backward, gradients unscaled before clipping, steps with inf/NaN
gradients skipped); bf16 has float32's range and needs none. fp32 makes both no-ops.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
