"""Fed-SB's r×r matrix between LoRA's factors: ΔW = s·B·R·A with A and B fixed, only R trains.

Fed-SB (Singhal et al., arXiv 2502.15436, after LoRA-SB) inserts a trainable r×r matrix R between
B and A of every adapted module and freezes both factors, so each client trains and sends r²
numbers per module, and averaging R is exact: Σ p_k·B·R_k·A = B·(Σ p_k·R_k)·A. In the authors'
code (CERT-Lab/fed-sb, ``fed_sb/utils/initialization_utils.py`` and ``latent_utils.py``) R is a
``default_lora_latent_mapping`` Linear on the peft layer whose forward is patched to B(R(A x)).
Here R lives inside the A module instead (:class:`LatentA`, ``x ↦ R·(A·x)``), so peft's own
forward computes s·B·R·A unchanged and R's name, ``….lora_A.default.lora_R.weight``, travels like
any trainable tensor. R starts at the identity: on FeDeRA's factors the model then starts exactly
where FeDeRA starts (the authors' weight-SVD initialisation keeps W whole and starts R near 0;
FeDeRA keeps W − s·B0·A0 frozen, so R = I is the start that changes nothing).

A saved peft adapter has no place for R: :func:`merged` swaps each module for a plain Linear
holding R·A while the model is saved, which is the same update as a standard LoRA adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

R_NAME = "lora_R"  # the trainable r×r matrix's module name inside the A module


class LatentA(nn.Linear):
    """LoRA's A (``weight``, r×in) followed by the r×r matrix R: x ↦ R·(A·x)."""

    def __init__(self, a: nn.Linear) -> None:
        rank, fan_in = a.weight.shape
        super().__init__(fan_in, rank, bias=False, device=a.weight.device, dtype=a.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(a.weight)
        self.lora_R = nn.Linear(rank, rank, bias=False, device=a.weight.device, dtype=a.weight.dtype)
        with torch.no_grad():
            self.lora_R.weight.copy_(torch.eye(rank, dtype=a.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_R(super().forward(x))


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    import peft

    return [m for m in model.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]


def insert(model: nn.Module, cfg: object = None) -> nn.Module:
    """Put R = I between B and A of every LoRA layer of ``model`` (in place; the model computes
    exactly what it did). ``cfg``: the run's config (unused: Fed-SB has no settings)."""
    for layer in _lora_layers(model):
        for adapter, a in list(layer.lora_A.items()):
            if not isinstance(a, LatentA):
                layer.lora_A[adapter] = LatentA(a)
    return model


@contextmanager
def plain_a(model: nn.Module, kind: type[nn.Linear], factor: Callable[[nn.Linear], torch.Tensor]) -> Iterator[nn.Module]:
    """``model`` with every LoRA A module of class ``kind`` replaced by a plain frozen Linear holding
    ``factor(module) @ module.weight`` (a standard LoRA factor, what peft saves and loads), restored on exit."""
    swapped: list[tuple[nn.Module, str, nn.Linear]] = []
    for layer in _lora_layers(model):
        for adapter, special in list(layer.lora_A.items()):
            if isinstance(special, kind):
                plain = nn.Linear(special.in_features, special.out_features, bias=False,
                                  device=special.weight.device, dtype=special.weight.dtype)
                with torch.no_grad():
                    plain.weight.copy_(factor(special) @ special.weight)
                plain.weight.requires_grad_(False)
                layer.lora_A[adapter] = plain
                swapped.append((layer, adapter, special))
    try:
        yield model
    finally:
        for layer, adapter, special in swapped:
            layer.lora_A[adapter] = special


def merged(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """``model`` with every :class:`LatentA` holding R·A as a plain LoRA A, restored on exit."""
    return plain_a(model, LatentA, lambda latent: latent.lora_R.weight)
