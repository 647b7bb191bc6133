"""Coordinate-wise median (Yin et al., 2018): each coordinate is the median of the clients' values.

Unweighted by example counts, on purpose: a weight is something a client reports, and a robust
rule must not let one client buy influence by claiming many examples. With fewer than half
the clients Byzantine, every coordinate stays within the range of the honest clients' values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from federa.strategies.base import Strategy, Updates
from federa.types import State

if TYPE_CHECKING:
    import torch


def coordinate_median(states: Sequence[State]) -> State:
    """Per-coordinate median in float64; with an even count, the mean of the two middle values."""
    import torch

    if not states:
        raise ValueError("nothing to aggregate: no client replied")
    out: State = {}
    for name, ref in states[0].items():
        # Sort rather than torch.quantile, which refuses inputs over 2**24 elements (FFT's
        # embedding matrix × clients); torch.median would return the lower middle value only.
        ordered = torch.stack([s[name].to(torch.float64) for s in states]).sort(dim=0).values
        n = len(states)
        out[name] = ((ordered[(n - 1) // 2] + ordered[n // 2]) / 2).to(ref.dtype)
    return out


class Median(Strategy):
    name = "median"

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        return coordinate_median([u.state for u in updates.values()])
