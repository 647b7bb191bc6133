"""Coordinate-wise trimmed mean (Yin et al., 2018): drop the k largest and k smallest values per
coordinate, average the rest, with k = floor(trim_fraction · clients).

Unweighted like :mod:`federa.strategies.median`. It tolerates up to k Byzantine clients per
coordinate while averaging away more noise than the median does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

from federa.settings import Section
from federa.strategies.base import Strategy, Updates
from federa.types import State

if TYPE_CHECKING:
    import torch


def trimmed_mean(states: Sequence[State], trim_fraction: float) -> State:
    import torch

    if not states:
        raise ValueError("nothing to aggregate: no client replied")
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    n = len(states)
    k = math.floor(trim_fraction * n)  # < n/2, so at least one value survives per coordinate
    out: State = {}
    for name, ref in states[0].items():
        stacked = torch.stack([s[name].to(torch.float64) for s in states]).sort(dim=0).values
        out[name] = stacked[k:n - k].mean(dim=0).to(ref.dtype)
    return out


class TrimmedMeanSettings(Section):
    trim_fraction: float = Field(0.1, ge=0, lt=0.5, description="Fraction of values cut on each side per coordinate.")


class TrimmedMean(Strategy):
    name = "trimmed_mean"
    settings = TrimmedMeanSettings

    def __init__(self, clients_per_round: int, seed: int, trim_fraction: float = 0.1) -> None:
        super().__init__(clients_per_round, seed)
        self.trim_fraction = trim_fraction

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        return trimmed_mean([u.state for u in updates.values()], self.trim_fraction)
