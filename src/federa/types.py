"""The few types every part of federa exchanges: a state of tensors, a client's orders and its reply.

They live here, apart from the modules that produce or consume them, so that methods,
clients, strategies and engines can share them without importing one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

State = dict[str, torch.Tensor]  # parameter name → tensor: what trains, hence what travels


@dataclass(frozen=True)
class TrainSettings:
    """What a strategy tells one client to do this round."""

    lr: float
    batch_size: int
    seed: int
    local_steps: int | None = None
    local_epochs: float | None = None
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0

    def num_steps(self, num_examples: int) -> int:
        if self.local_epochs is not None:
            return max(1, math.ceil(self.local_epochs * num_examples / self.batch_size))
        assert self.local_steps is not None
        return self.local_steps


@dataclass
class Update:
    """A client's reply: its new trainable state, the example count that weights it, metrics."""

    state: State
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
