"""The bottleneck adapter's layers (:mod:`federa.methods.adapter`), apart from its settings so that
reading a config does not import torch."""

from __future__ import annotations

import torch
from torch import nn

from federa.methods.targets import TargetLayer, layer_shape


class Bottleneck(nn.Module):
    """The residual bottleneck MLP ``h + up(gelu(down(h)))``; the identity until ``up`` trains."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width)  # PyTorch's default (Kaiming-uniform) init
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(nn.functional.gelu(self.down(h)))


class AdaptedLinear(nn.Module):
    """A frozen Linear followed by a trainable :class:`Bottleneck` (peft-style ``base_layer``)."""

    def __init__(self, base_layer: TargetLayer, width: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = Bottleneck(layer_shape(base_layer)[0], width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(x))
