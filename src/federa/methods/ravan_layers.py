"""RAVAN's heads: ΔW = Σ_i s_i·B_i·H_i·A_i with every B_i, A_i frozen and only H_i (r_h×r_h) and s_i training.

RAVAN (Raje et al., NeurIPS 2025, arXiv 2506.05568) splits the adapter into h heads. Written as one
LoRA, B = [B_1 | … | B_h] and A = [A_1; …; A_h] (rank r = h·r_h, ``lora.r`` and ``ravan.heads``), and the
heads are a block-diagonal matrix between them: ΔW = s_lora·B·diag(s_1·H_1, …, s_h·H_h)·A. As for Fed-SB
(:mod:`federa.methods.latent`) the blocks sit inside the A module (:class:`HeadsA`, x ↦ blocks·(A·x)), so
peft's forward is unchanged; the trainables are ``….lora_A.default.lora_H.<i>`` and ``….lora_s.<i>``.

Start: with FeDeRA's factors, head i holds singular directions i·r_h … (i+1)·r_h − 1, H_i = I and s_i = 1,
so the model starts where FeDeRA starts. With LoRA's factors B = 0 would freeze every head, so B is drawn
like peft draws A (Kaiming-uniform, a = √5, from the seeded stream every party shares) and H_i = 0, so the
model starts at the pretrained one, as in FedLLM-Factory's ``alg/ravan.py`` (random B_i, A_i; H_i = 0, s_i = 1).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch
from torch import nn

from federa.methods.latent import _lora_layers, plain_a


class HeadsA(nn.Linear):
    """LoRA's A (``weight``, r×in) followed by diag(s_1·H_1, …, s_h·H_h)."""

    def __init__(self, a: nn.Linear, heads: int, identity: bool) -> None:
        rank, fan_in = a.weight.shape
        size = rank // heads
        kw = {"device": a.weight.device, "dtype": a.weight.dtype}
        super().__init__(fan_in, rank, bias=False, **kw)
        with torch.no_grad():
            self.weight.copy_(a.weight)
        start = torch.eye(size, **kw) if identity else torch.zeros(size, size, **kw)
        self.lora_H = nn.ParameterList([nn.Parameter(start.clone()) for _ in range(heads)])
        self.lora_s = nn.ParameterList([nn.Parameter(torch.ones(1, **kw)) for _ in range(heads)])

    def blocks(self) -> torch.Tensor:
        """diag(s_1·H_1, …, s_h·H_h), r×r."""
        return torch.block_diag(*(s * h for s, h in zip(self.lora_s, self.lora_H)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(super().forward(x), self.blocks())


def insert(model: nn.Module, cfg) -> nn.Module:
    """Split every LoRA layer of ``model`` into ``cfg.ravan.heads`` heads (in place; the model computes
    exactly what it did)."""
    heads = cfg.ravan.heads
    for layer in _lora_layers(model):
        for adapter, a in list(layer.lora_A.items()):
            if isinstance(a, HeadsA):
                continue
            b = layer.lora_B[adapter].weight
            zero_b = not bool(b.detach().any())
            if zero_b:  # LoRA's start: B = 0 would leave every head without gradient
                with torch.no_grad():
                    nn.init.kaiming_uniform_(b, a=math.sqrt(5))
            layer.lora_A[adapter] = HeadsA(a, heads, identity=not zero_b)
    return model


def merged(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """``model`` with every :class:`HeadsA` holding blocks·A as a plain LoRA A (a standard LoRA
    factor), restored on exit."""
    return plain_a(model, HeadsA, lambda heads: heads.blocks())
