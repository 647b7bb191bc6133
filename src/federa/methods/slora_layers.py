"""SLoRA's stage-1 pieces that need torch at import: the masked-weight parametrisation and the mask
arithmetic (apart from :mod:`federa.methods.slora`, so selecting the method stays torch-free)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from federa.methods.targets import layer_shape


class SparseDelta(nn.Module):
    """A weight parametrisation W0 + δ where δ is nonzero only at fixed ``index`` (flat, in the
    weight's stored layout): only ``delta`` (one value per index) trains, so every other entry
    stays W0 bit for bit."""

    def __init__(self, index: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("index", index.to(torch.long), persistent=False)
        self.delta = nn.Parameter(torch.zeros(index.numel(), dtype=dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(-1).index_add(0, self.index, self.delta.to(weight.dtype)).view_as(weight)


def draw_mask(numel: int, density: float, seed: int) -> torch.Tensor:
    """round(density·numel) (at least one) distinct flat indices, sorted, as int32; a pure function of ``seed``."""
    k = max(1, round(density * numel))
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(numel, generator=g)[:k].sort().values.to(torch.int32)


def stored_index(mask: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``mask`` (flat indices into the (out x in) map) as indices into the stored weight: Conv1D stores (in x out)."""
    if not isinstance(layer, Conv1D):
        return mask.to(torch.long)
    out_f, in_f = layer_shape(layer)
    m = mask.to(torch.long)
    return (m % in_f) * out_f + m // in_f


def sparse_update(mask: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The dense (out x in) ΔW whose entries at ``mask`` are ``values`` and zero elsewhere."""
    flat = torch.zeros(shape[0] * shape[1], dtype=values.dtype)
    flat[mask.to(torch.long)] = values.detach().cpu()
    return flat.view(shape)
