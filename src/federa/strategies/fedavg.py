"""FedAvg (McMahan et al., 2017): the example-weighted mean of the clients' trainable states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from federa.strategies.base import Strategy, Updates
from federa.types import State

if TYPE_CHECKING:
    import torch


def weighted_average(states: Sequence[State], weights: Sequence[float]) -> State:
    """Σ wᵢ·stateᵢ / Σ wᵢ per tensor, accumulated in float64 and cast back to each tensor's dtype."""
    import torch

    if not states:
        raise ValueError("nothing to average: no client replied")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("client weights sum to zero")
    out: State = {}
    for name, ref in states[0].items():
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for s, w in zip(states, weights):
            acc += s[name].to(torch.float64) * (w / total)
        out[name] = acc.to(ref.dtype)
    return out


class FedAvg(Strategy):
    name = "fedavg"
    linear = True

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        return weighted_average([u.state for u in updates.values()], [u.num_examples for u in updates.values()])
